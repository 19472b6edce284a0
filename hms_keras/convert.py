"""Bring checkpoints of the original PyTorch v5 code into this package's v5 model.

The original (bilzard/kaggle-hms-public, `HmsModel1d`, config `v5_eeg_24ep_cutmix`) saves
`{"checkpoint": state_dict, "epoch": ..., "loss": ...}` with `torch.save`. `convert_v5_state_dict`
places every tensor of such a state_dict into `models.build_v5_eeg_model()`:

    original module (PyTorch, NCHW)                              Keras variable
    eeg_encoder.stem_conv.conv.0.weight (64, 2, 1, 3)            encoder_stem_conv/kernel (1, 3, 2, 64)
    eeg_encoder.efficient_net.<b>.layer.0.<i>.inv_res.<j>        encoder_block<b>_ir<i>_{pw1,dw,se,pw2}
    eeg_encoder.efficient_net.<b>.layer.0.3.conv.<j>             encoder_block<b>_mixer_{dw,se,pw}
    eeg_feature_processor.similarity_encoder.similarity_encoder  fusion_sim_{conv,bn,prelu}
    eeg_feature_processor.pool.p                                 fusion_gem/p
    head.mlp.{0,1,2,3}                                           head_{dense1,bn,prelu,dense2}

Layouts: a PyTorch conv weight is `(out, in / groups, kh, kw)`; a Keras Conv2D kernel is
`(kh, kw, in, out)`, a 1x1 conv here is a `PointwiseDense` kernel `(in, out)`, and a grouped conv
with `groups = in` is a depthwise kernel `(kh, kw, in, multiplier)` whose output channel
`c * multiplier + m` is PyTorch's output channel of the same number. Batch norm's weight, bias,
running mean and running variance become gamma, beta, moving mean and moving variance (both
frameworks normalise with the running variance as stored, eps 1e-5); `num_batches_tracked` is
not used. Every other entry is used exactly once.

Reading `.pth` files needs torch (`pip install "hms_keras[torch]"`); it is imported only here.
"""

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np

from hms_keras import runs
from hms_keras.models.eeg_dual import BLOCK_KERNEL_SIZES, LAYERS_PER_BLOCK, build_v5_eeg_model
from hms_keras.recipe import Recipe

IGNORED_SUFFIX = ".num_batches_tracked"  # a batch-norm step counter; Keras keeps none


class CheckpointError(ValueError):
    """An original checkpoint that does not fit the v5 model; the message names the file or key."""


def load_original_state_dict(path) -> dict[str, np.ndarray]:
    """The state_dict of an original checkpoint file as float32/int64 numpy arrays.

    path: a `.pth` file holding `{"checkpoint": state_dict, ...}` (what the original's trainer
    saves) or a bare state_dict. Loaded on the CPU with `weights_only=True` (no code runs).
    """
    path = Path(path)
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading PyTorch checkpoints needs torch; install it with pip install \"hms_keras[torch]\""
        ) from None
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds (pickle, zip, runtime) for a bad file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    state_dict = loaded.get("checkpoint", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: expected a state_dict or {{'checkpoint': state_dict}}, found {type(loaded)}")
    return {key: value.detach().cpu().numpy() for key, value in state_dict.items()}


# --- how one original module's tensors become Keras variables ------------------------------
# A layout change takes the original tensor and the Keras variable's shape.

Layout = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


def conv_to_conv2d(weight: np.ndarray, shape) -> np.ndarray:
    """(out, in, kh, kw) -> (kh, kw, in, out)."""
    return weight.transpose(2, 3, 1, 0)


def conv1x1_to_dense(weight: np.ndarray, shape) -> np.ndarray:
    """(out, in, 1, 1) -> (in, out)."""
    return weight[:, :, 0, 0].T


def grouped_conv_to_depthwise(weight: np.ndarray, shape) -> np.ndarray:
    """(channels * multiplier, 1, kh, kw) -> (kh, kw, channels, multiplier); output channel
    c * multiplier + m in both."""
    kernel_h, kernel_w, channels, multiplier = shape
    return weight[:, 0].reshape(channels, multiplier, kernel_h, kernel_w).transpose(2, 3, 0, 1)


def linear_to_dense(weight: np.ndarray, shape) -> np.ndarray:
    """(out, in) -> (in, out)."""
    return weight.T


def same_values(value: np.ndarray, shape) -> np.ndarray:
    """Vectors unchanged; a one-element tensor (GeM p, a shared PReLU slope) to the Keras shape."""
    return value.reshape(shape) if value.size == 1 == int(np.prod(shape)) else value


BATCH_NORM = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
              ("running_var", "moving_variance"))


