"""Read and validate the Kaggle HMS layout: train.csv, test.csv, EEG and spectrogram parquet files.

Every malformed input raises `HmsDataError` (a ValueError) whose message starts with the offending
file (or data frame) and says what is wrong, so a bad download or a generator bug stops at the
boundary instead of surfacing as a KeyError deep inside a pipeline. Layout facts:
`docs/hms_data.md`.
"""

import difflib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from hms_keras import constants

TRAIN_COLUMNS = (
    "eeg_id", "eeg_sub_id", "eeg_label_offset_seconds", "spectrogram_id", "spectrogram_sub_id",
    "spectrogram_label_offset_seconds", "label_id", "patient_id", "expert_consensus",
    *constants.VOTE_COLUMNS,
)
TRAIN_OFFSET_COLUMNS = ("eeg_label_offset_seconds", "spectrogram_label_offset_seconds")
TRAIN_INTEGER_COLUMNS = tuple(
    name for name in TRAIN_COLUMNS if name not in TRAIN_OFFSET_COLUMNS and name != "expert_consensus"
)
TEST_COLUMNS = ("spectrogram_id", "eeg_id", "patient_id")
SPECTROGRAM_TIME_COLUMN = "time"
# Raw EEG rows in one labelled 50 s window at 200 Hz; every EEG file holds at least one window.
EEG_WINDOW_ROWS = constants.WINDOW_SECONDS * constants.RAW_SAMPLING_RATE_HZ  # 10,000
SPLITS = ("train", "test")
# Longest list of column problems spelled out in one message.
_MAX_LISTED = 5


class HmsDataError(ValueError):
    """A malformed HMS input; the message names the file (or data frame) and the problem."""


class HmsLayout:
    """Paths of one HMS data folder in the Kaggle layout (real or synthetic).

    `data_dir/{train,test,sample_submission}.csv`, `data_dir/{split}_eegs/<eeg_id>.parquet` and
    `data_dir/{split}_spectrograms/<spectrogram_id>.parquet` with split "train" or "test".
    Only checks that `data_dir` is a folder; files are read by the `read_*` functions.
    """

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise HmsDataError(f"{self.data_dir}: HMS data folder not found")
        self.train_csv = self.data_dir / "train.csv"
        self.test_csv = self.data_dir / "test.csv"
        self.sample_submission_csv = self.data_dir / "sample_submission.csv"

    def eeg_path(self, split: str, eeg_id: int) -> Path:
        """The parquet file of one EEG recording of `split` ("train" or "test")."""
        return self.data_dir / f"{_check_split(split)}_eegs" / f"{int(eeg_id)}.parquet"

    def spectrogram_path(self, split: str, spectrogram_id: int) -> Path:
        """The parquet file of one Kaggle spectrogram of `split` ("train" or "test")."""
        return self.data_dir / f"{_check_split(split)}_spectrograms" / f"{int(spectrogram_id)}.parquet"

    def __repr__(self) -> str:
        return f"HmsLayout({str(self.data_dir)!r})"


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def require_columns(frame: pd.DataFrame, columns, source: str) -> None:
    """Raise HmsDataError naming `source` unless `frame` has every name in `columns`.

    For data frames handed between modules (e.g. `vote_targets` output); files are checked
    more strictly by the `read_*` functions.
    """
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        hints = [_with_suggestion(name, frame.columns) for name in missing]
        raise HmsDataError(f"{source}: missing column(s) {', '.join(hints)}")


def _with_suggestion(name: str, candidates) -> str:
    """`'name'`, followed by ` (did you mean 'x'?)` when difflib finds a close candidate."""
    close = difflib.get_close_matches(name, [str(c) for c in candidates], n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def _check_columns(source, found, expected) -> None:
    """Raise HmsDataError unless `found` is exactly `expected`: same names, same order."""
    found = list(found)
    expected = list(expected)
    if found == expected:
        return
    problems = []
    duplicates = sorted({name for name in found if found.count(name) > 1})
    if duplicates:
        problems.append(f"duplicate column(s) {duplicates}")
    unknown = [name for name in found if name not in expected]
    missing = [name for name in expected if name not in found]
    suggested = set()
    for name in unknown:
        close = difflib.get_close_matches(name, missing, n=1) or difflib.get_close_matches(name, expected, n=1)
        suggested.update(close)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"unknown column {name!r}{hint}")
    problems += [f"missing column {name!r}" for name in missing if name not in suggested]
    if not problems:
        position = next(i for i, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b)
        problems.append(
            f"columns out of order: column {position} is {found[position]!r}, expected {expected[position]!r}"
        )
    listed = "; ".join(problems[:_MAX_LISTED])
    more = f"; and {len(problems) - _MAX_LISTED} more problem(s)" if len(problems) > _MAX_LISTED else ""
    raise HmsDataError(f"{source}: {listed}{more}")


