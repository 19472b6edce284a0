"""v5 EEG preprocessing and CQF (v5 reference §1.2-1.3) and spectrogram images (baseline "Input")."""

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hms_keras import constants
from hms_keras.data import preprocess
from hms_keras.data.hms import read_eeg
from hms_keras.data.preprocess import (
    block_nanmean,
    channel_quality_factor,
    drop_trailing_nan_rows,
    interpolate_interior_nulls,
    normalize_spectrogram,
    preprocess_eeg,
    spectrogram_window,
)

NAN = np.nan
PROBE_LEVELS_UV = 10.0 * np.arange(19)  # constant probe c = 10 c µV; their median is 90 µV
EKG_UV = 5000.0  # would move the median to 95 µV if EKG were (wrongly) included


def constant_raw(rows: int = 10_000) -> np.ndarray:
    """(rows, 20) float32 µV: probe c constant at 10 c µV, EKG constant at 5000 µV."""
    levels = np.append(PROBE_LEVELS_UV, EKG_UV).astype(np.float32)
    return np.tile(levels, (rows, 1))


# --- building blocks, hand-computed ---------------------------------------------------------


def test_interpolation_fills_interior_nulls_only():
    # Column 0: edge and interior nulls; 1: two interior runs; 2: data hidden under the mask is
    # ignored; 3: the NaN value in row 1 is an anchor, so the null next to it becomes NaN.
    x = np.array(
        [
            [NAN, 5.0, 0.0, 1.0],
            [1.0, NAN, 2.0, NAN],
            [NAN, NAN, 0.0, NAN],
            [NAN, 8.0, 0.0, 3.0],
            [4.0, NAN, 8.0, NAN],
            [NAN, 9.0, 0.0, 5.0],
        ]
    )
    nulls = np.array(
        [
            [1, 0, 1, 0],
            [0, 1, 0, 0],
            [1, 1, 1, 1],
            [1, 0, 1, 0],
            [0, 1, 0, 1],
            [1, 0, 1, 0],
        ],
        bool,
    )
    expected = np.array(
        [
            [NAN, 5.0, NAN, 1.0],
            [1.0, 6.0, 2.0, NAN],
            [2.0, 7.0, 4.0, NAN],
            [3.0, 8.0, 6.0, 3.0],
            [4.0, 8.5, 8.0, 4.0],
            [NAN, 9.0, NAN, 5.0],
        ]
    )
    masked = np.ma.MaskedArray(x, mask=nulls)
    result = interpolate_interior_nulls(masked)
    assert type(result) is np.ndarray and result.dtype == np.float64
    np.testing.assert_array_equal(result, expected)
    assert x[2, 2] == 0.0 and masked.mask[2, 2], "the input must not be modified"


def test_nan_values_are_not_interpolated():
    x = np.array([[1.0, NAN], [NAN, 2.0], [3.0, NAN], [NAN, 4.0]], np.float32)
    np.testing.assert_array_equal(interpolate_interior_nulls(x), x)  # a plain array has no nulls
    masked = np.ma.MaskedArray(x, mask=np.zeros(x.shape, bool))
    np.testing.assert_array_equal(interpolate_interior_nulls(masked), x)


def test_block_mean_ignores_nans_and_drops_the_partial_block():
    x = np.array(
        [
            [1.0, NAN], [2.0, NAN], [3.0, NAN], [4.0, NAN], [5.0, 6.0],
            [NAN, 1.0], [10.0, 2.0], [NAN, 3.0], [20.0, 4.0], [NAN, 5.0],
            [99.0, 99.0], [99.0, 99.0],  # partial third block: dropped
        ]
    )
    expected = np.array([[3.0, 6.0], [15.0, 3.0]])
    np.testing.assert_array_equal(block_nanmean(x, 5), expected)


def test_block_mean_of_an_all_nan_block_is_nan():
    x = np.full((5, 1), NAN)
    assert np.isnan(block_nanmean(x, 5)).all()


def test_drop_trailing_rows_with_any_nan():
    x = np.array([[NAN, 1.0], [1.0, 1.0], [1.0, NAN], [2.0, 2.0], [3.0, NAN], [NAN, 4.0]])
    np.testing.assert_array_equal(drop_trailing_nan_rows(x), x[:4])


def test_drop_trailing_rows_keeps_everything_without_a_complete_row():
    x = np.array([[1.0, NAN], [2.0, NAN]])  # reference: argmax over an all-False mask is 0
    np.testing.assert_array_equal(drop_trailing_nan_rows(x), x)