def _batch_norm(module: str, layer: str) -> Iterator[tuple[str, str, Layout]]:
    for original, keras_name in BATCH_NORM:
        yield f"{module}.{original}", f"{layer}/{keras_name}", same_values


def _conv_bn(module: str, layer: str, conv_layout: Layout) -> Iterator[tuple[str, str, Layout]]:
    """The original's ConvBnAct (`conv.0` conv, `conv.1` batch norm) -> `{layer}_conv`, `{layer}_bn`."""
    yield f"{module}.conv.0.weight", f"{layer}_conv/kernel", conv_layout
    yield from _batch_norm(f"{module}.conv.1", f"{layer}_bn")


def _squeeze_excite(module: str, layer: str) -> Iterator[tuple[str, str, Layout]]:
    """SE (`se.1` reduce, `se.3` expand, 1x1 convs with bias) -> `{layer}_reduce`, `{layer}_expand`."""
    for index, keras_name in (("1", "reduce"), ("3", "expand")):
        yield f"{module}.se.{index}.weight", f"{layer}_{keras_name}/kernel", conv1x1_to_dense
        yield f"{module}.se.{index}.bias", f"{layer}_{keras_name}/bias", same_values


def v5_placements() -> Iterator[tuple[str, str, Layout]]:
    """(original state_dict key, Keras variable path, layout change) for every v5 tensor."""
    yield from _conv_bn("eeg_encoder.stem_conv", "encoder_stem", conv_to_conv2d)
    for block in range(len(BLOCK_KERNEL_SIZES)):
        blocks = f"eeg_encoder.efficient_net.{block}.layer.0"
        for i in range(LAYERS_PER_BLOCK):
            module, layer = f"{blocks}.{i}.inv_res", f"encoder_block{block}_ir{i}"
            yield from _conv_bn(f"{module}.0", f"{layer}_pw1", conv1x1_to_dense)
            yield from _conv_bn(f"{module}.1", f"{layer}_dw", grouped_conv_to_depthwise)
            yield from _squeeze_excite(f"{module}.2", f"{layer}_se")
            yield from _conv_bn(f"{module}.3", f"{layer}_pw2", conv1x1_to_dense)
        module, layer = f"{blocks}.{LAYERS_PER_BLOCK}.conv", f"encoder_block{block}_mixer"
        yield from _conv_bn(f"{module}.0", f"{layer}_dw", grouped_conv_to_depthwise)
        yield from _squeeze_excite(f"{module}.1", f"{layer}_se")
        yield from _conv_bn(f"{module}.2", f"{layer}_pw", conv1x1_to_dense)
    similarity = "eeg_feature_processor.similarity_encoder.similarity_encoder"
    yield f"{similarity}.0.weight", "fusion_sim_conv/kernel", conv1x1_to_dense
    yield from _batch_norm(f"{similarity}.1", "fusion_sim_bn")
    yield f"{similarity}.2.weight", "fusion_sim_prelu/alpha", same_values
    yield "eeg_feature_processor.pool.p", "fusion_gem/p", same_values
    yield "head.mlp.0.weight", "head_dense1/kernel", linear_to_dense
    yield "head.mlp.0.bias", "head_dense1/bias", same_values
    yield from _batch_norm("head.mlp.1", "head_bn")
    yield "head.mlp.2.weight", "head_prelu/alpha", same_values
    yield "head.mlp.3.weight", "head_dense2/kernel", linear_to_dense
    yield "head.mlp.3.bias", "head_dense2/bias", same_values


