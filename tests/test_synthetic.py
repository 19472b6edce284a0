"""The synthetic dataset: exact Kaggle layout, realistic structure, learnable class patterns, determinism."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.signal

from hms_keras import constants
from hms_keras.data import hms, synthetic
from hms_keras.data.synthetic import plan, render, writer

TRAIN_COLUMNS = [
    "eeg_id", "eeg_sub_id", "eeg_label_offset_seconds", "spectrogram_id", "spectrogram_sub_id",
    "spectrogram_label_offset_seconds", "label_id", "patient_id", "expert_consensus", *constants.VOTE_COLUMNS,
]
LEFT_CHAINS = list(range(8))  # LL + LP bipolar pairs
RIGHT_CHAINS = list(range(10, 18))  # RP + RL bipolar pairs
ANODES = [constants.EEG_COLUMNS.index(a) for a, _ in constants.BIPOLAR_PAIRS]
CATHODES = [constants.EEG_COLUMNS.index(c) for _, c in constants.BIPOLAR_PAIRS]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "data"
    return synthetic.generate_dataset(out, n_eegs=12, seed=3, n_test_eegs=2)


@pytest.fixture(scope="module")
def train(dataset):
    return pd.read_csv(dataset / "train.csv")


def _eeg(dataset, split, eeg_id):
    return pd.read_parquet(dataset / f"{split}_eegs" / f"{eeg_id}.parquet")


def _spectrogram(dataset, split, spectrogram_id):
    return pd.read_parquet(dataset / f"{split}_spectrograms" / f"{spectrogram_id}.parquet")


# --- layout --------------------------------------------------------------------------------


def test_layout_has_the_kaggle_files_and_nothing_else(dataset, train):
    assert sorted(p.name for p in dataset.iterdir()) == [
        "sample_submission.csv", "test.csv", "test_eegs", "test_spectrograms", "train.csv", "train_eegs",
        "train_spectrograms"]
    test = pd.read_csv(dataset / "test.csv")
    assert sorted(p.stem for p in (dataset / "train_eegs").iterdir()) == sorted(map(str, train.eeg_id.unique()))
    assert sorted(p.stem for p in (dataset / "train_spectrograms").iterdir()) == sorted(
        map(str, train.spectrogram_id.unique()))
    assert sorted(p.stem for p in (dataset / "test_eegs").iterdir()) == sorted(map(str, test.eeg_id))
    assert sorted(p.stem for p in (dataset / "test_spectrograms").iterdir()) == sorted(map(str, test.spectrogram_id))


def test_csv_columns_and_dtypes(dataset, train):
    assert list(train.columns) == TRAIN_COLUMNS
    for column in TRAIN_COLUMNS:
        if column == "expert_consensus":
            assert pd.api.types.is_string_dtype(train[column])
            continue
        expected = "float64" if column.endswith("_offset_seconds") else "int64"
        assert train[column].dtype == expected, column
    assert set(train.expert_consensus) <= set(constants.CONSENSUS_NAMES)
    test = pd.read_csv(dataset / "test.csv")
    assert list(test.columns) == ["spectrogram_id", "eeg_id", "patient_id"]
    assert (test.dtypes == "int64").all()
    submission = pd.read_csv(dataset / "sample_submission.csv")
    assert list(submission.columns) == ["eeg_id", *constants.VOTE_COLUMNS]
    assert submission.eeg_id.tolist() == test.eeg_id.tolist()
    np.testing.assert_allclose(submission[list(constants.VOTE_COLUMNS)].sum(axis=1), 1.0, rtol=1e-5, atol=1e-8)


def test_ids_look_like_the_real_ones(dataset, train):
    test = pd.read_csv(dataset / "test.csv")
    assert train.label_id.is_unique
    assert train.eeg_id.between(10**5, 2**32 - 1).all() and train.eeg_id.max() > 10**8
    assert train.spectrogram_id.between(10**5, 2**31 - 1).all()
    assert train.patient_id.between(1, 2**16 - 1).all()
    assert train.label_id.between(1, 2**32 - 1).all()
    assert not set(test.eeg_id) & set(train.eeg_id)
    assert not set(test.spectrogram_id) & set(train.spectrogram_id)
    assert not set(test.patient_id) & set(train.patient_id)
    eegs_per_patient = train.groupby("patient_id").eeg_id.nunique()
    assert len(eegs_per_patient) >= 5 and eegs_per_patient.max() >= 2


def test_eeg_parquet_columns_dtypes_and_physiology(dataset, train):
    for eeg_id in train.eeg_id.unique():
        frame = _eeg(dataset, "train", eeg_id)
        assert list(frame.columns) == list(constants.EEG_COLUMNS)
        assert (frame.dtypes == "float32").all()
        assert len(frame) % constants.RAW_SAMPLING_RATE_HZ == 0 and len(frame) >= 10_000
        assert frame.iloc[[0, -1]].notna().all().all()  # NaN gaps are interior only
        values = frame.to_numpy()
        probes_std = np.nanmedian(np.nanstd(values[:, :19], axis=0))
        assert 5 < probes_std < 200  # microvolts
        assert np.nanstd(values[:, 19]) > 2.5 * probes_std  # the EKG channel is large


def test_posterior_alpha_peaks_near_10_hz(dataset, train):
    """Where a session has alpha, O1/O2 show a 8.5-11 Hz peak: the files really are 200 Hz."""
    peaks = []
    for eeg_id in train.eeg_id.unique():
        occipital = _eeg(dataset, "train", eeg_id)[["O1", "O2"]].fillna(0.0).to_numpy()
        freq, power = scipy.signal.welch(occipital, fs=200, nperseg=1024, axis=0)
        band = (freq > 6) & (freq < 14)
        peaks.append(freq[band][power[band].sum(axis=1).argmax()])
    assert np.mean((np.array(peaks) >= 8.3) & (np.array(peaks) <= 11.2)) > 0.3


def test_spectrogram_parquet_columns_time_and_values(dataset, train):
    for spectrogram_id in train.spectrogram_id.unique():
        frame = _spectrogram(dataset, "train", spectrogram_id)
        assert list(frame.columns) == ["time", *constants.SPECTROGRAM_COLUMNS]
        assert frame["time"].dtype == "int64"
        assert (frame.drop(columns="time").dtypes == "float32").all()
        np.testing.assert_array_equal(frame["time"], np.arange(1, 2 * len(frame), 2))
        values = frame.drop(columns="time").to_numpy()
        finite = values[np.isfinite(values)]
        assert (finite > 0).all()
        assert -2 < np.log(np.median(finite)) < 5  # real values span ~e^-4 .. e^8
        assert np.log(np.percentile(finite, 0.1)) > -6 and np.log(np.percentile(finite, 99)) < 10


def test_spectrogram_is_the_chain_mean_of_bipolar_psd(dataset):
    """Rows whose 5.12 s frame lies inside a test EEG equal scipy's Hann PSD of that EEG, chain-averaged."""
    test = pd.read_csv(dataset / "test.csv")
    eeg = _eeg(dataset, "test", test.eeg_id[0]).to_numpy()
    spectrogram = _spectrogram(dataset, "test", test.spectrogram_id[0]).drop(columns="time").to_numpy()
    # The EEG is spectrogram seconds [275, 325); row r is centred on second 2r + 1.
    rows = np.arange(139, 161)
    starts = (2 * rows + 1 - 275) * 200 - 512
    expected = []
    for chain in constants.SPECTROGRAM_CHAINS:
        pairs = constants.SPECTROGRAM_CHAIN_PAIRS[chain]
        bipolar = eeg[:, [ANODES[p] for p in pairs]] - eeg[:, [CATHODES[p] for p in pairs]]  # (10000, 4)
        frames = np.stack([bipolar[s:s + 1024] for s in starts])  # (rows, 1024, 4)
        _, psd = scipy.signal.periodogram(frames, fs=200, window="hann", detrend=False, axis=1)
        expected.append(psd[:, 3:103].mean(axis=2))  # (rows, 100)
    expected = np.concatenate(expected, axis=1)  # (rows, 400)
    finite = np.isfinite(expected).all(axis=1)
    np.testing.assert_allclose(spectrogram[rows][finite], expected[finite], rtol=1e-4, atol=1e-5)