# --- preprocess_eeg, hand-computed --------------------------------------------------------------


def test_global_median_of_probes_is_removed_and_units_are_mv():
    signal, cqf = preprocess_eeg(constant_raw())
    assert signal.shape == cqf.shape == (2000, 19)
    assert signal.dtype == cqf.dtype == np.float16
    expected = (PROBE_LEVELS_UV - 90.0) / 1000.0  # one scalar (not per channel), EKG excluded
    np.testing.assert_allclose(signal, np.tile(expected, (2000, 1)), rtol=1e-3)


def test_block_mean_downsamples_200_to_40_hz():
    raw = constant_raw()
    raw[:, 0] = np.arange(10_000) % 5 * 100.0 - 200.0  # -200, -100, 0, 100, 200 -> block mean 0 µV
    signal, _ = preprocess_eeg(raw)
    np.testing.assert_allclose(signal[:, 0], (0.0 - 90.0) / 1000.0, rtol=1e-3)


def test_trailing_partial_block_is_dropped():
    raw = constant_raw(10_003)
    raw[-3:, :19] = 1e4  # would raise the last frame if the partial block were kept
    signal, _ = preprocess_eeg(raw)
    assert signal.shape == (2000, 19)
    np.testing.assert_allclose(signal[-1], (PROBE_LEVELS_UV - 90.0) / 1000.0, rtol=1e-3)


def ramp_raw() -> tuple[np.ndarray, np.ndarray]:
    """`constant_raw()` with probe 4 a ramp 40..50 µV, which keeps the median at 90 µV.

    Returns (raw (10000, 20) float32 µV, expected (2000,) probe 4 in mV without any gap).
    """
    raw = constant_raw()
    ramp = np.arange(10_000) * 0.001  # 0..10 µV: a gap filled by a line is not a flat fill
    raw[:, 4] = ramp + 40.0
    return raw, (ramp.reshape(2000, 5).mean(axis=1) + 40.0 - 90.0) / 1000.0


def test_interior_nulls_are_interpolated_and_edge_nulls_become_zero():
    raw, expected_ramp = ramp_raw()
    nulls = np.zeros(raw.shape, bool)
    nulls[3002:3498, 4] = True  # interior: linear interpolation restores the ramp
    nulls[:12, 7] = True  # leading edge: stays NaN, 0 at the end
    raw[:12, 7] = 1e4  # the data under the mask is ignored
    signal, _ = preprocess_eeg(np.ma.MaskedArray(raw, mask=nulls))
    np.testing.assert_allclose(signal[:, 4], expected_ramp, atol=4e-5)  # float16 step 3e-5
    np.testing.assert_array_equal(signal[:2, 7], 0.0)  # frames 0-1 were all null
    np.testing.assert_allclose(signal[2, 7], (70.0 - 90.0) / 1000.0, rtol=1e-3)  # 3 of 5 samples
    # The whole recording's median is removed: a leading gap is 0 mV, not -median.
    raw = constant_raw(10_500)  # 2100 frames
    nulls = np.zeros(raw.shape, bool)
    nulls[-100:, 3] = True  # trailing edge: NaN, so the last 20 frames are dropped
    signal, _ = preprocess_eeg(np.ma.MaskedArray(raw, mask=nulls))
    assert signal.shape == (2080, 19)


def test_nan_values_are_block_averaged_then_zero():
    raw, expected_ramp = ramp_raw()
    raw[3002:3498, 4] = NAN  # in a plain array NaN is a parquet NaN value, not a null
    signal, _ = preprocess_eeg(raw)
    expected = expected_ramp.copy()  # frames 600..699 hold rows 3000..3499
    expected[600] = (np.mean([3.000, 3.001]) + 40.0 - 90.0) / 1000.0  # rows 3000-3001 remain
    expected[601:699] = 0.0  # whole blocks of NaN
    expected[699] = (np.mean([3.498, 3.499]) + 40.0 - 90.0) / 1000.0  # rows 3498-3499 remain
    np.testing.assert_allclose(signal[:, 4], expected, atol=4e-5)


