"""Left/right hemisphere stacking for the shared ("dual") encoder, and the symmetric comparison."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="hms_keras")
class StackHemispheres(keras.layers.Layer):
    """Gather two mirrored channel stacks and put them one after the other on the batch axis.

    Inputs: a list of planes, each `(batch, time, channels)` (e.g. the bipolar signal and its
    quality mask). Output `(2 * batch, stack, time, planes)`: rows `[0, batch)` hold the left stack,
    rows `[batch, 2 * batch)` the right stack, so one encoder (and its batch-norm statistics) sees
    both hemispheres in a single call.

    Args:
        left: channel indices of the left stack (into the inputs' last axis).
        right: channel indices of the right stack, row i mirroring `left[i]`.
    """

    def __init__(self, left, right, **kwargs):
        super().__init__(**kwargs)
        if len(left) != len(right):
            raise ValueError(f"left and right stacks differ in size: {len(left)} vs {len(right)}")
        self.left = tuple(int(i) for i in left)
        self.right = tuple(int(i) for i in right)

    def call(self, inputs):
        planes = ops.stack(inputs, axis=-1)  # (batch, time, channels, planes)
        planes = ops.transpose(planes, (0, 2, 1, 3))  # (batch, channels, time, planes)
        left = ops.take(planes, self.left, axis=1)  # (batch, stack, time, planes)
        right = ops.take(planes, self.right, axis=1)  # (batch, stack, time, planes)
        return ops.concatenate([left, right], axis=0)  # (2 * batch, stack, time, planes)

    def compute_output_shape(self, input_shape):
        batch, time, _ = input_shape[0]
        return (None if batch is None else 2 * batch, len(self.left), time, len(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update({"left": list(self.left), "right": list(self.right)})
        return config


@keras.saving.register_keras_serializable(package="hms_keras")
class SplitHemispheres(keras.layers.Layer):
    """Undo `StackHemispheres` on the batch axis: `(2 * batch, ...)` -> `[left, right]`, each `(batch, ...)`."""

    def call(self, inputs):
        left, right = ops.split(inputs, 2, axis=0)  # each (batch, ...)
        return [left, right]

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] // 2
        shape = (batch,) + tuple(input_shape[1:])
        return [shape, shape]


@keras.saving.register_keras_serializable(package="hms_keras")
class CosineSimilarity(keras.layers.Layer):
    """Cosine similarity of two feature maps along the channel axis, PyTorch semantics.

    `sum(a * b) / (max(|a|, eps) * max(|b|, eps))`. Inputs `[a, b]`, each `(batch, ..., channels)`;
    output `(batch, ..., 1)`. Symmetric in its two inputs.

    Args:
        epsilon: lower clip of each vector norm.
    """

    def __init__(self, epsilon=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        a, b = inputs
        dot = ops.sum(a * b, axis=-1, keepdims=True)  # (batch, ..., 1)
        # max(sqrt(s), eps) == sqrt(max(s, eps^2)); the latter keeps the gradient finite at 0.
        floor = self.epsilon**2
        norm_a = ops.sqrt(ops.maximum(ops.sum(ops.square(a), axis=-1, keepdims=True), floor))
        norm_b = ops.sqrt(ops.maximum(ops.sum(ops.square(b), axis=-1, keepdims=True), floor))
        return dot / (norm_a * norm_b)  # (batch, ..., 1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
