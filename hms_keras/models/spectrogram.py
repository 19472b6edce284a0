"""The spectrogram baseline: a ResNet-34-D (keras-hub backbone) on one Kaggle spectrogram window.

The port of the public "HMS-HBAC ResNet34d Baseline" model (`docs/spectrogram_baseline.md`):
timm `resnet34d(in_chans=1, num_classes=6)` rebuilt from keras-hub's `ResNetBackbone`.

Input "spectrogram": (batch, 400, 300, 1) float32, the normalised log power of a 600 s window
(rows = 4 chains x 100 frequency bins in the file order LL, RL, LP, RP; columns = 2 s steps), as
`hms_keras.data.preprocess.normalize_spectrogram` writes it. Output: (batch, 6) float32 logits in
`constants.CLASSES` order, float32 even under a mixed-precision dtype policy.

Trainable parameters: 21,310,630, which is 4,224 (0.020 %) more than timm's 21,306,406. keras-hub
gives the first block of the first stage of a "vd" ResNet a 1x1 convolution + batch-norm shortcut
(64 x 64 kernel + 64 gamma + 64 beta = 4,224) where timm keeps an identity shortcut, because the
stage neither changes the width (64 -> 64) nor the stride. Everything else matches timm
parameter for parameter: the 3x3 stem 32-32-64 without biases, the average-pool + 1x1 convolution
shortcuts of stages 2-4, batch norm with gamma and beta, and the 512 x 6 + 6 classifier.
"""

import keras

from hms_keras import constants

IMAGE_SIZE = 512  # the spectrogram is resized to IMAGE_SIZE x IMAGE_SIZE (bilinear) in the model
SPECTROGRAM_SHAPE = (len(constants.SPECTROGRAM_COLUMNS), constants.SPECTROGRAM_WINDOW_ROWS, 1)

# keras-hub ResNetBackbone arguments of timm's resnet34d: deep 3x3 stem 32-32-64, 3-4-6-3 basic
# blocks of 64-128-256-512 filters, average-pool shortcuts ("vd"), post-activation blocks.
RESNET34D_ARCHITECTURE = {
    "input_conv_filters": [32, 32, 64],
    "input_conv_kernel_sizes": [3, 3, 3],
    "stackwise_num_filters": [64, 128, 256, 512],
    "stackwise_num_blocks": [3, 4, 6, 3],
    "stackwise_num_strides": [1, 2, 2, 2],
    "block_type": "basic_block_vd",
    "use_pre_activation": False,
}
FIRST_CONV = "conv1_conv"  # the backbone's first convolution, whose input channels differ


def build_spectrogram_resnet34d(preset=None, name="spec_resnet34d"):
    """Builds the ResNet-34-D spectrogram classifier as a functional `keras.Model`.

    Args:
        preset: None for random initialisation (no file or network access), or a keras-hub
            `ResNetBackbone` preset with the ResNet-34-D architecture whose weights are copied into
            the backbone: a local preset directory (`config.json` + `model.weights.h5`, as
            `ResNetBackbone.save_to_preset` writes it) or a preset name already in the kagglehub
            cache, such as "resnet_vd_34_imagenet". An RGB preset's first convolution kernel is
            summed over its input channels, as timm does for `in_chans=1`.
        name: the model's name.

    Returns:
        A model mapping {"spectrogram": (batch, 400, 300, 1) float32} to (batch, 6) float32 logits.

    Raises:
        ValueError: the preset cannot be loaded (not a directory, not cached and no network), or
            its architecture is not ResNet-34-D.
    """
    import keras_hub  # imported here: it loads TensorFlow, which raw-EEG users need not pay for

    backbone = keras_hub.models.ResNetBackbone(
        **RESNET34D_ARCHITECTURE, image_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="resnet34d_backbone"
    )
    if preset is not None:
        copy_preset_weights(load_preset_backbone(preset), backbone, preset)

    spectrogram = keras.Input(shape=SPECTROGRAM_SHAPE, name="spectrogram")  # (batch, 400, 300, 1)
    x = keras.layers.Resizing(IMAGE_SIZE, IMAGE_SIZE, interpolation="bilinear", name="resize")(
        spectrogram
    )  # (batch, 512, 512, 1)
    x = backbone(x)  # (batch, 16, 16, 512)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)  # (batch, 512)
    logits = keras.layers.Dense(constants.NUM_CLASSES, dtype="float32", name="logits")(x)  # (batch, 6)
    return keras.Model(inputs=spectrogram, outputs=logits, name=name)


def load_preset_backbone(preset):
    """Loads a keras-hub `ResNetBackbone` preset and checks that it is a ResNet-34-D.

    Args:
        preset: a local preset directory or a preset name in the kagglehub cache (see
            `build_spectrogram_resnet34d`).

    Returns:
        The preset's `ResNetBackbone` with its weights (any number of input channels).

    Raises:
        ValueError: the preset cannot be loaded, with the ways to provide it, or its architecture
            differs from `RESNET34D_ARCHITECTURE` (the differing arguments are named).
    """
    import keras_hub

    try:
        source = keras_hub.models.ResNetBackbone.from_preset(preset)
    except (OSError, ValueError) as err:  # missing files, unknown names, no network (OSError)
        raise ValueError(
            f"Cannot load ResNet-34-D weights from preset {preset!r}: {err}\n"
            "Pass a local preset directory (config.json + model.weights.h5) or a preset name "
            "already in the kagglehub cache. To make a directory on a machine with network "
            "access: keras_hub.models.ResNetBackbone.from_preset('resnet_vd_34_imagenet')"
            ".save_to_preset(DIR), then copy DIR here and pass preset=DIR. Without a preset the "
            "model starts from random weights."
        ) from err
    config = source.get_config()
    differences = {
        key: config[key]
        for key, value in RESNET34D_ARCHITECTURE.items()
        if _as_list(config[key]) != _as_list(value)
    }
    if differences:
        raise ValueError(
            f"Preset {preset!r} is not a ResNet-34-D backbone: it has {differences}, "
            f"expected {RESNET34D_ARCHITECTURE}."
        )
    return source


def copy_preset_weights(source, target, preset):
    """Copies every weight of `source` into the same-named layer of `target`.

    The first convolution kernel (3, 3, in_channels, 32) of `source` is summed over its input
    channels into the (3, 3, 1, 32) kernel of the 1-channel `target`, as timm adapts an RGB stem
    for `in_chans=1`; all other weights (including batch-norm statistics) are copied unchanged.

    Args:
        source: a ResNet-34-D `ResNetBackbone` with weights, any number of input channels.
        target: the 1-channel ResNet-34-D `ResNetBackbone` of `build_spectrogram_resnet34d`.
        preset: the preset's name or path, for error messages only.
    """
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            weights = source.get_layer(layer.name).get_weights()
            if layer.name == FIRST_CONV:
                weights = [weights[0].sum(axis=2, keepdims=True)]  # (3, 3, in, 32) -> (3, 3, 1, 32)
            layer.set_weights(weights)
        except ValueError as err:  # a layer missing from the preset, or weights of another shape
            raise ValueError(f"Preset {preset!r}: layer {layer.name!r} does not fit: {err}") from err


def _as_list(value):
    """A JSON round trip turns tuples into lists; compares configs as lists."""
    return list(value) if isinstance(value, (list, tuple)) else value
