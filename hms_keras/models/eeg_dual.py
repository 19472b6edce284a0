"""The v5 raw-EEG model: a shared ("dual") EfficientNet-style encoder over both hemispheres.

Reference: the 4th-place HMS solution's `v5_eeg_24ep_cutmix` (`docs/v5_reference.md` §4).
Each hemisphere is a 10-channel stack (`constants.LEFT_STACK` / `RIGHT_STACK`) with two planes
(signal, channel-quality mask). Both stacks go through one encoder as extra batch items (so batch
norm sees both), and the two feature maps are fused only with symmetric functions (min, max,
cosine similarity), which makes the logits exactly invariant to swapping left and right.

Encoder tensors are `(2 * batch, stack=10, time, features)`: convolutions with kernel `(1, k)` run
along time, the `(3, 1)` channel mixer runs across the 10 EEG channels.

Formulation choices for speed on XLA (JAX) CPU, measured in `benchmarks/model_step.py`; none
changes the parameters or the function computed: 1x1 convolutions are `PointwiseDense` layers
(2-D matmuls over the channel axis; XLA's dot is ~4x faster than its 1x1 convolution),
depthwise convolutions are `ShiftedDepthwiseConv2D`, max pools are `SlicedMaxPooling2D`, ELU is
`hms_keras.layers.elu`, and each inverted residual is `Rematerialized` so training memory stays
small.
"""

import math

import keras

from hms_keras import constants
from hms_keras.layers import (
    CosineSimilarity,
    GeMPooling2D,
    PointwiseDense,
    Rematerialized,
    ShiftedDepthwiseConv2D,
    SlicedMaxPooling2D,
    SplitHemispheres,
    StackHemispheres,
    elu,
)

WIDTH = 64  # encoder features
DEPTH_MULTIPLIER = 4  # inverted-residual expansion: 64 -> 256 by a depthwise conv
LAYERS_PER_BLOCK = 3
BLOCK_KERNEL_SIZES = (3, 3, 5, 5, 3)  # time kernel of each ResBlock; each block halves time
MIXER_KERNEL_SIZE = 3  # across EEG channels
SE_REDUCTION = 4
HEAD_UNITS = 48
NUM_HEADS = 2  # head 0: row label, head 1: per-EEG label
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
BN_EPSILON = 1e-5
PRELU_INIT = 0.25


def _kernel_init():
    """PyTorch's default conv/linear weight init, U(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def _uniform_init(fan_in):
    """U(+-1/sqrt(fan_in)): PyTorch's default bias init, and its depthwise-kernel init."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def _batch_norm(name):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _bn_elu(x, name):
    x = _batch_norm(f"{name}_bn")(x)
    return keras.layers.Activation(elu, name=f"{name}_elu")(x)


def apply_pointwise_bn_act(x, filters, name):
    """1x1 conv (`PointwiseDense`, no bias) -> BN -> ELU. `(n, h, w, c)` -> `(n, h, w, filters)`."""
    x = PointwiseDense(filters, use_bias=False, kernel_initializer=_kernel_init(), name=f"{name}_conv")(x)
    return _bn_elu(x, name)


def apply_depthwise_bn_act(x, kernel_size, depth_multiplier, name):
    """Depthwise conv (no bias, 'same') -> BN -> ELU. `(n, h, w, c)` -> `(n, h, w, c * depth_multiplier)`."""
    x = ShiftedDepthwiseConv2D(
        kernel_size,
        depth_multiplier=depth_multiplier,
        padding="same",
        use_bias=False,
        depthwise_initializer=_uniform_init(kernel_size[0] * kernel_size[1]),
        name=f"{name}_conv",
    )(x)
    return _bn_elu(x, name)


def apply_squeeze_excite(x, hidden, name):
    """Squeeze-and-excitation: gate each feature by an MLP of its (h, w) mean. Shape unchanged."""
    channels = x.shape[-1]
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)  # (n, 1, 1, c)
    gate = keras.layers.Dense(
        hidden, kernel_initializer=_kernel_init(), bias_initializer=_uniform_init(channels), name=f"{name}_reduce"
    )(gate)  # (n, 1, 1, hidden)
    gate = keras.layers.Activation(elu, name=f"{name}_elu")(gate)
    gate = keras.layers.Dense(
        channels, kernel_initializer=_kernel_init(), bias_initializer=_uniform_init(hidden), name=f"{name}_expand"
    )(gate)  # (n, 1, 1, c)
    gate = keras.layers.Activation("sigmoid", name=f"{name}_sigmoid")(gate)
    return keras.layers.Multiply(name=f"{name}_scale")([x, gate])  # (n, h, w, c)


