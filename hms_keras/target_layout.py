"""The v5 two-head target `y`: (batch, 2 heads, 8) float32, written by the input pipeline, read by the loss.

Head 0 holds the label row's own vote distribution, head 1 its EEG's pooled one (v5 reference §2). Per
head the 8 columns are the 6 class probabilities (constants.CLASSES order), the sample weight
(votes / 28) and the min-weight threshold in force, so the threshold can change per batch without
recompiling the loss. `labels.v5_targets` builds y from label rows, the pipeline sets the threshold
(`with_threshold`), cutmix mixes the `MIXED` columns and `losses.VoteWeightedKLDivergence` reads
them (`unpack`). Numpy and plain indexing only: `unpack` also takes Keras tensors of every backend.
"""

import numpy as np

from hms_keras import constants

HEADS = 2  # 0 = the label row, 1 = the EEG's pooled label
PROBABILITIES = slice(0, constants.NUM_CLASSES)  # columns 0..5
WEIGHT_COLUMN = constants.NUM_CLASSES  # 6
THRESHOLD_COLUMN = constants.NUM_CLASSES + 1  # 7
COLUMNS = constants.NUM_CLASSES + 2  # 8
MIXED = slice(0, THRESHOLD_COLUMN)  # probabilities and weight: what mixing two samples mixes


def pack(probabilities: np.ndarray, weights: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """y (rows, 2, 8) float32 from probabilities (rows, 2, 6) and weights (rows, 2), with every
    head's threshold column set to `threshold`."""
    y = np.empty((len(probabilities), HEADS, COLUMNS), np.float32)  # (rows, 2, 8)
    y[..., PROBABILITIES] = probabilities
    y[..., WEIGHT_COLUMN] = weights
    y[..., THRESHOLD_COLUMN] = threshold
    return y


def with_threshold(y: np.ndarray, threshold: float) -> np.ndarray:
    """Copy of y (B, heads, 8) with the min-weight threshold column set to `threshold`."""
    y = y.copy()
    y[..., THRESHOLD_COLUMN] = threshold
    return y


def unpack(y):
    """(probabilities (B, 2, 6), weights (B, 2), threshold (B,)) of y (B, 2, 8); the threshold is
    head 0's (the pipeline writes the same one into both heads). Numpy array or Keras tensor."""
    return y[..., PROBABILITIES], y[..., WEIGHT_COLUMN], y[:, 0, THRESHOLD_COLUMN]