def _read_csv(path) -> tuple[Path, pd.DataFrame]:
    path = Path(path)
    if not path.is_file():
        raise HmsDataError(f"{path}: file not found")
    try:
        return path, pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise HmsDataError(f"{path}: not a readable CSV file ({error})") from error


def _check_no_missing(path: Path, frame: pd.DataFrame) -> None:
    for name in frame.columns:
        missing = frame[name].isna().to_numpy()
        if missing.any():
            row = int(np.argmax(missing))
            raise HmsDataError(
                f"{path}: column {name!r} has {int(missing.sum())} missing value(s), "
                f"first in data row {row} (line {row + 2})"
            )


def _check_integer_columns(path: Path, frame: pd.DataFrame, columns) -> None:
    for name in columns:
        column = frame[name]
        if pd.api.types.is_integer_dtype(column):
            continue
        numbers = pd.to_numeric(column, errors="coerce")
        bad = (numbers.isna() | (numbers % 1 != 0)).to_numpy()
        example = column.astype(object).iloc[int(np.argmax(bad))]  # the first row when all are whole floats
        raise HmsDataError(
            f"{path}: column {name!r} must hold integers, found dtype {column.dtype} (e.g. {example!r})"
        )


def _fail_rows(path: Path, frame: pd.DataFrame, bad: np.ndarray, problem: str) -> None:
    """Raise naming the first row flagged in `bad` (bool, one per row) and how many there are."""
    if bad.any():
        row = int(np.argmax(bad))
        raise HmsDataError(
            f"{path}: {problem} in {int(bad.sum())} row(s), first in data row {row} (line {row + 2}): "
            f"{frame.iloc[row].to_dict()}"
        )


def read_train_csv(path) -> pd.DataFrame:
    """Read and validate train.csv: one row per labelled 50 s window.

    Checks the 15 columns (TRAIN_COLUMNS: names and order), no missing values, integer ids and
    votes, numeric offsets >= 0 (seconds), votes >= 0 with a positive sum per row,
    expert_consensus in constants.CONSENSUS_NAMES, unique label_id, one patient_id per eeg_id.
    Returns the rows in file order: ids and votes int64, offsets float64 (s), expert_consensus str.
    """
    path, frame = _read_csv(path)
    _check_columns(path, frame.columns, TRAIN_COLUMNS)
    _check_no_missing(path, frame)
    _check_integer_columns(path, frame, TRAIN_INTEGER_COLUMNS)
    for name in TRAIN_OFFSET_COLUMNS:
        column = frame[name]
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise HmsDataError(f"{path}: column {name!r} must hold seconds as numbers, found dtype {column.dtype}")
        offsets = column.to_numpy(np.float64)
        _fail_rows(path, frame, ~np.isfinite(offsets) | (offsets < 0), f"{name} is negative or not finite")
    votes = frame[list(constants.VOTE_COLUMNS)].to_numpy(np.int64)  # (rows, 6)
    _fail_rows(path, frame, (votes < 0).any(axis=1), "negative votes")
    _fail_rows(path, frame, votes.sum(axis=1) == 0, "no votes (all six *_vote are 0)")
    unknown = sorted(set(frame["expert_consensus"].astype(str)) - set(constants.CONSENSUS_NAMES))
    if unknown:
        hints = [_with_suggestion(name, constants.CONSENSUS_NAMES) for name in unknown[:_MAX_LISTED]]
        raise HmsDataError(
            f"{path}: expert_consensus has unknown value(s) {', '.join(hints)}; "
            f"expected one of {constants.CONSENSUS_NAMES}"
        )
    _fail_rows(path, frame, frame["label_id"].duplicated().to_numpy(), "duplicate label_id")
    patients_per_eeg = frame.groupby("eeg_id")["patient_id"].nunique()
    if (patients_per_eeg > 1).any():
        eeg_id = patients_per_eeg.index[int(np.argmax(patients_per_eeg.to_numpy() > 1))]
        raise HmsDataError(f"{path}: eeg_id {eeg_id} appears with more than one patient_id")
    dtypes = {name: np.int64 for name in TRAIN_INTEGER_COLUMNS}
    dtypes.update({name: np.float64 for name in TRAIN_OFFSET_COLUMNS}, expert_consensus=str)
    return frame.astype(dtypes)


