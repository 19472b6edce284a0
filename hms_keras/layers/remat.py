"""Rematerialisation of a whole sub-graph, batch-norm updates included."""

import keras

from hms_keras import runtime

# On JAX on a CPU, outputs of these primitives are kept for the backward pass: matmuls (the 1x1 convolutions'
# 64-feature outputs) and reductions (batch-norm statistics, squeeze-excite means: tiny). What is
# recomputed is elementwise work, so no matmul or reduction runs twice. v5 model, batch 32, 2 CPU
# cores (`benchmarks/model_step.py`): ~12.1 -> ~10.0 s per train step, peak RSS 4.1 -> 5.5 GB.
KEPT_PRIMITIVES = frozenset({"dot_general", "reduce_sum", "reduce_max", "reduce_min"})


def _keep_matmuls_and_reductions(primitive, *args, **params):
    """A `jax.checkpoint` policy: save the outputs of `KEPT_PRIMITIVES`, recompute the rest."""
    return primitive.name in KEPT_PRIMITIVES


def _rematerialize(fn):
    """`keras.remat(fn)`; on JAX on a CPU, `jax.checkpoint` with the policy above."""
    if not runtime.uses_cpu_formulation("remat_policy"):
        return keras.remat(fn)
    import jax

    return jax.checkpoint(fn, policy=_keep_matmuls_and_reductions)


@keras.saving.register_keras_serializable(package="hms_keras")
class Rematerialized(keras.layers.Layer):
    """Call a block (a functional sub-model) under `keras.remat`: its activations are not kept for
    the backward pass but recomputed from the block input, which cuts training memory. On JAX on a
    CPU the outputs of matmuls and reductions are kept (`KEPT_PRIMITIVES`): only elementwise work reruns.

    `keras.RematScope` cannot do this for a block with batch norm: it passes `training` through
    the traced function and the moving-statistics updates would escape the rematerialised trace.
    Here the block runs as a pure `stateless_call` inside `keras.remat` and the updated
    non-trainable variables (batch-norm moving statistics) are assigned outside it.

    Args:
        block: a `keras.Model` (or layer) mapping one tensor to one tensor.
    """

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def build(self, input_shape):
        if not self.block.built:
            self.block.build(input_shape)

    def call(self, inputs, training=None):
        block = self.block

        def pure(x, trainable, non_trainable):
            return block.stateless_call(trainable, non_trainable, x, training=training)

        outputs, non_trainable = _rematerialize(pure)(
            inputs,
            [v.value for v in block.trainable_variables],
            [v.value for v in block.non_trainable_variables],
        )
        if training:
            for variable, value in zip(block.non_trainable_variables, non_trainable, strict=True):
                variable.assign(value)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.block.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"block": keras.saving.serialize_keras_object(self.block)})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["block"] = keras.saving.deserialize_keras_object(config["block"])
        return cls(**config)
