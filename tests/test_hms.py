"""hms_keras.data.hms: layout paths, valid reads, and one clear HmsDataError per malformed input."""

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hms_keras import constants
from hms_keras.data.hms import (
    EEG_WINDOW_ROWS,
    TRAIN_COLUMNS,
    HmsDataError,
    HmsLayout,
    check_label_windows,
    read_eeg,
    read_spectrogram,
    read_test_csv,
    read_train_csv,
)


def train_frame() -> pd.DataFrame:
    """Three label rows: EEG 100 (60 s, windows at 0 s and 10 s) and EEG 200 (50 s)."""
    votes = {name: [0, 0, 0] for name in constants.VOTE_COLUMNS}
    votes["seizure_vote"] = [3, 3, 0]
    votes["other_vote"] = [0, 1, 14]
    return pd.DataFrame({
        "eeg_id": [100, 100, 200],
        "eeg_sub_id": [0, 1, 0],
        "eeg_label_offset_seconds": [0.0, 10.0, 0.0],
        "spectrogram_id": [7, 7, 8],
        "spectrogram_sub_id": [0, 1, 0],
        "spectrogram_label_offset_seconds": [0.0, 10.0, 0.0],
        "label_id": [1, 2, 3],
        "patient_id": [11, 11, 22],
        "expert_consensus": ["Seizure", "Seizure", "Other"],
        **votes,
    })


def eeg_frame(n_rows: int, seed: int = 0) -> pd.DataFrame:
    values = np.random.default_rng(seed).normal(0, 50, (n_rows, 20)).astype(np.float32)
    return pd.DataFrame(values, columns=list(constants.EEG_COLUMNS))


def spectrogram_frame(n_rows: int = 4) -> pd.DataFrame:
    values = np.random.default_rng(1).uniform(0, 10, (n_rows, 400)).astype(np.float32)
    frame = pd.DataFrame(values, columns=list(constants.SPECTROGRAM_COLUMNS))
    frame.insert(0, "time", np.arange(1, 2 * n_rows, 2, dtype=np.int64))
    return frame


def write_layout(root, eeg_rows=None) -> HmsLayout:
    eeg_rows = {100: 12_000, 200: 10_000} if eeg_rows is None else eeg_rows
    layout = HmsLayout(root)
    train_frame().to_csv(layout.train_csv, index=False)
    for eeg_id, n_rows in eeg_rows.items():
        path = layout.eeg_path("train", eeg_id)
        path.parent.mkdir(exist_ok=True)
        eeg_frame(n_rows).to_parquet(path, index=False)
    return layout


def assert_error(call, path, *fragments):
    """`call()` raises HmsDataError whose message names `path` and holds every fragment."""
    with pytest.raises(HmsDataError) as info:
        call()
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_layout_paths(tmp_path):
    layout = HmsLayout(tmp_path)
    assert layout.train_csv == tmp_path / "train.csv"
    assert layout.sample_submission_csv == tmp_path / "sample_submission.csv"
    assert layout.eeg_path("train", np.int64(5)) == tmp_path / "train_eegs" / "5.parquet"
    assert layout.spectrogram_path("test", 9) == tmp_path / "test_spectrograms" / "9.parquet"
    with pytest.raises(ValueError, match="split"):
        layout.eeg_path("valid", 5)
    assert_error(lambda: HmsLayout(tmp_path / "absent"), tmp_path / "absent", "folder not found")


def test_read_train_csv_values_and_dtypes(tmp_path):
    path = tmp_path / "train.csv"
    train_frame().to_csv(path, index=False)
    frame = read_train_csv(path)
    assert tuple(frame.columns) == TRAIN_COLUMNS
    assert frame["eeg_id"].dtype == np.int64 and frame["other_vote"].dtype == np.int64
    assert frame["eeg_label_offset_seconds"].dtype == np.float64
    assert frame["eeg_label_offset_seconds"].tolist() == [0.0, 10.0, 0.0]
    assert frame["expert_consensus"].tolist() == ["Seizure", "Seizure", "Other"]


def _set(column, row, value):
    def mutate(frame):
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame
    return mutate