def read_test_csv(path) -> pd.DataFrame:
    """Read and validate test.csv: columns spectrogram_id, eeg_id, patient_id (int64), one row per eeg_id."""
    path, frame = _read_csv(path)
    _check_columns(path, frame.columns, TEST_COLUMNS)
    _check_no_missing(path, frame)
    _check_integer_columns(path, frame, TEST_COLUMNS)
    _fail_rows(path, frame, frame["eeg_id"].duplicated().to_numpy(), "duplicate eeg_id")
    return frame.astype(np.int64)


def _open_parquet(path) -> tuple[Path, pq.ParquetFile]:
    path = Path(path)
    if not path.is_file():
        raise HmsDataError(f"{path}: file not found")
    try:
        return path, pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise HmsDataError(f"{path}: not a readable parquet file ({error})") from error


def _data_columns(parquet: pq.ParquetFile) -> list[str]:
    """Column names of a parquet file, without the index columns pandas may have stored."""
    schema = parquet.schema_arrow
    index_columns = [name for name in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(name, str)]
    return [name for name in schema.names if name not in index_columns]


def _read_table(path: Path, parquet: pq.ParquetFile, columns) -> pa.Table:
    try:
        return parquet.read(columns=list(columns))
    except (pa.ArrowException, OSError) as error:
        raise HmsDataError(f"{path}: not a readable parquet file ({error})") from error


def _check_column_types(path: Path, table: pa.Table, columns, is_type, expected: str) -> None:
    for name in columns:
        column_type = table.schema.field(name).type
        if not is_type(column_type):
            raise HmsDataError(f"{path}: column {name!r} has type {column_type}, expected {expected}")


def read_eeg(path) -> np.ma.MaskedArray:
    """Read and validate one EEG parquet file.

    Returns a (time, 20) float32 `numpy.ma.MaskedArray` of µV at 200 Hz, columns in
    constants.EEG_COLUMNS order (19 scalp probes, then EKG). Parquet keeps two kinds of missing
    sample apart, and the v5 preprocessing treats them differently (`preprocess.preprocess_eeg`):
    the mask marks the **nulls** (their data is NaN, so a caller that drops the mask, e.g. with
    `np.asarray`, sees NaN); float NaN values stay NaN and unmasked. `.filled()` gives NaN at nulls.
    Raises HmsDataError on an unreadable file, a missing, misspelled, extra or misordered column,
    a non-float column, fewer than EEG_WINDOW_ROWS rows (50 s), or a scalp probe that holds only
    nulls and NaN. Such an EKG is accepted: the v5 model drops EKG, while an empty probe would
    blank the whole recording in its preprocessing.
    """
    path, parquet = _open_parquet(path)
    _check_columns(path, _data_columns(parquet), constants.EEG_COLUMNS)
    table = _read_table(path, parquet, constants.EEG_COLUMNS)
    _check_column_types(path, table, constants.EEG_COLUMNS, pa.types.is_floating, "a float type (µV)")
    if table.num_rows < EEG_WINDOW_ROWS:
        raise HmsDataError(
            f"{path}: only {table.num_rows} rows ({table.num_rows / constants.RAW_SAMPLING_RATE_HZ:g} s at "
            f"{constants.RAW_SAMPLING_RATE_HZ} Hz); an EEG needs at least {EEG_WINDOW_ROWS} rows "
            f"({constants.WINDOW_SECONDS} s)"
        )
    columns = [table.column(name) for name in constants.EEG_COLUMNS]
    signal = np.stack([column.to_numpy() for column in columns], axis=1)  # (time, 20), NaN at nulls
    signal = signal.astype(np.float32, copy=False)
    nulls = np.zeros(signal.shape, bool)  # (time, 20)
    for k, column in enumerate(columns):
        if column.null_count:
            nulls[:, k] = column.is_null().to_numpy(zero_copy_only=False)
    empty = np.isnan(signal[:, : len(constants.EEG_PROBES)]).all(axis=0)  # (19,) nulls and NaN alike
    if empty.any():
        names = [name for name, is_empty in zip(constants.EEG_PROBES, empty, strict=True) if is_empty]
        raise HmsDataError(f"{path}: EEG channel(s) {names} contain only NaN or null values")
    return np.ma.MaskedArray(signal, mask=nulls, fill_value=np.nan)


def check_spectrogram_columns(path) -> None:
    """Check one spectrogram file's column names from its parquet footer, reading no data.

    Raises HmsDataError naming the file when it is missing, unreadable or has a column problem
    (as `read_spectrogram` would); cheap enough to run over every training file before any work.
    """
    path, parquet = _open_parquet(path)
    _check_columns(path, _data_columns(parquet), (SPECTROGRAM_TIME_COLUMN, *constants.SPECTROGRAM_COLUMNS))