# --- structure of the labels ---------------------------------------------------------------


def test_sub_ids_and_offsets_are_consistent(train):
    for _, rows in train.groupby("eeg_id"):
        assert rows.eeg_sub_id.tolist() == list(range(len(rows)))
        assert rows.spectrogram_id.nunique() == 1 and rows.patient_id.nunique() == 1
        shift = rows.spectrogram_label_offset_seconds - rows.eeg_label_offset_seconds
        assert shift.nunique() == 1
    for _, rows in train.groupby("spectrogram_id"):
        assert sorted(rows.spectrogram_sub_id) == list(range(len(rows)))
    assert (train.eeg_label_offset_seconds % 2 == 0).all() and (train.spectrogram_label_offset_seconds >= 0).all()
    assert (train.groupby("eeg_id").size() > 1).any()


def test_label_windows_fit_the_recordings(dataset, train):
    for _, row in train.iterrows():
        eeg_rows = pq.ParquetFile(dataset / "train_eegs" / f"{row.eeg_id}.parquet").metadata.num_rows
        spectrogram_rows = pq.ParquetFile(
            dataset / "train_spectrograms" / f"{row.spectrogram_id}.parquet").metadata.num_rows
        assert 200 * row.eeg_label_offset_seconds + 10_000 <= eeg_rows
        assert row.spectrogram_label_offset_seconds // 2 + 300 <= spectrogram_rows


