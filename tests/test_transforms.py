"""Per-record v5 transforms: padding, each augmentation alone, montage, filter, crop."""

import pickle

import numpy as np
import pytest
import scipy.signal

from hms_keras import constants
from hms_keras.data import montage, transforms

PROBE = {name: i for i, name in enumerate(constants.EEG_PROBES)}


def _record(seed=0, frames=constants.PADDED_FRAMES):
    rng = np.random.default_rng(seed)
    signal = rng.normal(0.0, 0.1, (frames, 19)).astype(np.float32)  # (time, 19) mV
    cqf = rng.uniform(0.1, 1.0, (frames, 19)).astype(np.float32)  # (time, 19)
    return signal, cqf


def _stack_exchanged(bipolar):
    """(time, 18) with the LEFT_STACK and RIGHT_STACK channels exchanged."""
    out = bipolar.copy()
    out[:, list(constants.LEFT_STACK)] = bipolar[:, list(constants.RIGHT_STACK)]
    out[:, list(constants.RIGHT_STACK)] = bipolar[:, list(constants.LEFT_STACK)]
    return out


def test_pad_window_reflects_signal_and_zero_pads_cqf():
    signal, cqf = _record(frames=constants.WINDOW_FRAMES)
    window = np.stack([signal, cqf], axis=1)  # (2000, 2, 19)
    padded_signal, padded_cqf = transforms.pad_window(window)
    assert padded_signal.shape == padded_cqf.shape == (2048, 19)
    np.testing.assert_array_equal(padded_signal[:2000], signal)
    # reflect: frame 2000 + k mirrors frame 1998 - k (the last frame is not repeated)
    np.testing.assert_array_equal(padded_signal[2000:], signal[1998:1950:-1])
    np.testing.assert_array_equal(padded_cqf[:2000], cqf)
    assert not padded_cqf[2000:].any()


def test_swap_maps_left_chains_onto_right_chains():
    signal, cqf = _record()
    swapped_signal, swapped_cqf = transforms.swap_left_right(signal, cqf)
    np.testing.assert_array_equal(
        montage.bipolar_signal(swapped_signal), _stack_exchanged(montage.bipolar_signal(signal))
    )
    np.testing.assert_array_equal(montage.bipolar_mask(swapped_cqf), _stack_exchanged(montage.bipolar_mask(cqf)))


def test_swap_is_an_involution_and_keeps_midline():
    signal, cqf = _record()
    twice = transforms.swap_left_right(*transforms.swap_left_right(signal, cqf))
    np.testing.assert_array_equal(twice[0], signal)
    swapped, _ = transforms.swap_left_right(signal, cqf)
    np.testing.assert_array_equal(swapped[:, PROBE["Fp1"]], signal[:, PROBE["Fp2"]])
    np.testing.assert_array_equal(swapped[:, PROBE["Cz"]], signal[:, PROBE["Cz"]])


@pytest.mark.parametrize("seed", range(20))
def test_permutation_keeps_left_right_symmetry(seed):
    index = transforms.symmetric_permutation(np.random.default_rng(seed))
    assert sorted(index) == list(range(19))
    # the same pair order on both sides: swapping then permuting == permuting then swapping
    np.testing.assert_array_equal(index[montage.MIRROR_INDEX], montage.MIRROR_INDEX[index])
    assert set(index[montage.MIDLINE]) == set(montage.MIDLINE)
    assert set(index[montage.LEFT_PROBES]) == set(montage.LEFT_PROBES)


def test_permutation_moves_signal_and_cqf_together():
    signal, cqf = _record()
    rng_state = np.random.default_rng(3)
    index = transforms.symmetric_permutation(np.random.default_rng(3))
    permuted_signal, permuted_cqf = transforms.permute_channels(signal, cqf, rng_state)
    assert not np.array_equal(index, np.arange(19))
    np.testing.assert_array_equal(permuted_signal, signal[:, index])
    np.testing.assert_array_equal(permuted_cqf, cqf[:, index])


def test_permutations_cover_both_groups():
    rng = np.random.default_rng(0)
    indices = np.stack([transforms.symmetric_permutation(rng) for _ in range(200)])  # (200, 19)
    for group in (montage.LEFT_PROBES, montage.MIDLINE):
        # every probe of the group lands on every position of the group at some draw
        assert all(len(set(indices[:, p])) == len(group) for p in group)


@pytest.mark.parametrize("seed", range(20))
def test_cutout_zeros_at_most_four_segments_of_128_frames(seed):
    signal, _ = _record(seed)
    out = transforms.cutout(signal, np.random.default_rng(seed))
    zeroed = (out != signal).any(axis=1)  # (time,)
    assert zeroed.sum() <= 4 * 128
    assert not out[zeroed].any()  # zeroed on all channels
    np.testing.assert_array_equal(out[~zeroed], signal[~zeroed])
    runs = np.flatnonzero(np.diff(np.concatenate([[0], zeroed.astype(int), [0]])) == 1)
    assert len(runs) <= 4
    assert not np.shares_memory(out, signal)


