"""KL-divergence losses from logits, for vote-distribution targets (keras.ops only)."""

import keras
from keras import ops

from hms_keras import target_layout


def kl_from_logits(probs, logits):
    """KL(probs || softmax(logits)) along the last axis, with 0 log 0 = 0 (PyTorch `KLDivLoss`).

    `probs`, `logits`: `(..., classes)` -> `(...)`.
    """
    log_q = ops.log_softmax(logits, axis=-1)  # (..., classes)
    positive = probs > 0
    log_p = ops.log(ops.where(positive, probs, 1.0))  # (..., classes); 0 where probs == 0
    return ops.sum(ops.where(positive, probs * (log_p - log_q), 0.0), axis=-1)  # (...)


@keras.saving.register_keras_serializable(package="hms_keras")
class KLDivergenceFromLogits(keras.losses.Loss):
    """Mean over the batch of KL(y_true || softmax(y_pred)).

    `y_true` `(batch, classes)` probabilities (rows sum to 1), `y_pred` `(batch, classes)` logits.
    Unlike `keras.losses.KLDivergence`, which expects probabilities, this takes raw logits.
    """

    def __init__(self, name="kl_divergence_from_logits", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        return kl_from_logits(y_true, y_pred)  # (batch,)


@keras.saving.register_keras_serializable(package="hms_keras")
class VoteWeightedKLDivergence(keras.losses.Loss):
    """The v5 two-head loss: vote-weighted KL, normalised by the kept weight, min-weight filter.

    `y_true` `(batch, heads=2, 8)` in the `target_layout` layout: per head the class probabilities,
    the sample weight (votes / 28) of that head's label and the min-weight threshold in force (0
    keeps all). `y_pred` `(batch, 2, 6)` logits. With KL_bk the KL of head k of sample b, w_bk its weight and
    m_b = [w_b0 >= threshold_b] (v5 reference §6):

        loss = sum_b m_b * mean_k(w_bk * KL_bk) / mean_k(sum_b m_b * w_bk)

    and 0 when no sample is kept. Shapes stay static (masking, no gathering), so the threshold can
    change per batch without recompiling.

    Keras reduction: `call` returns each sample's share of the batch loss (its numerator term
    already divided by the batch-level normaliser), so the only consistent reduction is `"sum"`
    (the default, what `model.compile(loss=...)` uses); `None` returns the per-sample shares.
    Do not pass `sample_weight`: the weights travel in `y_true`.
    """

    def __init__(self, name="vote_weighted_kl_divergence", reduction="sum", dtype=None):
        if reduction not in ("sum", None):
            raise ValueError(
                f"VoteWeightedKLDivergence: reduction must be 'sum' or None (its per-sample values "
                f"are already normalised by the batch weight), got {reduction!r}"
            )
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")  # (batch, 2, 8)
        y_pred = ops.cast(y_pred, "float32")  # (batch, 2, 6)
        probs, weight, threshold = target_layout.unpack(y_true)  # (batch, 2, 6), (batch, 2), (batch,)
        kept = ops.cast(weight[:, 0] >= threshold, "float32")  # (batch,)
        per_sample = ops.mean(weight * kl_from_logits(probs, y_pred), axis=-1)  # (batch,)
        normaliser = ops.mean(ops.sum(kept[:, None] * weight, axis=0))  # ()
        safe_normaliser = ops.where(normaliser > 0, normaliser, 1.0)  # numerators are all 0 otherwise
        return kept * per_sample / safe_normaliser  # (batch,)
