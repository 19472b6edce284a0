"""Mixed precision (`train.mixed_precision=mixed_bfloat16`, the GPU setting): both models compute in
bfloat16, keep float32 variables, and train with float32 logits and a float32 loss."""

import keras
import numpy as np
import pytest

from hms_keras.losses import KLDivergenceFromLogits, VoteWeightedKLDivergence
from hms_keras.models import build_spectrogram_resnet34d, build_v5_eeg_model
from hms_keras.target_layout import pack


@pytest.fixture
def bfloat16_policy():
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy("float32")


def _v5_batch(batch_size=2):
    rng = np.random.default_rng(0)
    inputs = {
        "eeg": rng.uniform(-1, 1, (batch_size, 512, 18)).astype("float32"),  # (batch, time, channels)
        "mask": rng.uniform(0.3, 1, (batch_size, 512, 18)).astype("float32"),
    }
    targets = pack(rng.dirichlet(np.ones(6), (batch_size, 2)), rng.uniform(0.1, 1, (batch_size, 2)))  # (batch, 2, 8)
    return inputs, targets


def _assert_trains_in_bfloat16(model, loss, inputs, targets):
    """One SGD step: float32 logits and loss, bfloat16 layers, float32 variables that move."""
    logits = model(inputs, training=True)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    value = loss(targets, logits)
    assert keras.backend.standardize_dtype(value.dtype) == "float32" and np.isfinite(float(value))
    assert {variable.dtype for variable in model.trainable_variables} == {"float32"}
    before = [np.asarray(variable) for variable in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=loss)
    assert np.isfinite(model.train_on_batch(inputs, targets))
    after = [np.asarray(variable) for variable in model.trainable_variables]
    moved = [not np.array_equal(old, new) for old, new in zip(before, after, strict=True)]
    assert sum(moved) > 0.9 * len(moved)  # the gradients reach (almost) every weight through bfloat16


@pytest.mark.slow
def test_v5_model_trains_in_bfloat16_with_float32_logits_and_loss(bfloat16_policy):
    keras.utils.set_random_seed(0)
    model = build_v5_eeg_model()
    # every hms_keras layer (the CPU formulations included) computes in the policy's dtype
    ours = [layer for layer in model.layers if type(layer).__module__.startswith("hms_keras.layers")]
    assert ours and {keras.backend.standardize_dtype(layer.output.dtype) for layer in ours
                     if not isinstance(layer.output, (list, tuple))} == {"bfloat16"}
    _assert_trains_in_bfloat16(model, VoteWeightedKLDivergence(), *_v5_batch())


@pytest.mark.slow
def test_spectrogram_model_trains_in_bfloat16_with_float32_logits_and_loss(bfloat16_policy):
    keras.utils.set_random_seed(0)
    model = build_spectrogram_resnet34d()
    assert model.get_layer("resnet34d_backbone").compute_dtype == "bfloat16"
    spectrogram = np.random.default_rng(1).standard_normal((1, 400, 300, 1)).astype("float32")  # (batch, 400, 300, 1)
    targets = np.random.default_rng(2).dirichlet(np.ones(6), 1).astype("float32")  # (batch, 6)
    _assert_trains_in_bfloat16(model, KLDivergenceFromLogits(), spectrogram, targets)