TRAIN_CSV_ERRORS = {
    "missing column": (lambda f: f.drop(columns="patient_id"), ["missing column 'patient_id'"]),
    "misspelled column": (
        lambda f: f.rename(columns={"spectrogram_label_offset_seconds": "spectogram_label_offset_seconds"}),
        ["unknown column 'spectogram_label_offset_seconds'", "did you mean 'spectrogram_label_offset_seconds'"],
    ),
    "misordered columns": (
        lambda f: f[["eeg_sub_id", "eeg_id", *TRAIN_COLUMNS[2:]]],
        ["out of order", "column 0 is 'eeg_sub_id', expected 'eeg_id'"],
    ),
    "text id": (_set("eeg_id", 1, "abc"), ["'eeg_id' must hold integers", "'abc'"]),
    "fractional votes": (_set("lpd_vote", 0, 1.5), ["'lpd_vote' must hold integers", "1.5"]),
    "missing value": (_set("label_id", 2, None), ["'label_id' has 1 missing value", "data row 2"]),
    "negative vote": (_set("gpd_vote", 1, -1), ["negative votes in 1 row", "data row 1"]),
    "no votes": (_set("seizure_vote", 0, 0), ["no votes", "data row 0"]),
    "negative offset": (_set("eeg_label_offset_seconds", 1, -2.0), ["eeg_label_offset_seconds is negative"]),
    "unknown consensus": (_set("expert_consensus", 0, "seizure"), ["'seizure' (did you mean 'Seizure'?)"]),
    "duplicate label_id": (_set("label_id", 2, 1), ["duplicate label_id", "data row 2"]),
    "two patients per EEG": (_set("patient_id", 1, 99), ["eeg_id 100 appears with more than one patient_id"]),
}


@pytest.mark.parametrize("case", TRAIN_CSV_ERRORS)
def test_read_train_csv_rejects(tmp_path, case):
    mutate, fragments = TRAIN_CSV_ERRORS[case]
    path = tmp_path / "train.csv"
    mutate(train_frame()).to_csv(path, index=False)
    assert_error(lambda: read_train_csv(path), path, *fragments)


def test_read_csv_unreadable_or_absent(tmp_path):
    empty = tmp_path / "train.csv"
    empty.write_text("")
    assert_error(lambda: read_train_csv(empty), empty, "not a readable CSV")
    assert_error(lambda: read_test_csv(tmp_path / "test.csv"), tmp_path / "test.csv", "file not found")


def test_read_test_csv(tmp_path):
    path = tmp_path / "test.csv"
    pd.DataFrame({"spectrogram_id": [8, 9], "eeg_id": [3, 4], "patient_id": [1, 2]}).to_csv(path, index=False)
    frame = read_test_csv(path)
    assert frame["eeg_id"].tolist() == [3, 4] and frame["eeg_id"].dtype == np.int64
    pd.DataFrame({"spectrogram_id": [8, 9], "eeg": [3, 4], "patient_id": [1, 2]}).to_csv(path, index=False)
    assert_error(lambda: read_test_csv(path), path, "unknown column 'eeg' (did you mean 'eeg_id'?)")
    pd.DataFrame({"spectrogram_id": [8, 9], "eeg_id": [3, 3], "patient_id": [1, 2]}).to_csv(path, index=False)
    assert_error(lambda: read_test_csv(path), path, "duplicate eeg_id")


def test_read_eeg_round_trip(tmp_path):
    frame = eeg_frame(EEG_WINDOW_ROWS)
    frame.loc[5:9, "C3"] = np.nan  # pandas stores NaN as parquet nulls
    frame["EKG"] = np.nan  # an all-NaN EKG is accepted: the model drops EKG
    frame.index = pd.Index(np.arange(len(frame)) * 2)  # stored as an extra column, to be ignored
    path = tmp_path / "1.parquet"
    frame.to_parquet(path)
    assert "__index_level_0__" in pq.ParquetFile(path).schema_arrow.names
    signal = read_eeg(path)
    assert isinstance(signal, np.ma.MaskedArray)
    assert signal.shape == (EEG_WINDOW_ROWS, 20) and signal.dtype == np.float32
    np.testing.assert_array_equal(signal.filled(), frame.to_numpy(np.float32))
    np.testing.assert_array_equal(np.asarray(signal), frame.to_numpy(np.float32))  # NaN under the mask
    nulls = np.zeros((EEG_WINDOW_ROWS, 20), bool)
    nulls[5:10, 2] = nulls[:, 19] = True
    np.testing.assert_array_equal(np.ma.getmaskarray(signal), nulls)


def write_eeg_table(path, values: np.ndarray, nulls: np.ndarray) -> None:
    """Write (rows, 20) float32 with pyarrow, storing the samples where `nulls` is True as nulls."""
    columns = {name: pa.array(values[:, k], mask=nulls[:, k]) for k, name in enumerate(constants.EEG_COLUMNS)}
    pq.write_table(pa.table(columns), path)


