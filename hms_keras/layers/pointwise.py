"""A 1x1 convolution as one 2-D matmul (XLA:CPU runs its weight gradient without a transpose)."""

import keras
from keras import ops

from hms_keras import runtime


@keras.saving.register_keras_serializable(package="hms_keras")
class PointwiseDense(keras.layers.Dense):
    """`keras.layers.Dense` on the last axis, computed on the input flattened to 2-D.

    Same constructor, variables (`kernel` `(in_features, units)`, optional `bias`) and function
    as `Dense`; only the matmul's shape differs. `Dense` on a `(batch, h, w, c)` tensor contracts
    one axis in the forward pass, so its weight gradient contracts the three leading axes; XLA:CPU
    canonicalises that into a 2-D matmul by first writing a transposed copy of the output gradient,
    fused into the preceding elementwise work at a fraction of memory bandwidth. On a
    `(batch * h * w, c)` matrix both gradients are plain matmuls (v5 model, batch 32, 2 CPU
    cores: ~18.7 s -> ~13.6 s per train step before the allocator settings of `hms_keras.runtime`).
    The layer is plain `Dense` on torch (where the flattened form ran out of memory) and on GPUs:
    `hms_keras.runtime.uses_cpu_formulation("pointwise")` decides.

    Input `(batch, *spatial, in_features)`, output `(batch, *spatial, units)`.
    """

    def call(self, inputs, training=None):
        if len(inputs.shape) <= 2 or not runtime.uses_cpu_formulation("pointwise"):
            return super().call(inputs, training=training)
        leading = ops.shape(inputs)[:-1]  # (batch, *spatial)
        flat = ops.reshape(inputs, (-1, inputs.shape[-1]))  # (batch * prod(spatial), in_features)
        outputs = super().call(flat, training=training)  # (batch * prod(spatial), units)
        return ops.reshape(outputs, (*leading, self.units))
