"""Depthwise 2D convolution written as a sum of shifted slices on XLA:CPU (it lowers grouped convs poorly)."""

import keras
from keras import ops

from hms_keras import runtime


@keras.saving.register_keras_serializable(package="hms_keras")
class ShiftedDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` (stride 1, 'same' padding, channels_last), as shifted slices on JAX CPUs.

    Same constructor, kernel variable `(kernel_h, kernel_w, channels, depth_multiplier)` and output
    channel order (`c * depth_multiplier + m`, the PyTorch grouped-conv order) as the Keras layer,
    so weights move between the two unchanged. On JAX on a CPU the input is zero-padded and the
    output is the sum over kernel taps of a shifted view times one row of the kernel: elementwise
    work that XLA fuses, where XLA:CPU lowers grouped convolutions to a slow generic loop (~50x
    slower for this model's (1, k) x4 convolutions). Two layouts of the same sum, chosen with
    `benchmarks/model_step.py` (v5 model, batch 32, 2 CPU cores): in training each input channel
    is first repeated `depth_multiplier` times (2.6-2.9 train EEG/s, measured with every activation
    rematerialised; the broadcast layout's gradient gave 2.1); in inference the shifted view
    `(..., channels, 1)` is broadcast against the kernel's `(channels, multiplier)` (14-17
    inference EEG/s against 12-13). Elsewhere (`hms_keras.runtime.uses_cpu_formulation("depthwise")`)
    it is the Keras layer: TensorFlow and torch keep their native depthwise kernels (oneDNN), which
    are faster there, and on a GPU XLA's native kernel is the one to beat.

    Input `(batch, height, width, channels)`, output `(batch, height, width, channels *
    depth_multiplier)`; height and width must be static.
    """

    def __init__(self, kernel_size, **kwargs):
        super().__init__(kernel_size, **kwargs)
        if self.padding != "same" or self.data_format != "channels_last":
            raise ValueError(
                f"{self.__class__.__name__} supports only padding='same' and channels_last; "
                f"got padding={self.padding!r}, data_format={self.data_format!r}"
            )
        if self.strides != (1, 1) or self.dilation_rate != (1, 1):
            raise ValueError(
                f"{self.__class__.__name__} supports only stride 1 and dilation 1; "
                f"got strides={self.strides}, dilation_rate={self.dilation_rate}"
            )

    def call(self, inputs, training=None):
        if not runtime.uses_cpu_formulation("depthwise"):
            return super().call(inputs)
        _, height, width, channels = inputs.shape
        if height is None or width is None:
            raise ValueError(f"{self.name}: height and width must be static, got input shape {inputs.shape}")
        kernel_h, kernel_w = self.kernel_size
        multiplier = self.depth_multiplier
        taps = ops.cast(self.kernel, inputs.dtype)  # (kernel_h, kernel_w, channels, multiplier)
        if training:
            x = ops.repeat(inputs, multiplier, axis=-1) if multiplier > 1 else inputs  # channel c * m_total + m
            taps = ops.reshape(taps, (kernel_h, kernel_w, channels * multiplier))
        else:
            x = ops.expand_dims(inputs, -1)  # (batch, height, width, channels, 1)
        pad = [[0, 0], [(kernel_h - 1) // 2, kernel_h // 2], [(kernel_w - 1) // 2, kernel_w // 2]]
        x = ops.pad(x, pad + [[0, 0]] * (len(x.shape) - 3))  # height + kernel_h - 1, width + kernel_w - 1
        outputs = None
        for i in range(kernel_h):
            for j in range(kernel_w):
                term = x[:, i : i + height, j : j + width] * taps[i, j]  # (batch, height, width, ...)
                outputs = term if outputs is None else outputs + term
        outputs = ops.reshape(outputs, (-1, height, width, channels * multiplier))  # channel c * multiplier + m
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