def test_test_split_is_50_s_eegs_and_300_row_spectrograms(dataset):
    test = pd.read_csv(dataset / "test.csv")
    assert len(test) == 2
    for row in test.itertuples():
        assert pq.ParquetFile(dataset / "test_eegs" / f"{row.eeg_id}.parquet").metadata.num_rows == 10_000
        assert pq.ParquetFile(
            dataset / "test_spectrograms" / f"{row.spectrogram_id}.parquet").metadata.num_rows == 300


@pytest.fixture(scope="module")
def large_plan():
    """Label rows and sessions of 3,000 EEGs, planned without rendering any signal."""
    return plan._plan_dataset(seed=11, n_eegs=3000, n_test_eegs=2)


def test_votes_come_in_two_populations_and_consensus_is_the_argmax(large_plan):
    train = large_plan[0]
    votes = train[list(constants.VOTE_COLUMNS)].to_numpy()
    totals = votes.sum(axis=1)
    assert set(np.unique(totals)) <= set(range(1, 8)) | set(range(10, 29))
    assert 0.25 < np.mean(totals >= 10) < 0.6
    assert totals.max() >= 20 and totals.min() == 1
    consensus = np.array(constants.CONSENSUS_NAMES)[votes.argmax(axis=1)]
    assert (consensus == train.expert_consensus).all()
    assert np.mean(votes.max(axis=1) < totals) > 0.3  # raters disagree often


def test_overlapping_windows_share_their_votes(large_plan):
    train = large_plan[0]
    previous = train.groupby("eeg_id").shift(1)
    overlapping = (train.eeg_label_offset_seconds - previous.eeg_label_offset_seconds) < 50
    same_votes = (train[list(constants.VOTE_COLUMNS)] == previous[list(constants.VOTE_COLUMNS)]).all(axis=1)
    assert overlapping.sum() > 1000
    assert same_votes[overlapping].mean() > 0.9


def test_consensus_shares_are_close_to_the_real_ones(large_plan):
    shares = large_plan[0].expert_consensus.value_counts(normalize=True)
    for name, real in zip(constants.CONSENSUS_NAMES, synthetic.REAL_CONSENSUS_SHARES, strict=True):
        assert abs(shares[name] - real) < 0.025, name


def test_every_label_window_lies_in_one_segment_of_its_class(large_plan):
    """The dominant pattern fills each labelled window; it is the consensus class for most rows."""
    train, _, sessions = large_plan
    segments = {s.spectrogram_id: s.segments for s in sessions}
    starts = {e.eeg_id: e.start_s for s in sessions for e in s.eegs}
    matches = []
    for row in train.itertuples():
        first = starts[row.eeg_id] + row.eeg_label_offset_seconds
        inside = [s for s in segments[row.spectrogram_id] if s.start_s <= first and first + 50 <= s.end_s]
        assert len(inside) == 1
        matches.append(constants.CONSENSUS_NAMES[inside[0].pattern] == row.expert_consensus)
    assert np.mean(matches) > 0.85


def test_eeg_lengths_and_patient_structure(large_plan):
    train, _, sessions = large_plan
    seconds = np.array([e.seconds for s in sessions if s.split == "train" for e in s.eegs])
    assert seconds.min() == 50 and seconds.max() >= 150 and 55 < seconds.mean() < 110
    assert train.groupby("patient_id").eeg_id.nunique().mean() > 3
    assert 1.5 < train.groupby("spectrogram_id").eeg_id.nunique().mean() < 4


# --- class patterns ------------------------------------------------------------------------


def _render(pattern, side, seed, seconds=60):
    """(samples, 20) µV of a session filled by one segment of `pattern` (None: background only)."""
    segments = () if pattern is None else (synthetic.Segment(0, seconds, pattern, side, 1.0),)
    return synthetic.render_session(synthetic.Session("train", seed, 1, seconds, segments, ()), seed)


def _bipolar_band(signal, low_hz, high_hz):
    """(time, 18) µV, the double banana band-passed, seconds 10-50 of the session."""
    bipolar = np.nan_to_num(signal[:, ANODES] - signal[:, CATHODES])
    sos = scipy.signal.butter(4, [low_hz, high_hz], btype="band", fs=200, output="sos")
    first = (plan.MARGIN_S + 10) * 200
    return scipy.signal.sosfiltfilt(sos, bipolar, axis=0)[first:first + 40 * 200]


