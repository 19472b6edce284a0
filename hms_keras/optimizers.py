"""Optimiser and learning-rate schedules with PyTorch semantics, for faithful reproduction.

Keras' Adam adds epsilon to the *non bias-corrected* sqrt(v); PyTorch adds it to the bias-corrected
one. With the v5 recipe's large epsilon (1e-4) the difference is visible early in training, so
`TorchAdamW` rescales epsilon by sqrt(1 - beta_2^t), which makes the two updates identical:

    lr * m_hat / (sqrt(v_hat) + eps)
      = [lr * sqrt(1 - b2^t) / (1 - b1^t)] * m / (sqrt(v) + eps * sqrt(1 - b2^t))

Weight decay is decoupled and applied before the moment update, to every variable, as in
`torch.optim.AdamW`.
"""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="hms_keras")
class TorchAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` whose epsilon acts like `torch.optim.AdamW`'s (see module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("TorchAdamW does not implement amsgrad.")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), step)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        epsilon = self.epsilon * ops.sqrt(1 - beta_2_power)
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), epsilon)))


@keras.saving.register_keras_serializable(package="hms_keras")
class OneCycleFromPeak(keras.optimizers.schedules.LearningRateSchedule):
    """`torch.optim.lr_scheduler.OneCycleLR` with `pct_start=0` (learning rate only).

    With no warm-up phase the schedule is a single cosine from `max_learning_rate` to
    `max_learning_rate / div_factor / final_div_factor`; torch's phase bookkeeping makes step s
    sit at fraction (s + 1) / total_steps of it. (OneCycleLR also cycles Adam's beta_1; that is not
    reproduced here.)
    """

    def __init__(self, max_learning_rate, total_steps, div_factor=25.0, final_div_factor=0.4):
        self.max_learning_rate = max_learning_rate
        self.total_steps = total_steps
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor

    def __call__(self, step):
        min_learning_rate = self.max_learning_rate / self.div_factor / self.final_div_factor
        fraction = ops.minimum((ops.cast(step, "float32") + 1.0) / self.total_steps, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * fraction))
        return min_learning_rate + (self.max_learning_rate - min_learning_rate) * cosine

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }
