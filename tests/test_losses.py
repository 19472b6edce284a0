"""The KL losses against a direct numpy computation, alone and through `model.compile`."""

import keras
import numpy as np
import pytest

from hms_keras.losses import KLDivergenceFromLogits, VoteWeightedKLDivergence


def _numpy_kl(probs, logits):
    log_q = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    safe = np.where(probs > 0, probs, 1.0)
    return np.where(probs > 0, probs * (np.log(safe) - log_q), 0.0).sum(-1)


def _numpy_vote_weighted(y_true, logits):
    """v5 reference §6, written out: sum_b m_b mean_k(w_bk KL_bk) / mean_k(sum_b m_b w_bk), 0 if none kept."""
    probs, weight, threshold = y_true[..., :6], y_true[..., 6], y_true[:, 0, 7]
    kl = _numpy_kl(probs, logits)  # (batch, 2)
    kept = weight[:, 0] >= threshold  # (batch,)
    numerator = sum((weight[b] * kl[b]).mean() for b in range(len(kl)) if kept[b])
    denominator = np.mean([weight[kept, k].sum() for k in range(2)])
    return numerator / denominator if kept.any() else 0.0


def _targets(rng, batch, threshold):
    probs = rng.dirichlet(np.full(6, 0.4), (batch, 2))
    probs[0, 0] = [0.0, 0.5, 0.0, 0.5, 0.0, 0.0]  # zero-vote classes
    probs[1, 1] = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    weight = rng.uniform(0.05, 1.0, (batch, 2))
    weight[2, 0] = threshold  # exactly at the threshold: kept
    thresholds = np.full((batch, 2), threshold)
    return np.concatenate([probs, weight[..., None], thresholds[..., None]], axis=-1).astype("float32")


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.6])
def test_vote_weighted_kl_matches_numpy(threshold):
    rng = np.random.default_rng(int(threshold * 10))
    y_true = _targets(rng, batch=9, threshold=threshold)
    logits = rng.normal(0, 2, (9, 2, 6)).astype("float32")
    if threshold > 0:
        assert 0 < (y_true[:, 0, 6] >= threshold).sum() < 9  # the mask drops some samples, not all
    expected = _numpy_vote_weighted(y_true.astype("float64"), logits.astype("float64"))
    np.testing.assert_allclose(float(VoteWeightedKLDivergence()(y_true, logits)), expected, rtol=1e-5)


def test_vote_weighted_kl_is_zero_not_nan_when_nothing_is_kept():
    rng = np.random.default_rng(1)
    y_true = _targets(rng, batch=4, threshold=0.3)
    y_true[..., 7] = 2.0  # above every weight
    assert float(VoteWeightedKLDivergence()(y_true, rng.normal(size=(4, 2, 6)).astype("float32"))) == 0.0


def test_vote_weighted_kl_per_sample_shares_sum_to_the_loss():
    rng = np.random.default_rng(2)
    y_true = _targets(rng, batch=5, threshold=0.3)
    logits = rng.normal(size=(5, 2, 6)).astype("float32")
    shares = np.asarray(VoteWeightedKLDivergence(reduction=None)(y_true, logits))
    assert shares.shape == (5,)
    np.testing.assert_allclose(shares.sum(), float(VoteWeightedKLDivergence()(y_true, logits)), rtol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        VoteWeightedKLDivergence(reduction="sum_over_batch_size")


def _identity_model(shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Activation("linear")(inputs))


def test_compiled_vote_weighted_kl_gives_the_same_number():
    rng = np.random.default_rng(3)
    y_true = _targets(rng, batch=8, threshold=0.3)
    logits = rng.normal(size=(8, 2, 6)).astype("float32")
    model = _identity_model((2, 6))
    model.compile(loss=VoteWeightedKLDivergence())
    expected = _numpy_vote_weighted(y_true.astype("float64"), logits.astype("float64"))
    np.testing.assert_allclose(model.test_on_batch(logits, y_true), expected, rtol=1e-5)


def test_kl_from_logits_matches_numpy_alone_and_compiled():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.full(6, 0.4), 7).astype("float32")
    probs[0] = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    logits = rng.normal(0, 2, (7, 6)).astype("float32")
    expected = _numpy_kl(probs.astype("float64"), logits.astype("float64")).mean()
    np.testing.assert_allclose(float(KLDivergenceFromLogits()(probs, logits)), expected, rtol=1e-5)
    model = _identity_model((6,))
    model.compile(loss=KLDivergenceFromLogits())
    np.testing.assert_allclose(model.test_on_batch(logits, probs), expected, rtol=1e-5)


def test_losses_deserialize_by_registered_name():
    for loss in (VoteWeightedKLDivergence(), KLDivergenceFromLogits()):
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()