def _pattern_only(pattern, side, seed, low_hz=0.5, high_hz=20.0):
    """(time, 18) µV: what a segment adds to the session (same background and nuisances)."""
    return _bipolar_band(_render(pattern, side, seed) - _render(None, 0, seed), low_hz, high_hz)


def _class(name):
    return constants.CLASSES.index(name)


@pytest.mark.parametrize("name", ["lpd", "lrda", "seizure"])
@pytest.mark.parametrize("side", [-1, 1])
def test_lateralized_patterns_stay_on_one_hemisphere(name, side):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        pattern = render._PATTERN_RENDERERS[_class(name)](rng, 40 * 200, side, 1.0)  # (time, 19)
        pattern = np.concatenate([pattern, np.zeros((len(pattern), 1), np.float32)], axis=1)
        power = np.mean((pattern[:, ANODES] - pattern[:, CATHODES]) ** 2, axis=0)  # (18,)
        ratio = power[LEFT_CHAINS].mean() / power[RIGHT_CHAINS].mean()
        assert (ratio > 10) if side == -1 else (ratio < 0.1), (seed, ratio)


@pytest.mark.parametrize("name", ["gpd", "grda"])
def test_generalized_patterns_are_symmetric(name):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        pattern = render._PATTERN_RENDERERS[_class(name)](rng, 40 * 200, 0, 1.0)
        pattern = np.concatenate([pattern, np.zeros((len(pattern), 1), np.float32)], axis=1)
        power = np.mean((pattern[:, ANODES] - pattern[:, CATHODES]) ** 2, axis=0)
        assert 0.5 < power[LEFT_CHAINS].mean() / power[RIGHT_CHAINS].mean() < 2.0


@pytest.mark.parametrize("name, side", [("seizure", -1), ("lpd", 1), ("gpd", 0), ("lrda", -1), ("grda", 0)])
def test_patterns_stand_out_of_the_background_at_the_window_centre(name, side):
    for seed in range(3):
        full = _bipolar_band(_render(_class(name), side, seed), 0.5, 20.0)
        background = _bipolar_band(_render(None, 0, seed), 0.5, 20.0)
        gain = np.mean(full**2, axis=0) / np.mean(background**2, axis=0)  # (18,)
        assert gain.max() > 1.5, (seed, gain.max())


@pytest.mark.parametrize("name, side", [("lrda", 1), ("grda", 0)])
def test_rhythmic_delta_is_narrowband_delta(name, side):
    for seed in range(3):
        delta = _pattern_only(_class(name), side, seed, 1.0, 3.0)
        faster = _pattern_only(_class(name), side, seed, 4.0, 20.0)
        assert np.mean(delta**2) > 10 * np.mean(faster**2)
        background = _bipolar_band(_render(None, 0, seed), 1.0, 3.0)
        full = _bipolar_band(_render(_class(name), side, seed), 1.0, 3.0)
        assert (np.mean(full**2, axis=0) / np.mean(background**2, axis=0)).max() > 3


def _autocorrelation_peak(signal, min_lag_s, max_lag_s):
    """Highest normalised autocorrelation (summed over channels) at lags in [min, max] s."""
    centred = signal - signal.mean(axis=0)
    spectrum = np.fft.rfft(centred, 2 * len(centred), axis=0)
    autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2, axis=0)[:len(centred)].sum(axis=1)
    autocorrelation /= autocorrelation[0]
    return autocorrelation[int(min_lag_s * 200):int(max_lag_s * 200)].max()


def test_periodic_discharges_repeat_every_half_to_one_and_a_quarter_seconds():
    for seed in range(3):
        for name, side in (("lpd", -1), ("gpd", 0)):
            assert _autocorrelation_peak(_pattern_only(_class(name), side, seed), 0.45, 1.3) > 0.45
        assert _autocorrelation_peak(_pattern_only(_class("seizure"), 0, seed), 0.45, 1.3) < 0.35
        background = _bipolar_band(_render(None, 0, seed), 0.5, 20.0)
        assert _autocorrelation_peak(background, 0.45, 1.3) < 0.2


def _peak_frequencies(signal):
    """Frequency (Hz, 1-12) of the largest power in each 4 s window (2 s hop), summed over channels."""
    freq, _, power = scipy.signal.spectrogram(signal, fs=200, nperseg=800, noverlap=400, axis=0)
    power = power.sum(axis=1)  # (freq, windows)
    band = (freq >= 1) & (freq <= 12)
    return freq[band][power[band].argmax(axis=0)]


