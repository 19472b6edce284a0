"""The ResNet-34-D spectrogram model: shapes, parameter count, a training step, saving, presets.

The model has 21 M parameters at 512 x 512, so batches are 1-2 images; one model is built per
module and reused by the tests that do not change its weights.
"""

import os
import subprocess
import sys

import kagglehub
import keras
import keras_hub
import numpy as np
import pytest
import requests

from hms_keras.losses import KLDivergenceFromLogits
from hms_keras.models.spectrogram import (
    RESNET34D_ARCHITECTURE,
    SPECTROGRAM_SHAPE,
    build_spectrogram_resnet34d,
)

TIMM_RESNET34D_TRAINABLE = 21_306_406  # timm resnet34d(in_chans=1, num_classes=6)
TRAINABLE = 21_310_630  # + the 64 x 64 1x1 conv + batch-norm shortcut of keras-hub's stage 1
BATCH_NORM_STATISTICS = 17_280  # moving mean + variance of 8,640 batch-norm channels

LOAD_AND_PREDICT = """
import sys
import numpy as np
import hms_keras
import keras
model = keras.saving.load_model(sys.argv[1], compile=False)
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
"""


@pytest.fixture(scope="module")
def model():
    return build_spectrogram_resnet34d()


def spectrograms(batch, seed):
    """Standard-normal stand-ins for normalised log spectrograms, (batch, 400, 300, 1) float32."""
    return np.random.default_rng(seed).standard_normal((batch, *SPECTROGRAM_SHAPE)).astype("float32")


def test_inputs_outputs_and_logits(model):
    assert [tensor.name for tensor in model.inputs] == ["spectrogram"]
    assert tuple(model.inputs[0].shape) == (None, 400, 300, 1)
    x = spectrograms(2, seed=0)
    logits = model.predict(x, verbose=0)
    assert logits.shape == (2, 6)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    assert not np.allclose(logits[0], logits[1])  # the two images get different logits


def test_parameter_count_matches_timm_resnet34d(model):
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    statistics = sum(int(np.prod(weight.shape)) for weight in model.non_trainable_weights)
    assert trainable == TRAINABLE
    assert statistics == BATCH_NORM_STATISTICS
    assert abs(trainable - TIMM_RESNET34D_TRAINABLE) / TIMM_RESNET34D_TRAINABLE < 5e-4
    first_conv = model.get_layer("resnet34d_backbone").get_layer("conv1_conv")
    assert tuple(first_conv.kernel.shape) == (3, 3, 1, 32)


def test_logits_stay_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = build_spectrogram_resnet34d()
    finally:
        keras.config.set_dtype_policy("float32")
    assert mixed.get_layer("resnet34d_backbone").compute_dtype == "float16"
    assert mixed.outputs[0].dtype == "float32"


def test_one_training_step_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = build_spectrogram_resnet34d()
    # Plain gradient descent: Adam's first step moves all 21 M weights by its full learning rate,
    # which overshoots from some initialisations.
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=KLDivergenceFromLogits())
    x = spectrograms(2, seed=1)
    y = np.random.default_rng(2).dirichlet(np.ones(6), size=2).astype("float32")  # (2, 6)
    before = float(model.train_on_batch(x, y))  # the loss at the initial weights
    after = float(model.train_on_batch(x, y))  # the loss after one update
    assert np.isfinite(before) and before > 0
    assert after < before


@pytest.mark.parametrize(
    "backend",
    ["jax", pytest.param("tensorflow", marks=pytest.mark.slow), pytest.param("torch", marks=pytest.mark.slow)],
)
def test_keras_file_loads_in_a_fresh_process(model, tmp_path, backend):
    path = tmp_path / "spec_resnet34d.keras"
    model.save(path)
    x = spectrograms(2, seed=3)
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        env={**os.environ, "KERAS_BACKEND": backend},
        check=True,
        capture_output=True,
    )
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_rgb_preset_loads_offline_with_summed_stem(tmp_path):
    source = keras_hub.models.ResNetBackbone(**RESNET34D_ARCHITECTURE, image_shape=(None, None, 3))
    stem_bn = source.get_layer("conv3_bn")
    rng = np.random.default_rng(4)
    stem_bn.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in stem_bn.get_weights()])
    source.save_to_preset(str(tmp_path / "preset"))

    model = build_spectrogram_resnet34d(preset=str(tmp_path / "preset"))

    backbone = model.get_layer("resnet34d_backbone")
    np.testing.assert_array_equal(
        backbone.get_layer("conv1_conv").get_weights()[0],
        source.get_layer("conv1_conv").get_weights()[0].sum(axis=2, keepdims=True),
    )
    for copied, original in zip(backbone.get_layer("conv3_bn").get_weights(), stem_bn.get_weights(), strict=True):
        np.testing.assert_array_equal(copied, original)
    # One channel through the summed stem == the same channel repeated 3 times through the RGB stem.
    image = rng.standard_normal((1, 512, 512, 1)).astype("float32")  # (batch, height, width, 1)
    np.testing.assert_allclose(
        backbone.predict(image, verbose=0),
        source.predict(np.repeat(image, 3, axis=-1), verbose=0),
        rtol=0,
        atol=1e-5,
    )


def test_preset_with_another_architecture_is_rejected(tmp_path):
    small = keras_hub.models.ResNetBackbone(
        **{**RESNET34D_ARCHITECTURE, "stackwise_num_blocks": [1, 1, 1, 1]}, image_shape=(None, None, 3)
    )
    small.save_to_preset(str(tmp_path / "small"))
    with pytest.raises(ValueError, match=r"not a ResNet-34-D backbone.*stackwise_num_blocks"):
        build_spectrogram_resnet34d(preset=str(tmp_path / "small"))


def test_missing_preset_directory_says_how_to_provide_weights(tmp_path):
    with pytest.raises(ValueError, match=r"(?s)Cannot load.*missing.*local preset directory"):
        build_spectrogram_resnet34d(preset=str(tmp_path / "missing"))


def test_uncached_preset_name_offline_says_how_to_provide_weights(monkeypatch):
    def offline(*args, **kwargs):
        raise requests.ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(kagglehub, "model_download", offline)
    with pytest.raises(ValueError, match=r"(?s)resnet_vd_34_imagenet.*api\.kaggle\.com.*save_to_preset"):
        build_spectrogram_resnet34d(preset="resnet_vd_34_imagenet")