def test_read_eeg_keeps_nulls_and_nan_values_apart(tmp_path):
    values = eeg_frame(EEG_WINDOW_ROWS).to_numpy(copy=True)  # (rows, 20) float32
    values[20:25, 9] = np.nan  # Cz: NaN values
    nulls = np.zeros(values.shape, bool)
    nulls[5:10, 2] = True  # C3: nulls
    nulls[30, 9] = True  # Cz: a null too
    path = tmp_path / "1.parquet"
    write_eeg_table(path, values, nulls)
    signal = read_eeg(path)
    np.testing.assert_array_equal(np.ma.getmaskarray(signal), nulls)  # NaN values are not masked
    expected = values.copy()
    expected[nulls] = np.nan
    np.testing.assert_array_equal(signal.data, expected)  # NaN under the mask and at NaN values


@pytest.mark.parametrize("kind", ["null", "NaN", "mixed"])
def test_read_eeg_rejects_a_probe_without_values(tmp_path, kind):
    rows = np.arange(EEG_WINDOW_ROWS)
    stored_as_null = {"null": rows >= 0, "NaN": rows < 0, "mixed": rows % 2 == 0}[kind]  # (rows,) else NaN
    values = eeg_frame(EEG_WINDOW_ROWS).to_numpy(copy=True)  # (rows, 20) float32
    nulls = np.zeros(values.shape, bool)
    values[:, 19], nulls[:, 19] = np.nan, stored_as_null  # EKG: accepted, the model drops it
    path = tmp_path / "1.parquet"
    write_eeg_table(path, values, nulls)
    assert read_eeg(path).shape == (EEG_WINDOW_ROWS, 20)
    values[:, 8], nulls[:, 8] = np.nan, stored_as_null  # Fz
    write_eeg_table(path, values, nulls)
    assert_error(lambda: read_eeg(path), path, "['Fz'] contain only NaN or null values")


EEG_ERRORS = {
    "misspelled column": (lambda f: f.rename(columns={"Fp1": "FP1"}), ["unknown column 'FP1' (did you mean 'Fp1'?)"]),
    "missing column": (lambda f: f.drop(columns="EKG"), ["missing column 'EKG'"]),
    "extra column": (lambda f: f.assign(T7=0.0), ["unknown column 'T7'"]),
    "misordered columns": (lambda f: f[["F3", "Fp1", *constants.EEG_COLUMNS[2:]]], ["out of order"]),
    "integer channel": (lambda f: f.astype({"Cz": np.int64}), ["column 'Cz' has type int64, expected a float type"]),
    "too short": (lambda f: f.iloc[: EEG_WINDOW_ROWS - 1], ["only 9999 rows", "at least 10000 rows"]),
}


@pytest.mark.parametrize("case", EEG_ERRORS)
def test_read_eeg_rejects(tmp_path, case):
    mutate, fragments = EEG_ERRORS[case]
    path = tmp_path / "1.parquet"
    mutate(eeg_frame(EEG_WINDOW_ROWS)).to_parquet(path, index=False)
    assert_error(lambda: read_eeg(path), path, *fragments)


def test_read_parquet_unreadable_or_absent(tmp_path):
    broken = tmp_path / "2.parquet"
    broken.write_bytes(b"this is not parquet")
    assert_error(lambda: read_eeg(broken), broken, "not a readable parquet file")
    assert_error(lambda: read_spectrogram(broken), broken, "not a readable parquet file")
    assert_error(lambda: read_eeg(tmp_path / "3.parquet"), tmp_path / "3.parquet", "file not found")


def test_read_spectrogram_round_trip(tmp_path):
    frame = spectrogram_frame()
    frame.loc[1, "RP_19.92"] = np.nan
    path = tmp_path / "7.parquet"
    frame.to_parquet(path, index=False)
    time_s, values = read_spectrogram(path)
    assert time_s.tolist() == [1, 3, 5, 7] and time_s.dtype == np.int64
    assert values.shape == (4, 400) and values.dtype == np.float32
    np.testing.assert_array_equal(values, frame.iloc[:, 1:].to_numpy(np.float32))
    assert np.isnan(values[1, 399])


# Column names printed from real Kaggle spectrogram files (docs/hms_data.md), with their index.
KNOWN_SPECTROGRAM_NAMES = {
    0: "LL_0.59", 13: "LL_3.13", 17: "LL_3.91", 18: "LL_4.1", 39: "LL_8.2", 61: "LL_12.5", 77: "LL_15.63",
    100: "RL_0.59", 399: "RP_19.92",
}