def test_seizures_evolve_and_rhythmic_delta_does_not():
    for seed in range(3):
        assert np.ptp(_peak_frequencies(_pattern_only(_class("seizure"), -1, seed))) >= 1.0
        assert np.ptp(_peak_frequencies(_pattern_only(_class("lrda"), -1, seed))) <= 0.5


# --- determinism, CLI, embedded dataset, reader ----------------------------------------------


def _all_arrays(folder):
    return {p.relative_to(folder): pd.read_parquet(p).to_numpy() for p in sorted(folder.rglob("*.parquet"))}


def test_same_seed_same_bytes_and_arrays(tmp_path):
    first = synthetic.generate_dataset(tmp_path / "a", n_eegs=2, seed=5, n_test_eegs=1)
    second = synthetic.generate_dataset(tmp_path / "b", n_eegs=2, seed=5, n_test_eegs=1, workers=2)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    arrays_first, arrays_second = _all_arrays(first), _all_arrays(second)
    assert arrays_first.keys() == arrays_second.keys()
    for key, array in arrays_first.items():
        np.testing.assert_array_equal(array, arrays_second[key], err_msg=str(key))


def test_generating_does_not_import_the_training_pipeline(tmp_path):
    """The generator shares the montage with the v5 pipeline (`data.montage`) but not Grain."""
    script = (
        "import sys\n"
        "from hms_keras.data import synthetic\n"
        f"synthetic.generate_dataset({str(tmp_path / 'data')!r}, n_eegs=1, seed=0, n_test_eegs=1, workers=1)\n"
        "pipeline = ('grain', 'hms_keras.data.pipeline', 'hms_keras.data.transforms')\n"
        "print(sorted(name for name in sys.modules if name.startswith(pipeline)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"
    assert (tmp_path / "data" / "train.csv").is_file()


def test_refuses_a_non_empty_output_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        synthetic.generate_dataset(tmp_path, n_eegs=1)


def test_another_seed_gives_other_data():
    assert not plan._plan_dataset(5, 3, 1)[0].equals(plan._plan_dataset(6, 3, 1)[0])
    session = plan._plan_dataset(5, 3, 1)[2][0]
    assert not np.array_equal(synthetic.render_session(session, 5)[:1000], synthetic.render_session(session, 6)[:1000])


def test_cli_help_and_arguments(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "python -m hms_keras.data.synthetic" in help_text
    assert "--n-eegs" in help_text and "--seed" in help_text and "--out" in help_text
    calls = []
    monkeypatch.setattr(writer, "generate_dataset", lambda out, **kwargs: calls.append((out, kwargs)) or out)
    synthetic.main(["--out", str(tmp_path / "cli"), "--n-eegs", "7", "--seed", "1"])
    assert calls == [(tmp_path / "cli", {"n_eegs": 7, "seed": 1, "n_test_eegs": None, "workers": 2})]


def test_embedded_data_dir_generates_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("HMS_KERAS_CACHE", str(tmp_path))
    parent = tmp_path / "embedded"
    stale = parent / f".synthetic-v{synthetic.SYNTHETIC_VERSION}-n3-s2.tmp-4999999"  # no such process
    stale.mkdir(parents=True)
    path = synthetic.embedded_data_dir(n_eegs=3, seed=2, workers=1)
    assert path == parent / f"synthetic-v{synthetic.SYNTHETIC_VERSION}-n3-s2"
    assert len(pd.read_csv(path / "train.csv").eeg_id.unique()) == 3
    assert [p.name for p in parent.iterdir()] == [path.name]  # no temporary folder left behind

    def fail(*args, **kwargs):
        raise AssertionError("the embedded dataset was generated twice")

    monkeypatch.setattr(writer, "generate_dataset", fail)
    assert synthetic.embedded_data_dir(n_eegs=3, seed=2) == path


def test_the_hms_reader_accepts_the_output_unchanged(dataset):
    layout = hms.HmsLayout(dataset)
    train = hms.read_train_csv(layout.train_csv)
    test = hms.read_test_csv(layout.test_csv)
    hms.check_label_windows(train, layout)
    for split, frame in (("train", train), ("test", test)):
        for eeg_id in frame.eeg_id.unique():
            signal = hms.read_eeg(layout.eeg_path(split, eeg_id))
            assert signal.shape[1] == 20 and signal.dtype == np.float32
        for spectrogram_id in frame.spectrogram_id.unique():
            time_s, values = hms.read_spectrogram(layout.spectrogram_path(split, spectrogram_id))
            assert values.shape == (len(time_s), 400)