def test_null_gap_next_to_a_nan_value_gives_nan_then_zero():
    raw, expected_ramp = ramp_raw()
    nulls = np.zeros(raw.shape, bool)
    nulls[3000:3010, 4] = True  # frames 600-601, interpolated towards ...
    raw[3010, 4] = NAN  # ... a NaN value: NaN, as polars' arithmetic gives
    signal, _ = preprocess_eeg(np.ma.MaskedArray(raw, mask=nulls))
    expected = expected_ramp.copy()
    expected[600:602] = 0.0
    expected[602] = (np.mean([3.011, 3.012, 3.013, 3.014]) + 40.0 - 90.0) / 1000.0  # 4 of 5 samples
    np.testing.assert_allclose(signal[:, 4], expected, atol=4e-5)


def write_eeg_parquet(path, raw: np.ndarray, nulls: np.ndarray) -> None:
    """Write (time, 20) float32 µV with pyarrow, storing the samples where `nulls` is True as nulls."""
    columns = {name: pa.array(raw[:, k], mask=nulls[:, k]) for k, name in enumerate(constants.EEG_COLUMNS)}
    pq.write_table(pa.table(columns), path)


def test_parquet_nulls_are_interpolated_and_nan_values_are_not(tmp_path):
    raw, expected_ramp = ramp_raw()
    gap = np.zeros(raw.shape, bool)
    gap[3002:3498, 4] = True
    with_nan = raw.copy()
    with_nan[gap] = NAN
    write_eeg_parquet(tmp_path / "1.parquet", raw, nulls=gap)
    write_eeg_parquet(tmp_path / "2.parquet", with_nan, nulls=np.zeros(raw.shape, bool))
    null_signal, _ = preprocess_eeg(read_eeg(tmp_path / "1.parquet"))
    nan_signal, _ = preprocess_eeg(read_eeg(tmp_path / "2.parquet"))
    np.testing.assert_allclose(null_signal[:, 4], expected_ramp, atol=4e-5)
    expected = expected_ramp.copy()
    expected[600] = (3.0005 + 40.0 - 90.0) / 1000.0  # mean of rows 3000-3001, the rest is NaN
    expected[601:699] = 0.0
    expected[699] = (3.4985 + 40.0 - 90.0) / 1000.0  # mean of rows 3498-3499
    np.testing.assert_allclose(nan_signal[:, 4], expected, atol=4e-5)
    other = np.arange(19) != 4
    np.testing.assert_array_equal(null_signal[:, other], nan_signal[:, other])


def test_trailing_nan_frames_are_dropped_including_ekg():
    raw = constant_raw(10_500)  # 2100 frames
    raw[-100:, 3] = NAN  # last 20 frames of a probe
    signal, _ = preprocess_eeg(raw)
    assert signal.shape == (2080, 19)
    raw = constant_raw(10_500)
    raw[-52:, 19] = NAN  # EKG counts too: frames 2090..2099 are NaN-only blocks
    signal, _ = preprocess_eeg(raw)
    assert signal.shape == (2090, 19)


def test_short_recordings_are_zero_padded_to_2000_frames():
    raw = constant_raw()
    raw[-1000:, 3] = NAN  # leaves 1800 complete frames
    signal, cqf = preprocess_eeg(raw)
    assert signal.shape == cqf.shape == (2000, 19)
    np.testing.assert_allclose(signal[:1800, 0], -0.09, rtol=1e-3)
    np.testing.assert_array_equal(signal[1800:], 0.0)


def test_all_nan_ekg_keeps_the_recording():
    raw = constant_raw(10_500)
    raw[:, 19] = NAN
    signal, _ = preprocess_eeg(raw)
    assert signal.shape == (2100, 19)
    assert np.isfinite(signal).all()


def test_values_are_clipped_to_float16_range():
    raw = constant_raw()
    raw[:, 2] = 1e6  # µV
    signal, _ = preprocess_eeg(raw)
    np.testing.assert_allclose(signal[:, 2], 65.504, rtol=1e-3)  # clipped at 65504 µV, then mV
    assert np.isfinite(signal).all()


def test_rejects_wrong_shape_and_empty_probes():
    with pytest.raises(ValueError, match=r"\(time, 20\)"):
        preprocess_eeg(np.zeros((10_000, 19), np.float32))
    raw = constant_raw()
    raw[:, :19] = NAN
    with pytest.raises(ValueError, match="no finite value"):
        preprocess_eeg(raw)


def test_ten_minute_eeg_preprocesses_quickly():
    rng = np.random.default_rng(0)
    raw = rng.normal(0.0, 100.0, (120_000, 20)).astype(np.float32)
    start = time.perf_counter()
    signal, cqf = preprocess_eeg(raw)
    elapsed = time.perf_counter() - start
    assert signal.shape == cqf.shape == (24_000, 19)
    assert elapsed < 5.0, f"preprocess_eeg took {elapsed:.2f} s for a 10 minute EEG"


