"""Pooling layers: GeM with a learnable exponent, and a max pool whose gradient XLA:CPU handles well."""

import keras
from keras import ops

from hms_keras import runtime


@keras.saving.register_keras_serializable(package="hms_keras")
class GeMPooling2D(keras.layers.Layer):
    """GeM over the two spatial axes: `mean(max(x, eps) ** p) ** (1 / p)` with a learnable scalar p.

    Input `(batch, height, width, channels)`, output `(batch, channels)`. Values are clipped from
    below at `epsilon` before the power, so the result is positive and the gradient finite.

    Args:
        p_init: initial value of the exponent p (3 lies between average and max pooling).
        epsilon: lower clip applied to the inputs.
    """

    def __init__(self, p_init=3.0, epsilon=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.p_init = p_init
        self.epsilon = epsilon

    def build(self, input_shape):
        self.p = self.add_weight(
            name="p", shape=(), initializer=keras.initializers.Constant(self.p_init), trainable=True
        )

    def call(self, inputs):
        p = ops.cast(self.p, inputs.dtype)
        powered = ops.power(ops.maximum(inputs, self.epsilon), p)  # (batch, h, w, channels)
        return ops.power(ops.mean(powered, axis=(1, 2)), 1.0 / p)  # (batch, channels)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"p_init": self.p_init, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="hms_keras")
class SlicedMaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` with non-overlapping windows ('valid', strides == pool_size).

    On JAX on a CPU it is computed as the elementwise maximum of the strided slices of the
    input, one per window offset: the gradient is then a plain select, where the `reduce_window`
    gradient (select-and-scatter) lowers to a slow index-tracking loop on XLA:CPU. Elsewhere
    (`hms_keras.runtime.uses_cpu_formulation("max_pool")`) it is the Keras implementation. Same
    outputs and config as the Keras layer.
    Input `(batch, height, width, channels)`, output `(batch, height // ph, width // pw, channels)`.
    """

    def __init__(self, pool_size=(2, 2), **kwargs):
        super().__init__(pool_size, **kwargs)
        if self.padding != "valid" or self.strides != self.pool_size or self.data_format != "channels_last":
            raise ValueError(
                f"{self.__class__.__name__} supports only padding='valid', strides == pool_size and "
                f"channels_last; got padding={self.padding!r}, strides={self.strides}, "
                f"pool_size={self.pool_size}, data_format={self.data_format!r}"
            )

    def call(self, inputs):
        if not runtime.uses_cpu_formulation("max_pool"):
            return super().call(inputs)
        _, height, width, _ = inputs.shape
        pool_h, pool_w = self.pool_size
        out_h, out_w = height // pool_h, width // pool_w
        outputs = None
        for i in range(pool_h):
            for j in range(pool_w):
                window = inputs[:, i : i + out_h * pool_h : pool_h, j : j + out_w * pool_w : pool_w, :]
                outputs = window if outputs is None else ops.maximum(outputs, window)
        return outputs  # (batch, out_h, out_w, channels)