def apply_inverted_residual(x, kernel_size, name):
    """1x1 ConvBnAct -> depthwise (1, k) x4 BnAct -> SE -> 1x1 ConvBnAct (no residual inside).

    `(n, 10, t, 64)` -> `(n, 10, t, 64)`, via `(n, 10, t, 256)` in the middle.
    """
    x = apply_pointwise_bn_act(x, WIDTH, name=f"{name}_pw1")  # (n, 10, t, 64)
    x = apply_depthwise_bn_act(x, (1, kernel_size), DEPTH_MULTIPLIER, name=f"{name}_dw")  # (n, 10, t, 256)
    x = apply_squeeze_excite(x, WIDTH, name=f"{name}_se")  # (n, 10, t, 256)
    return apply_pointwise_bn_act(x, WIDTH, name=f"{name}_pw2")  # (n, 10, t, 64)


def apply_channel_mixer(x, name):
    """Depthwise-separable conv across the 10 EEG channels, with a residual. Shape unchanged."""
    y = apply_depthwise_bn_act(x, (MIXER_KERNEL_SIZE, 1), 1, name=f"{name}_dw")  # (n, 10, t, 64)
    y = apply_squeeze_excite(y, WIDTH // SE_REDUCTION, name=f"{name}_se")  # (n, 10, t, 64)
    y = apply_pointwise_bn_act(y, WIDTH, name=f"{name}_pw")  # (n, 10, t, 64)
    return keras.layers.Add(name=f"{name}_add")([x, y])


def apply_rematerialized(fn, x, name):
    """`fn(x)` built as a sub-model named `{name}_graph` and run under `Rematerialized` (`name`)."""
    inputs = keras.Input(x.shape[1:], name=f"{name}_input")
    block = keras.Model(inputs, fn(inputs), name=f"{name}_graph")
    return Rematerialized(block, name=name)(x)


def apply_res_block(x, kernel_size, name, rematerialize):
    """3 inverted residuals + channel mixer + MaxPool(1, 2), plus MaxPool(1, 2) of the input.

    `(n, 10, t, 64)` -> `(n, 10, t // 2, 64)`. With `rematerialize`, each inverted residual is
    recomputed in the backward pass instead of keeping its `(n, 10, t, 256)` activations.
    """
    shortcut = SlicedMaxPooling2D((1, 2), name=f"{name}_shortcut_pool")(x)  # (n, 10, t/2, 64)
    y = x
    for i in range(LAYERS_PER_BLOCK):
        ir_name = f"{name}_ir{i}"
        if rematerialize:
            y = apply_rematerialized(
                lambda t, ir_name=ir_name: apply_inverted_residual(t, kernel_size, name=ir_name), y, name=ir_name
            )  # (n, 10, t, 64)
        else:
            y = apply_inverted_residual(y, kernel_size, name=ir_name)  # (n, 10, t, 64)
    y = apply_channel_mixer(y, name=f"{name}_mixer")  # (n, 10, t, 64)
    y = SlicedMaxPooling2D((1, 2), name=f"{name}_pool")(y)  # (n, 10, t/2, 64)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def apply_encoder(x, name, rematerialize):
    """Stem + 5 ResBlocks. `(n, 10, 512, 2)` -> `(n, 10, 16, 64)`; every layer is named `{name}_...`."""
    x = keras.layers.Conv2D(
        WIDTH, (1, 3), padding="same", use_bias=False, kernel_initializer=_kernel_init(), name=f"{name}_stem_conv"
    )(x)  # (n, 10, 512, 64)
    x = _bn_elu(x, f"{name}_stem")
    for i, kernel_size in enumerate(BLOCK_KERNEL_SIZES):
        x = apply_res_block(x, kernel_size, name=f"{name}_block{i}", rematerialize=rematerialize)  # time halves
    return x


def apply_dual_fusion(left, right, name):
    """Symmetric fusion of the two hemispheres' maps: [min, max, projected cosine similarity].

    `left`, `right`: `(batch, 10, t, 64)` each -> `(batch, 10, t, 192)`.
    """
    low = keras.layers.Minimum(name=f"{name}_min")([left, right])  # (batch, 10, t, 64)
    high = keras.layers.Maximum(name=f"{name}_max")([left, right])  # (batch, 10, t, 64)
    sim = CosineSimilarity(epsilon=1e-4, name=f"{name}_cosine")([left, right])  # (batch, 10, t, 1)
    sim = PointwiseDense(WIDTH, use_bias=False, kernel_initializer=_kernel_init(), name=f"{name}_sim_conv")(
        sim
    )  # (batch, 10, t, 64), a 1x1 conv 1 -> 64
    sim = _batch_norm(f"{name}_sim_bn")(sim)
    sim = keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(PRELU_INIT), shared_axes=[1, 2, 3], name=f"{name}_sim_prelu"
    )(sim)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([low, high, sim])  # (batch, 10, t, 192)