# --- channel quality factor -----------------------------------------------------------------


def slow_cqf(x: np.ndarray) -> np.ndarray:
    """Direct transcription of v5 reference §1.3 with pandas EWM and a full sort (test reference)."""
    frames, probes = x.shape
    distance = np.empty((frames, probes, probes))
    for p in range(probes):
        for q in range(probes):
            squared = pd.Series((x[:, p] - x[:, q]) ** 2)
            distance[:, p, q] = squared.ewm(halflife=13, adjust=True, min_periods=1).mean() + 1e-4
    top_k = np.sort(distance, axis=2)[:, :, 1:4].mean(axis=2)  # skip the first entry (itself)
    reference = np.sort(top_k, axis=1)[:, :3].mean(axis=1)
    gof = top_k / (reference[:, None] + 1e-4)
    return 1.0 / (1.0 + np.maximum(gof, 0.0) / 10.0)


@pytest.mark.parametrize("chunk_frames", [4096, 7])
def test_cqf_matches_the_direct_definition(monkeypatch, chunk_frames):
    monkeypatch.setattr(preprocess, "_CQF_CHUNK_FRAMES", chunk_frames)  # 7: state across chunks
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 0.1, (60, 19)) * rng.uniform(0.2, 3.0, 19)  # channels of different scale
    np.testing.assert_allclose(channel_quality_factor(x), slow_cqf(x), rtol=1e-10)


def test_cqf_of_identical_channels():
    cqf = channel_quality_factor(np.ones((50, 19)))
    np.testing.assert_allclose(cqf, 1.0 / (1.0 + 0.5 / 10.0))  # GOF = 1e-4 / (1e-4 + 1e-4)


def synthetic_montage(rng: np.random.Generator, frames: int = 2000) -> np.ndarray:
    """(frames, 19) mV: a shared 10 Hz rhythm (100 µV) plus independent 5 µV noise per probe."""
    t = np.arange(frames) / constants.SAMPLING_RATE_HZ
    shared = 0.1 * np.sin(2 * np.pi * 10 * t)[:, None]
    return shared + rng.normal(0.0, 0.005, (frames, 19))


@pytest.mark.parametrize("fault", ["flat", "noisy"])
def test_cqf_flags_the_bad_channel(fault):
    rng = np.random.default_rng(2)
    x = synthetic_montage(rng)
    bad = 6
    x[:, bad] = 0.0 if fault == "flat" else rng.normal(0.0, 0.2, len(x))
    cqf = channel_quality_factor(x)[100:]  # after the EWM warm-up
    mean_cqf = cqf.mean(axis=0)  # (19,)
    assert np.argmin(mean_cqf) == bad
    assert mean_cqf[bad] < 0.5
    assert np.delete(mean_cqf, bad).min() > 0.8
    assert (cqf.argmin(axis=1) == bad).all()


# --- spectrogram images ---------------------------------------------------------------------


def test_spectrogram_window_cuts_transposes_and_fills_nan():
    rows = np.arange(400, dtype=np.float32)[:, None] * 1000 + np.arange(400, dtype=np.float32)  # (T, 400)
    rows[15, 7] = NAN
    image = spectrogram_window(rows, 21.0)  # 21 // 2 = row 10
    assert image.shape == (400, 300) and image.dtype == np.float32
    np.testing.assert_array_equal(image[:, 0], rows[10])
    np.testing.assert_array_equal(image[3, 299], rows[309, 3])
    assert image[7, 5] == 0.0


def test_spectrogram_window_of_a_test_clip_and_out_of_range():
    values = np.ones((300, 400), np.float32)
    assert spectrogram_window(values, 0.0).shape == (400, 300)
    with pytest.raises(ValueError, match="does not fit"):
        spectrogram_window(values, 2.0)


def test_normalize_spectrogram_hand_computed():
    image = np.full((400, 300), np.e**2, np.float32)
    image[0, 0] = 0.0  # -> e^-4 -> -4
    image[0, 1] = np.e**12  # -> e^8 -> 8
    z = np.full(400 * 300, 2.0)
    z[0], z[1] = -4.0, 8.0
    expected = ((z - z.mean()) / (z.std() + 1e-6)).reshape(400, 300)
    result = normalize_spectrogram(image)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
