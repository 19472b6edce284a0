"""The v5 dual-hemisphere EEG model: shapes, parameter counts, L/R invariance, training, portability."""

import textwrap

import keras
import numpy as np
import pytest
from fresh_processes import max_differences

from hms_keras import constants
from hms_keras.losses import VoteWeightedKLDivergence
from hms_keras.models import MODELS, build_v5_eeg_model

BATCH = 4  # one batch size throughout, so each compiled function is traced once


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_v5_eeg_model()


def _inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "eeg": np.clip(rng.normal(0, 0.3, (batch, 512, 18)), -1, 1).astype("float32"),  # (batch, time, channels)
        "mask": rng.uniform(0.3, 1.0, (batch, 512, 18)).astype("float32"),
    }


def _param_count(layers):
    return sum(int(np.prod(w.shape)) for layer in layers for w in layer.trainable_weights)


def test_registry_and_io_names(model):
    assert MODELS["v5_eeg_dual_effnet1d"] is build_v5_eeg_model
    assert model.name == "v5_eeg_dual_effnet1d"
    assert sorted(tensor.name for tensor in model.inputs) == ["eeg", "mask"]
    assert all(tuple(tensor.shape) == (None, 512, 18) for tensor in model.inputs)
    logits = np.asarray(model.predict_on_batch(_inputs(BATCH)))
    assert logits.shape == (BATCH, 2, 6) and logits.dtype == np.float32
    assert np.isfinite(logits).all()


def test_parameter_counts_match_the_reference(model):
    assert _param_count(model.layers) == 873_647
    encoder = [layer for layer in model.layers if layer.name.startswith("encoder_")]
    assert _param_count(encoder) == 863_504
    head = [layer for layer in model.layers if layer.name.startswith("head_")]
    assert _param_count(head) == 9_949


def test_swapping_hemispheres_gives_identical_logits(model):
    inputs = _inputs(BATCH, seed=1)
    order = np.arange(constants.NUM_BIPOLAR)
    order[list(constants.LEFT_STACK)] = constants.RIGHT_STACK  # left slots read right channels ...
    order[list(constants.RIGHT_STACK)] = constants.LEFT_STACK  # ... and right slots left ones
    swapped = {key: value[:, :, order] for key, value in inputs.items()}
    assert not np.array_equal(swapped["eeg"], inputs["eeg"])
    np.testing.assert_allclose(
        np.asarray(model.predict_on_batch(swapped)), np.asarray(model.predict_on_batch(inputs)), rtol=0, atol=1e-6
    )


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_v5_eeg_model(rematerialize=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("encoder_stem_conv").compute_dtype == "bfloat16"
    assert keras.backend.standardize_dtype(mixed.output.dtype) == "float32"


def _targets(threshold):
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.full(6, 0.5), (BATCH, 2))
    weight = np.array([[0.9, 0.8], [0.5, 0.6], [0.1, 0.2], [1.0, 1.0]])
    thresholds = np.full((BATCH, 2), threshold)
    return np.concatenate([probs, weight[..., None], thresholds[..., None]], axis=-1).astype("float32")


@pytest.fixture(scope="module")
def flat_model(model):
    """The model without rematerialisation (faster to compile), holding `model`'s weights."""
    flat = build_v5_eeg_model(rematerialize=False)
    assert [w.shape for w in flat.weights] == [w.shape for w in model.weights]
    flat.set_weights(model.get_weights())
    return flat


def test_rematerialized_and_flat_models_compute_the_same_function(model, flat_model):
    inputs = _inputs(BATCH, seed=2)
    np.testing.assert_allclose(
        np.asarray(flat_model.predict_on_batch(inputs)),
        np.asarray(model.predict_on_batch(inputs)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_training_steps_on_one_batch_lower_the_loss(flat_model):
    flat_model.compile(
        optimizer=keras.optimizers.AdamW(1e-3, epsilon=1e-4, weight_decay=1e-5), loss=VoteWeightedKLDivergence()
    )
    inputs, y = _inputs(BATCH, seed=3), _targets(threshold=0.3)  # the threshold drops sample 2
    losses = [float(flat_model.train_on_batch(inputs, y)) for _ in range(3)]
    assert losses[-1] < losses[0], losses


@pytest.mark.slow
def test_compiled_model_loss_matches_numpy(flat_model):
    flat_model.compile(loss=VoteWeightedKLDivergence())
    inputs, y = _inputs(BATCH, seed=6), _targets(threshold=0.3)
    logits = np.asarray(flat_model.predict_on_batch(inputs)).astype("float64")
    probs, weight = y[..., :6].astype("float64"), y[..., 6].astype("float64")
    log_q = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    kl = (probs * (np.log(probs) - log_q)).sum(-1)  # (batch, 2)
    kept = weight[:, 0] >= 0.3
    expected = (weight[kept] * kl[kept]).mean(1).sum() / weight[kept].sum(0).mean()
    np.testing.assert_allclose(flat_model.test_on_batch(inputs, y), expected, rtol=1e-4)


LOAD_AND_COMPARE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import hms_keras  # registers the custom objects; nothing else is imported
    model = keras.models.load_model(sys.argv[1], compile=False)
    data = np.load(sys.argv[2])
    logits = np.asarray(model.predict_on_batch({"eeg": data["eeg"], "mask": data["mask"]}))
    print("MAXDIFF", keras.backend.backend(), float(np.abs(logits - data["logits"]).max()))
    """
)


def test_saved_model_loads_on_every_backend_in_a_fresh_process(model, tmp_path):
    inputs = _inputs(BATCH, seed=5)
    model.save(tmp_path / "v5.keras")
    np.savez(tmp_path / "reference.npz", logits=np.asarray(model.predict_on_batch(inputs)), **inputs)
    script = tmp_path / "load.py"
    script.write_text(LOAD_AND_COMPARE)
    arguments = [str(tmp_path / "v5.keras"), str(tmp_path / "reference.npz")]
    differences = max_differences(script, {backend: arguments for backend in ("jax", "tensorflow", "torch")})
    assert all(difference < 1e-5 for difference in differences.values()), differences
