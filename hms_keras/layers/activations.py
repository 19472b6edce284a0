"""ELU in a form that XLA:CPU vectorises well."""

import keras
from keras import ops

from hms_keras import runtime


@keras.saving.register_keras_serializable(package="hms_keras")
def elu(x):
    """ELU with alpha = 1; on JAX on a CPU written as `where(x > 0, x, exp(x) - 1)`.

    XLA:CPU evaluates `exp` about 2x faster than `expm1`; `exp(x) - 1` differs from ELU's
    `expm1(x)` by at most one float32 rounding of the result's neighbourhood of 1 (absolute
    error <= 6e-8), far below what training notices. The gradient is 1 for x > 0 and exp(x)
    for x <= 0 (1 at 0, as in PyTorch). Elsewhere (`hms_keras.runtime.uses_cpu_formulation("elu")`)
    it is the backend's native ELU. Any shape.
    """
    if not runtime.uses_cpu_formulation("elu"):
        return ops.elu(x)
    negative = ops.where(x > 0, 0.0, x)  # keeps exp finite and its gradient off the positive side
    return ops.where(x > 0, x, ops.exp(negative) - 1.0)