def convert_v5_state_dict(state_dict: dict[str, np.ndarray], source: str = "state_dict") -> keras.Model:
    """Build the v5 model (`build_v5_eeg_model`) holding the original state_dict's weights.

    state_dict: original key -> array (e.g. from `load_original_state_dict`). Every Keras
    variable receives exactly one original tensor and every original tensor except the
    `num_batches_tracked` counters is used once. Raises CheckpointError, naming `source`, the
    key and the shapes, for a missing, unexpected or wrongly shaped entry.
    """
    model = build_v5_eeg_model()
    variables = {variable.path: variable for variable in model.variables}
    placements = list(v5_placements())
    expected_keys = [key for key, _, _ in placements]
    missing = [key for key in expected_keys if key not in state_dict]
    unexpected = [key for key in state_dict if key not in set(expected_keys) and not key.endswith(IGNORED_SUFFIX)]
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        raise CheckpointError(f"{source}: not a v5 checkpoint: {'; '.join(problems)}")
    unplaced = sorted(set(variables) - {path for _, path, _ in placements})
    if unplaced:  # the model and this table disagree: a bug here, not in the checkpoint
        raise RuntimeError(f"v5 model variables with no original tensor: {unplaced[:5]}")
    for key, path, layout in placements:
        variable = variables[path]
        tensor = np.asarray(state_dict[key], np.float32)
        try:
            value = layout(tensor, tuple(variable.shape))
        except ValueError:
            value = None
        if value is None or tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, which does not fit {path} "
                f"{tuple(variable.shape)}"
            )
        variable.assign(value)
    return model


def convert_v5_checkpoint(path) -> keras.Model:
    """`convert_v5_state_dict` of an original `.pth` file (see `load_original_state_dict`)."""
    return convert_v5_state_dict(load_original_state_dict(path), source=str(path))


ORIGINAL_CHECKPOINT = Path("model") / "last_model.pth"  # inside the original's fold_<k>/seed_<s>/
_ORIGINAL_RUN = re.compile(r"fold_(\d+)/seed_(\d+)$")


def find_original_checkpoints(experiment_dir) -> dict[tuple[int, int], Path]:
    """(fold, seed) -> checkpoint, for the original's run tree
    `<experiment_dir>/fold_<k>/seed_<s>/model/last_model.pth`.

    Raises CheckpointError naming the folder when it holds no such file.
    """
    experiment_dir = Path(experiment_dir)
    found = {}
    for path in sorted(experiment_dir.glob(f"fold_*/seed_*/{ORIGINAL_CHECKPOINT.as_posix()}")):
        match = _ORIGINAL_RUN.search(path.parent.parent.relative_to(experiment_dir).as_posix())
        if match:
            found[int(match[1]), int(match[2])] = path
    if not found:
        problem = "folder not found" if not experiment_dir.is_dir() else "no original run"
        raise CheckpointError(f"{experiment_dir}: {problem} (fold_<k>/seed_<s>/{ORIGINAL_CHECKPOINT.as_posix()})")
    return dict(sorted(found.items()))


def write_converted_run(checkpoint, recipe: Recipe, fold: int, seed: int, recipe_dir) -> Path:
    """Convert one original checkpoint into the run folder `<recipe_dir>/fold_<fold>/seed_<seed>`.

    The folder holds `model.keras` and a `recipe.json` (`recipe`, fold, seed, `converted_from`:
    the checkpoint's absolute path) but no history or out-of-fold predictions: it predicts, and
    out-of-fold scoring leaves it out. Written atomically like a trained run.
    """
    model = convert_v5_checkpoint(checkpoint)
    run_dir = runs.run_dir(recipe_dir, fold, seed)
    partial = runs.start_partial(run_dir)
    model.save(partial / runs.MODEL_FILE)
    source = str(Path(checkpoint).resolve())
    runs.write_description(partial, {**runs.describe(recipe, fold, seed), "converted_from": source})
    return runs.publish(partial, run_dir)