def test_cutout_lengths_reach_the_limit():
    signal = np.ones((2048, 19), np.float32)
    rng = np.random.default_rng(0)
    counts = [(transforms.cutout(signal, rng) == 0).any(axis=1).sum() for _ in range(300)]
    assert max(counts) > 300  # only reachable with several segments of close to 128 frames


def test_augment_probabilities():
    signal, cqf = _record()
    rng = np.random.default_rng(0)
    swapped = transforms.swap_left_right(signal, cqf)[0]
    n, n_same, n_swapped, n_cut = 2000, 0, 0, 0
    for _ in range(n):
        out_signal, out_cqf = transforms.augment_monopolar(signal, cqf, rng)
        n_same += np.array_equal(out_signal, signal) and np.array_equal(out_cqf, cqf)
        n_swapped += np.array_equal(out_signal, swapped)
        n_cut += bool((out_signal == 0).all(axis=1).any())
    # untouched: no swap, no permutation, no (non-empty) cut-out = 0.5 * 0.7 * 0.7 ≈ 0.245
    assert 0.20 < n_same / n < 0.29
    # swap alone = 0.5 * 0.7 * 0.7
    assert 0.20 < n_swapped / n < 0.29
    assert 0.25 < n_cut / n < 0.35
    assert np.array_equal(signal, _record()[0])  # inputs untouched


def test_bipolar_signal_and_mask_follow_the_pairs():
    signal, cqf = _record()
    eeg, mask = montage.bipolar_signal(signal), montage.bipolar_mask(cqf)
    assert eeg.shape == mask.shape == (2048, 18)
    for channel, (anode, cathode) in enumerate(constants.BIPOLAR_PAIRS):
        np.testing.assert_array_equal(eeg[:, channel], signal[:, PROBE[anode]] - signal[:, PROBE[cathode]])
        np.testing.assert_array_equal(mask[:, channel], cqf[:, PROBE[anode]] * cqf[:, PROBE[cathode]])


def test_highpass_matches_scipy_lfilter_and_clips():
    rng = np.random.default_rng(0)
    eeg = (rng.normal(0.0, 0.6, (2048, 18)) + 3.0).astype(np.float32)  # offset + large swings
    out = transforms.highpass_clip(eeg)
    b, a = [0.945969, -1.891939, 0.945969], [1.0, -1.889018, 0.894859]
    expected = np.clip(scipy.signal.lfilter(b, a, eeg, axis=0), -1.0, 1.0)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.dtype == np.float32
    assert (np.abs(out) == 1.0).any() and (np.abs(out) < 1.0).any()
    # the 3 mV offset decays: a high-pass removes DC
    assert abs(out[1000:].mean()) < 0.05


def test_front_end_equals_full_filter_then_crop():
    signal, cqf = _record()
    signal = signal * 8.0  # big enough to clip
    inputs = transforms.front_end(signal, cqf)
    eeg, mask = montage.bipolar_signal(signal), montage.bipolar_mask(cqf)
    b, a = constants.HIGHPASS_B, constants.HIGHPASS_A
    expected = np.clip(scipy.signal.lfilter(b, a, eeg, axis=0), -1, 1)[744:1256]  # all 2048 frames
    assert inputs["eeg"].shape == inputs["mask"].shape == (512, 18)
    assert inputs["eeg"].dtype == inputs["mask"].dtype == np.float32
    np.testing.assert_allclose(inputs["eeg"], expected, atol=1e-6)
    np.testing.assert_array_equal(inputs["mask"], mask[744:1256])


def test_grain_wrappers_pickle_and_pass_labels():
    signal, cqf = _record()
    y = np.arange(16, dtype=np.float32).reshape(2, 8)
    record = {"signal": signal, "cqf": cqf, "y": y}
    augment = pickle.loads(pickle.dumps(transforms.AugmentMonopolar()))
    front = pickle.loads(pickle.dumps(transforms.V5FrontEnd()))
    augmented = augment.random_map(record, np.random.default_rng(1))
    expected = transforms.augment_monopolar(signal, cqf, np.random.default_rng(1))
    np.testing.assert_array_equal(augmented["signal"], expected[0])
    inputs, out_y = front.map(augmented)
    np.testing.assert_array_equal(out_y, y)
    assert set(inputs) == {"eeg", "mask"}
    assert set(front.map({"signal": signal, "cqf": cqf})) == {"eeg", "mask"}