def read_spectrogram(path) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one Kaggle spectrogram parquet file.

    Returns `time_s` (T,) int64, the centre of each 2 s row in seconds (1, 3, 5, ...), and
    `values` (T, 400) float32 power, columns in constants.SPECTROGRAM_COLUMNS order (4 chains
    LL, RL, LP, RP x 100 bins 0.59..19.92 Hz); NaN kept. Raises HmsDataError on an unreadable
    file, a column problem (e.g. `LL_4.10` for `LL_4.1`, `LL_3.12` for `LL_3.13`), a `time`
    column that is not integer, has missing values or does not strictly increase, non-float
    power columns, or no rows.
    """
    path, parquet = _open_parquet(path)
    columns = (SPECTROGRAM_TIME_COLUMN, *constants.SPECTROGRAM_COLUMNS)
    _check_columns(path, _data_columns(parquet), columns)
    table = _read_table(path, parquet, columns)
    _check_column_types(path, table, [SPECTROGRAM_TIME_COLUMN], pa.types.is_integer, "an integer type (s)")
    _check_column_types(path, table, constants.SPECTROGRAM_COLUMNS, pa.types.is_floating, "a float type")
    if table.num_rows == 0:
        raise HmsDataError(f"{path}: spectrogram has no rows")
    time_column = table.column(SPECTROGRAM_TIME_COLUMN)
    if time_column.null_count:
        raise HmsDataError(f"{path}: column 'time' has {time_column.null_count} missing value(s)")
    time_s = time_column.to_numpy().astype(np.int64)  # (T,)
    if (np.diff(time_s) <= 0).any():
        raise HmsDataError(f"{path}: column 'time' is not strictly increasing")
    values = np.stack([table.column(name).to_numpy() for name in constants.SPECTROGRAM_COLUMNS], axis=1)  # (T, 400)
    return time_s, values.astype(np.float32, copy=False)


def _parquet_num_rows(path: Path) -> int:
    """Row count from the parquet footer, without reading any data."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as error:
        raise HmsDataError(f"{path}: not a readable parquet file ({error})") from error


def check_label_windows(train_df: pd.DataFrame, layout: HmsLayout) -> None:
    """Check that every label row's 50 s EEG window lies inside its train EEG file.

    `train_df` as returned by `read_train_csv`. Row r needs raw rows
    [int(200 * eeg_label_offset_seconds), that + 10,000) of `train_eegs/<eeg_id>.parquet`.
    Reads only each file's parquet footer (row count), so the 17k real EEGs take seconds.
    Raises HmsDataError naming the eeg_id, the file and the offsets when an EEG file is missing
    or too short.
    """
    require_columns(train_df, ("eeg_id", "eeg_label_offset_seconds", "label_id"), "train_df")
    eeg_ids = pd.unique(train_df["eeg_id"])
    paths = {eeg_id: layout.eeg_path("train", eeg_id) for eeg_id in eeg_ids}
    missing = [eeg_id for eeg_id, path in paths.items() if not path.is_file()]
    if missing:
        raise HmsDataError(
            f"{paths[missing[0]]}: EEG file not found for eeg_id {missing[0]} referenced by {layout.train_csv} "
            f"({len(missing)} of {len(eeg_ids)} eeg_id(s) have no file)"
        )
    num_rows = {
        eeg_id: _parquet_num_rows(path) for eeg_id, path in tqdm(paths.items(), desc="EEG row counts", unit="file")
    }
    offsets_s = train_df["eeg_label_offset_seconds"].to_numpy(np.float64)  # (rows,)
    starts = (offsets_s * constants.RAW_SAMPLING_RATE_HZ).astype(np.int64)  # (rows,) first raw row
    available = train_df["eeg_id"].map(num_rows).to_numpy(np.int64)
    too_short = starts + EEG_WINDOW_ROWS > available
    if too_short.any():
        row = int(np.argmax(too_short))
        eeg_id = train_df["eeg_id"].iloc[row]
        raise HmsDataError(
            f"{paths[eeg_id]}: eeg_id {eeg_id} has {available[row]} rows, but label_id "
            f"{train_df['label_id'].iloc[row]} with eeg_label_offset_seconds="
            f"{train_df['eeg_label_offset_seconds'].iloc[row]:g} needs rows [{starts[row]}, "
            f"{starts[row] + EEG_WINDOW_ROWS}) ({int(too_short.sum())} label window(s) in total do not fit)"
        )
