"""Batch-level time-segment cutmix: one segment from the reversed batch, labels mixed with λ."""

import pickle

import numpy as np
import pytest

from hms_keras.data import cutmix


def _batch(batch_size=6, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {
        "eeg": rng.normal(size=(batch_size, 512, 18)).astype(np.float32),
        "mask": rng.uniform(0.1, 1.0, (batch_size, 512, 18)).astype(np.float32),
    }
    probs = rng.dirichlet(np.ones(6), size=(batch_size, 2))  # (B, 2, 6)
    weights = rng.uniform(0.1, 1.0, (batch_size, 2, 1))  # (B, 2, 1)
    threshold = np.full((batch_size, 2, 1), 0.3)
    y = np.concatenate([probs, weights, threshold], axis=-1).astype(np.float32)  # (B, 2, 8)
    return inputs, y


def _changed_frames(before, after):
    """Frames (time,) where any sample or channel differs."""
    return np.flatnonzero((before != after).any(axis=(0, 2)))


def test_cutmix_batch_replaces_one_segment_from_the_reversed_batch():
    inputs, y = _batch()
    mixed, _ = cutmix.cutmix_batch(inputs, y, lam=0.7, start=100, length=153)
    for name in ("eeg", "mask"):
        np.testing.assert_array_equal(_changed_frames(inputs[name], mixed[name]), np.arange(100, 253))
        np.testing.assert_array_equal(mixed[name][:, 100:253], inputs[name][::-1, 100:253])
        np.testing.assert_array_equal(mixed[name][:, :100], inputs[name][:, :100])
    assert not np.shares_memory(mixed["eeg"], inputs["eeg"])


def test_cutmix_batch_mixes_probs_and_weights_with_lambda():
    inputs, y = _batch()
    _, mixed_y = cutmix.cutmix_batch(inputs, y, lam=0.7, start=0, length=153)
    np.testing.assert_allclose(mixed_y[..., :7], 0.7 * y[..., :7] + 0.3 * y[::-1, :, :7], rtol=1e-6)
    np.testing.assert_allclose(mixed_y[..., :6].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(mixed_y[..., 7], y[..., 7])  # threshold untouched
    assert not np.array_equal(mixed_y, y)


@pytest.mark.parametrize("seed", range(40))
def test_random_cutmix_segment_length_follows_lambda(seed):
    inputs, y = _batch(seed=seed)
    y = y.astype(np.float64)  # recovers λ from the mixed weights to ~1e-15
    mixed, mixed_y = cutmix.random_cutmix(inputs, y, np.random.default_rng(seed))
    if mixed is inputs:
        assert mixed_y is y
        return
    changed = _changed_frames(inputs["eeg"], mixed["eeg"])
    np.testing.assert_array_equal(changed, _changed_frames(inputs["mask"], mixed["mask"]))
    if len(changed):
        assert changed[-1] - changed[0] + 1 == len(changed)  # one contiguous segment
    # recover λ from the weights (head 0 of sample 0 and its partner B-1)
    w, w_partner = y[0, 0, 6], y[-1, 0, 6]
    lam = (mixed_y[0, 0, 6] - w_partner) / (w - w_partner)
    assert len(changed) == int(512 * (1 - lam))
    np.testing.assert_allclose(mixed_y[..., :7], lam * y[..., :7] + (1 - lam) * y[::-1, :, :7], rtol=1e-12)
    np.testing.assert_allclose(mixed_y[..., :6].sum(-1), 1.0, rtol=1e-6)


def test_random_cutmix_rate_and_lambda_distribution():
    inputs, y = _batch(batch_size=2)
    rng = np.random.default_rng(0)
    lams = []
    for _ in range(2000):
        mixed, mixed_y = cutmix.random_cutmix(inputs, y, rng)
        if mixed is not inputs:
            lams.append((mixed_y[0, 0, 6] - y[1, 0, 6]) / (y[0, 0, 6] - y[1, 0, 6]))
    assert 0.45 < len(lams) / 2000 < 0.55
    lams = np.array(lams)
    # Beta(0.2, 0.2) is U-shaped with mean 0.5: most mass near 0 and 1
    assert abs(lams.mean() - 0.5) < 0.05
    assert ((lams < 0.1) | (lams > 0.9)).mean() > 0.5


def test_grain_wrapper_pickles_and_matches_the_function():
    inputs, y = _batch()
    transform = pickle.loads(pickle.dumps(cutmix.CutMix()))
    for seed in range(6):
        got_inputs, got_y = transform.random_map((inputs, y), np.random.default_rng(seed))
        want_inputs, want_y = cutmix.random_cutmix(inputs, y, np.random.default_rng(seed))
        np.testing.assert_array_equal(got_inputs["eeg"], want_inputs["eeg"])
        np.testing.assert_array_equal(got_y, want_y)