def kaggle_spectrogram_names() -> list[str]:
    """The 400 power column names, built with integer arithmetic: bin k is (k + 3) * 200 / 1024 Hz
    = (k + 3) * 625 / 32 hundredths of a Hz, rounded half-up, trailing zeros dropped."""
    names = []
    for chain in ("LL", "RL", "LP", "RP"):
        for k in range(100):
            cents = ((k + 3) * 625 + 16) // 32  # floor(x + 1/2)
            decimals = f"{cents % 100:02d}".rstrip("0")
            names.append(f"{chain}_{cents // 100}" + (f".{decimals}" if decimals else ""))
    return names


def test_read_spectrogram_with_kaggle_column_names(tmp_path):
    names = kaggle_spectrogram_names()
    assert all(names[index] == name for index, name in KNOWN_SPECTROGRAM_NAMES.items())
    assert len(set(names)) == 400
    assert all(re.fullmatch(r"(LL|RL|LP|RP)_\d{1,2}(\.\d?[1-9])?", name) for name in names), names
    values = np.random.default_rng(3).uniform(0, 10, (3, 400)).astype(np.float32)  # (rows, 400)
    columns = {"time": pa.array([1, 3, 5], pa.int64())}
    columns.update({name: pa.array(values[:, k]) for k, name in enumerate(names)})
    path = tmp_path / "353733.parquet"
    pq.write_table(pa.table(columns), path)
    time_s, read = read_spectrogram(path)
    assert time_s.tolist() == [1, 3, 5]
    np.testing.assert_array_equal(read, values)
    assert list(constants.SPECTROGRAM_COLUMNS) == names


SPECTROGRAM_ERRORS = {
    "padded bin name": (
        lambda f: f.rename(columns={"LL_4.1": "LL_4.10"}), ["unknown column 'LL_4.10' (did you mean 'LL_4.1'?)"]
    ),
    "half-even bin name": (  # Python's round(3.125, 2); Kaggle rounds half-up
        lambda f: f.rename(columns={"LL_3.13": "LL_3.12"}), ["unknown column 'LL_3.12' (did you mean 'LL_3.13'?)"]
    ),
    "chain order": (
        lambda f: f[["time", *constants.SPECTROGRAM_COLUMNS[100:200], *constants.SPECTROGRAM_COLUMNS[:100],
                     *constants.SPECTROGRAM_COLUMNS[200:]]],
        ["out of order", "column 1 is 'RL_0.59', expected 'LL_0.59'"],
    ),
    "float time": (lambda f: f.astype({"time": np.float64}), ["'time' has type double, expected an integer type"]),
    "decreasing time": (lambda f: f.assign(time=[1, 3, 3, 5]), ["'time' is not strictly increasing"]),
    "integer power": (lambda f: f.astype({"LP_10.16": np.int64}), ["column 'LP_10.16' has type int64"]),
}


@pytest.mark.parametrize("case", SPECTROGRAM_ERRORS)
def test_read_spectrogram_rejects(tmp_path, case):
    mutate, fragments = SPECTROGRAM_ERRORS[case]
    path = tmp_path / "7.parquet"
    mutate(spectrogram_frame()).to_parquet(path, index=False)
    assert_error(lambda: read_spectrogram(path), path, *fragments)


def test_check_label_windows_reads_only_metadata(tmp_path, monkeypatch):
    layout = write_layout(tmp_path)
    train_df = read_train_csv(layout.train_csv)

    def no_data_reads(*args, **kwargs):
        raise AssertionError("check_label_windows must read only parquet metadata")

    monkeypatch.setattr(pq.ParquetFile, "read", no_data_reads)
    monkeypatch.setattr(pq, "read_table", no_data_reads)
    check_label_windows(train_df, layout)  # EEG 100's second window ends exactly at row 12,000


def test_check_label_windows_unknown_eeg(tmp_path):
    layout = write_layout(tmp_path, eeg_rows={100: 12_000})
    train_df = read_train_csv(layout.train_csv)
    missing = layout.eeg_path("train", 200)
    assert_error(lambda: check_label_windows(train_df, layout), missing, "EEG file not found for eeg_id 200",
                 "1 of 2 eeg_id(s) have no file")


def test_check_label_windows_short_eeg(tmp_path):
    layout = write_layout(tmp_path, eeg_rows={100: 11_999, 200: 10_000})
    train_df = read_train_csv(layout.train_csv)
    assert_error(lambda: check_label_windows(train_df, layout), layout.eeg_path("train", 100),
                 "eeg_id 100 has 11999 rows", "label_id 2", "eeg_label_offset_seconds=10", "[2000, 12000)")