def apply_head(x, name):
    """Dense 192->48 -> BN -> PReLU -> Dense 48->12, reshaped to `(batch, 2, 6)` float32 logits."""
    in_units = x.shape[-1]
    x = keras.layers.Dense(
        HEAD_UNITS, kernel_initializer=_kernel_init(), bias_initializer=_uniform_init(in_units), name=f"{name}_dense1"
    )(x)  # (batch, 48)
    x = _batch_norm(f"{name}_bn")(x)
    x = keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(PRELU_INIT), shared_axes=[1], name=f"{name}_prelu"
    )(x)
    x = keras.layers.Dense(
        NUM_HEADS * constants.NUM_CLASSES,
        kernel_initializer=_kernel_init(),
        bias_initializer=_uniform_init(HEAD_UNITS),
        name=f"{name}_dense2",
    )(x)  # (batch, 12)
    x = keras.layers.Reshape((NUM_HEADS, constants.NUM_CLASSES), name=f"{name}_reshape")(x)  # (batch, 2, 6)
    return keras.layers.Activation("linear", dtype="float32", name=f"{name}_logits")(x)


def build_v5_eeg_model(name="v5_eeg_dual_effnet1d", rematerialize=True):
    """Build the v5 dual-hemisphere EEG model (873,647 trainable parameters).

    Inputs (dict): `"eeg"` `(batch, 512, 18)` float32 bipolar signal in mV (high-passed, clipped
    to +-1) and `"mask"` `(batch, 512, 18)` float32 channel quality in (0, 1], channels in
    `constants.BIPOLAR_PAIRS` order, 40 Hz. Output: logits `(batch, 2, 6)` float32 for the two
    heads (row label, per-EEG label), classes in `constants.CLASSES` order.

    `rematerialize` recomputes each inverted residual in the backward pass (`Rematerialized`):
    the same function and weights, less training memory; it only changes how gradients are
    computed.
    """
    shape = (constants.CROP_FRAMES, constants.NUM_BIPOLAR)
    eeg = keras.Input(shape, name="eeg")  # (batch, 512, 18)
    mask = keras.Input(shape, name="mask")  # (batch, 512, 18)
    x = StackHemispheres(constants.LEFT_STACK, constants.RIGHT_STACK, name="stack_hemispheres")(
        [eeg, mask]
    )  # (2 * batch, 10, 512, 2)
    x = apply_encoder(x, name="encoder", rematerialize=rematerialize)  # (2 * batch, 10, 16, 64)
    left, right = SplitHemispheres(name="split_hemispheres")(x)  # (batch, 10, 16, 64) each
    x = apply_dual_fusion(left, right, name="fusion")  # (batch, 10, 16, 192)
    x = GeMPooling2D(p_init=3.0, epsilon=1e-4, name="fusion_gem")(x)  # (batch, 192)
    logits = apply_head(x, name="head")  # (batch, 2, 6)
    return keras.Model({"eeg": eeg, "mask": mask}, logits, name=name)
