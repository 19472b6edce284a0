"""Batch-level time-segment cutmix of the v5 model (v5 reference §5.2), moved from the model into
the input pipeline (v5 reference §10.7).

A batch is `(inputs, y)`: inputs {"eeg": (B, time, 18) float32 mV, "mask": (B, time, 18)
float32}, y (B, 2, 8) float32 in the `target_layout` layout. Sample i takes one time segment of
sample B-1-i (the batch reversed) and the probabilities and weights of both heads mix with λ;
the threshold column is left alone.
"""

import grain
import numpy as np

from hms_keras.target_layout import MIXED

P_CUTMIX = 0.5
BETA_ALPHA = 0.2


def cutmix_batch(
    inputs: dict[str, np.ndarray], y: np.ndarray, lam: float, start: int, length: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Replace frames [start, start+length) of every input array with those of the reversed
    batch and mix y's probabilities and weights as lam * y + (1 - lam) * y_reversed.

    inputs: {name: (B, time, channels)}; y: (B, heads, 8). Returns new arrays.
    """
    mixed_inputs = {}
    for name, x in inputs.items():
        x = x.copy()  # (B, time, channels)
        x[:, start : start + length] = inputs[name][::-1, start : start + length]
        mixed_inputs[name] = x
    mixed_y = y.copy()  # (B, heads, 8)
    own, partner = y[..., MIXED], y[::-1, :, MIXED]  # (B, heads, 7)
    mixed_y[..., MIXED] = lam * own + (1.0 - lam) * partner
    return mixed_inputs, mixed_y


def random_cutmix(
    inputs: dict[str, np.ndarray], y: np.ndarray, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """With probability 0.5: λ ~ Beta(0.2, 0.2), cut length int(time * (1 - λ)), start
    ~ U{0..time-length}, then `cutmix_batch`. Otherwise the batch is returned unchanged."""
    if rng.random() >= P_CUTMIX:
        return inputs, y
    lam = float(rng.beta(BETA_ALPHA, BETA_ALPHA))
    time = inputs["eeg"].shape[1]
    length = int(time * (1.0 - lam))
    start = int(rng.integers(0, time - length + 1))
    return cutmix_batch(inputs, y, lam, start, length)


class CutMix(grain.transforms.RandomMap):
    """Grain wrapper of `random_cutmix` on a batch `(inputs, y)`."""

    def random_map(self, element: tuple, rng: np.random.Generator) -> tuple:
        inputs, y = element
        return random_cutmix(inputs, y, rng)
