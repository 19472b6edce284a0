"""A synthetic HMS dataset in the exact Kaggle layout: the embedded default every recipe and test uses.

`generate_dataset(out_dir, ...)` writes what Kaggle ships (shared/spec/hms_data.md):

    train.csv  test.csv  sample_submission.csv
    train_eegs/<eeg_id>.parquet                 (time, 20) float32 µV at 200 Hz, EEG_COLUMNS
    train_spectrograms/<spectrogram_id>.parquet  `time` int64 (1, 3, 5, ... s) + 400 float32 columns
    test_eegs/, test_spectrograms/              the same for the test split (50 s EEGs, 300-row spectrograms)

How it is made. Data are planned per *session*: one continuous recording of one patient, from which
one spectrogram and 1-4 EEG files (excerpts) are cut, like Kaggle's consolidated recordings. A
session's timeline is a list of `Segment`s, each carrying one activity pattern:

- seizure: sharp-contoured rhythm at 3.5-7.5 Hz (100-220 µV) whose frequency (±25-40 %) and
  amplitude evolve with a 10-25 s period, focal on one hemisphere (60 %) or bilateral;
- LPD / GPD: periodic sharp discharges (sharp wave + slow wave, 150-300 µV, GPD sometimes
  triphasic) every 0.5-1.25 s, on one hemisphere / on both;
- LRDA / GRDA: rhythmic delta at 1-2.5 Hz (80-200 µV) with a steady frequency, on one hemisphere /
  on both;
- other: background only, polymorphic (broadband) delta, sporadic sharp waves or muscle bursts.
Lateralized patterns pick left or right at random.

A pattern is one waveform times a spatial field over the 19 scalp electrodes (a Gaussian around a
focus, elongated front to back; a generalized field is the focus and its mirror image, frontally
predominant; each electrode scaled by 0.6-1), so it survives the bipolar montage. Under every
pattern runs a background of 1/f noise (8-20 µV per electrode plus a common part that the montage
cancels), a posterior alpha rhythm (8.5-11 Hz, strongest on O1/O2) in 60 % of sessions, and
nuisances: eye blinks (Fp1/Fp2), EKG leakage and an EKG channel with a 1.5-6 mV R wave, 60 Hz line
noise, a flat or very noisy channel, rare huge outliers and interior NaN gaps.

Each labelled EEG part is an *event*: one segment whose class mix (a dominant class plus rater
disagreement) gives the votes of all its label rows, so overlapping windows share their votes. The
dominant pattern fills the whole event, so every labelled 50 s window shows it throughout.
Spectrograms are computed from the session signal the way Kaggle's are (`_spectrogram`).
EEG values are stored in 1/16 µV steps (like an ADC); parquet files are zstd-compressed.

Everything is a function of the seed: the same seed gives byte-identical CSVs and identical arrays.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.fft
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from hms_keras import constants, paths

logger = logging.getLogger(__name__)

SYNTHETIC_VERSION = 1  # bump when the generated data change; it names the embedded folder
DEFAULT_EMBEDDED_EEGS = 600

FS = constants.RAW_SAMPLING_RATE_HZ  # 200 Hz
NUM_PROBES = len(constants.EEG_PROBES)  # 19
EKG_COLUMN = constants.EEG_COLUMNS.index("EKG")  # 19
# A session is rendered MARGIN_S seconds beyond its spectrogram on both sides, so the first and
# last 5.12 s spectrogram frames have data.
MARGIN_S = 3
# The EEG and spectrogram windows of a label share their centre (EEG second off+25, spectrogram
# second off+300), so spectrogram offset = EEG offset + file start in the session - SPEC_LEAD_S.
SPEC_LEAD_S = constants.SPECTROGRAM_WINDOW_ROWS - constants.WINDOW_SECONDS // 2  # 275
SPEC_FRAME = 1024  # samples per spectrogram frame (5.12 s): bin k is k * 200 / 1024 Hz
SPEC_HOP = FS * constants.SPECTROGRAM_SECONDS_PER_ROW  # 400 samples = 2 s
SPEC_FIRST_BIN = 3  # bins 3..102 are the 100 Kaggle frequencies, 0.59 .. 19.92 Hz

# Mean consensus shares of the real train.csv, CLASSES order.
REAL_CONSENSUS_SHARES = (0.16, 0.15, 0.11, 0.055, 0.11, 0.415)
# Share of each dominant class, calibrated (by simulating _class_mix + _draw_votes) so that the
# consensus, the argmax of the drawn votes, lands on REAL_CONSENSUS_SHARES: 5-12 % of the events
# have another class win the argmax, most often away from "other".
_DOMINANT_PRIOR = np.array([0.147, 0.139, 0.103, 0.046, 0.100, 0.465])
# How often raters pick each other class when they disagree with the dominant one (row = dominant).
_CONFUSION = np.array([
    # sz   lpd   gpd  lrda  grda other
    [0.0, 3.0, 1.0, 1.0, 1.0, 3.0],  # seizure
    [2.0, 0.0, 3.0, 2.0, 0.5, 2.0],  # lpd
    [1.0, 3.0, 0.0, 0.5, 2.0, 2.0],  # gpd
    [1.0, 2.0, 0.5, 0.0, 3.0, 2.0],  # lrda
    [1.0, 0.5, 2.0, 2.0, 0.0, 3.0],  # grda
    [1.0, 1.0, 1.0, 1.0, 2.0, 0.0],  # other
])
_HIGH_VOTE_SHARE = 0.42  # share of events rated by 10-28 experts; the rest have 1-7

# Approximate scalp positions of the 19 probes (EEG_PROBES order): x left(-1)..right(+1),
# y back(-1)..front(+1).
_PROBE_XY = np.array([
    (-0.30, 0.95), (-0.40, 0.50), (-0.50, 0.00), (-0.40, -0.50),  # Fp1 F3 C3 P3
    (-0.80, 0.60), (-1.00, 0.00), (-0.80, -0.60), (-0.30, -0.95),  # F7 T3 T5 O1
    (0.00, 0.50), (0.00, 0.00), (0.00, -0.50),  # Fz Cz Pz
    (0.30, 0.95), (0.40, 0.50), (0.50, 0.00), (0.40, -0.50),  # Fp2 F4 C4 P4
    (0.80, 0.60), (1.00, 0.00), (0.80, -0.60), (0.30, -0.95),  # F8 T4 T6 O2
])
# Index of each probe's left/right mirror image (Fz, Cz, Pz map to themselves).
_MIRROR_NAME = {**dict(constants.MIRROR_PROBE_PAIRS), **{b: a for a, b in constants.MIRROR_PROBE_PAIRS}}
_MIRROR_PROBE = np.array([constants.EEG_PROBES.index(_MIRROR_NAME.get(name, name)) for name in constants.EEG_PROBES])
_SPLIT_STREAM = {"train": 1, "test": 2}  # seeds each split's per-session render generators apart


@dataclass(frozen=True)
class Segment:
    """A stretch of a session showing one activity pattern.

    `start_s`/`end_s` are session seconds; `pattern` indexes constants.CLASSES; `side` is -1 (left
    hemisphere), +1 (right) or 0 (bilateral); `gain` scales the pattern's amplitude.
    """

    start_s: float
    end_s: float
    pattern: int
    side: int
    gain: float


@dataclass(frozen=True)
class EegFile:
    """One EEG parquet cut from a session: session seconds [start_s, start_s + seconds)."""

    eeg_id: int
    start_s: int
    seconds: int


@dataclass(frozen=True)
class Session:
    """One continuous recording: its spectrogram covers session seconds [0, seconds)."""

    split: str  # "train" or "test"
    index: int  # position within its split; seeds the session's render generator
    spectrogram_id: int
    seconds: int  # even; the spectrogram has seconds // 2 rows
    segments: tuple[Segment, ...]
    eegs: tuple[EegFile, ...]


@dataclass(frozen=True)
class _Event:
    """A labelled part of an EEG file: `seconds` long, label offsets relative to its start."""

    seconds: int
    offsets: tuple[int, ...]  # even seconds; each window [off, off + 50) lies inside the event
    pattern: int
    side: int
    gain: float
    votes: tuple[int, ...]  # 6 counts, CLASSES order


@dataclass(frozen=True)
class _IdSources:
    """Endless generators of unique random ids in the ranges the real ids span."""

    eeg: Iterator[int]
    spectrogram: Iterator[int]
    patient: Iterator[int]
    label: Iterator[int]


# --------------------------------------------------------------------------------------------
# public API


def generate_dataset(out_dir, n_eegs: int = 600, seed: int = 0, n_test_eegs: int | None = None,
                     workers: int = 1) -> Path:
    """Write a synthetic dataset in the Kaggle layout to `out_dir` (created; must be empty).

    `n_eegs` train EEGs and `n_test_eegs` test EEGs (default: max(2, n_eegs // 20)) are made;
    `workers` > 1 renders sessions in that many processes (same output). Returns `out_dir`.
    """
    if n_eegs < 1:
        raise ValueError(f"n_eegs must be at least 1, got {n_eegs}")
    n_test_eegs = max(2, n_eegs // 20) if n_test_eegs is None else n_test_eegs
    if n_test_eegs < 1:
        raise ValueError(f"n_test_eegs must be at least 1, got {n_test_eegs}")
    out_dir = _prepare_out_dir(Path(out_dir))
    train, test, sessions = _plan_dataset(seed, n_eegs, n_test_eegs)
    _render_sessions(sessions, seed, out_dir, workers)
    _write_csvs(out_dir, train, test)
    return out_dir


def embedded_data_dir(n_eegs: int = DEFAULT_EMBEDDED_EEGS, seed: int = 0, workers: int = 2) -> Path:
    """The embedded synthetic dataset, generated on first use under `paths.cache_root()/embedded/`.

    Generation writes into a temporary sibling folder that is renamed into place when complete,
    so an interrupted run never leaves a folder that looks finished.
    """
    target = paths.cache_root() / "embedded" / f"synthetic-v{SYNTHETIC_VERSION}-n{n_eegs}-s{seed}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("generating the embedded synthetic dataset (%d EEGs, seed %d) in %s", n_eegs, seed, target)
    generate_dataset(tmp, n_eegs=n_eegs, seed=seed, workers=workers)
    try:
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(tmp)  # another process finished the same dataset first
    return target


def main(argv=None) -> None:
    """Command line: `python -m hms_keras.data.synthetic --out DIR --n-eegs N --seed S`."""
    parser = argparse.ArgumentParser(
        prog="python -m hms_keras.data.synthetic",
        description="Write a synthetic HMS dataset in the exact Kaggle layout.")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    parser.add_argument("--n-eegs", type=int, default=600, help="number of train EEGs (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--n-test-eegs", type=int, default=None,
                        help="number of test EEGs (default max(2, n_eegs // 20))")
    parser.add_argument("--workers", type=int, default=2, help="render processes (default 2)")
    args = parser.parse_args(argv)
    out = generate_dataset(args.out, n_eegs=args.n_eegs, seed=args.seed,
                           n_test_eegs=args.n_test_eegs, workers=args.workers)
    print(out)


# --------------------------------------------------------------------------------------------
# output folder handling


def _prepare_out_dir(out_dir: Path) -> Path:
    """Create `out_dir` and the four parquet folders; refuse a folder that already has content."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: output folder is not empty; choose a new folder")
    for split in _SPLIT_STREAM:
        (out_dir / f"{split}_eegs").mkdir(parents=True, exist_ok=True)
        (out_dir / f"{split}_spectrograms").mkdir(exist_ok=True)
    return out_dir


def _remove_stale_tmp_dirs(target: Path) -> None:
    """Delete temporary folders of `target` left by generator processes that no longer run."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        pid = int(tmp.name.rsplit("-", 1)[1])
        if not _process_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 probes without touching it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# planning: sessions, EEG files, label rows (cheap, no signals)


def _plan_dataset(seed: int, n_eegs: int, n_test_eegs: int) -> tuple[pd.DataFrame, pd.DataFrame, list[Session]]:
    """Plan every session and label row: (train.csv frame, test.csv frame, sessions)."""
    rng = np.random.default_rng([seed, 0])
    ids = _id_sources(seed)
    sessions, train_rows = [], []
    for n_patient_eegs in _eegs_per_patient(rng, n_eegs):
        patient_id = next(ids.patient)
        for n_files in _files_per_session(rng, n_patient_eegs):
            session, rows = _plan_train_session(rng, ids, len(sessions), n_files, patient_id)
            sessions.append(session)
            train_rows.extend(rows)
    test_rows = []
    test_patients = [next(ids.patient) for _ in range(max(1, n_test_eegs // 2))]
    for index in range(n_test_eegs):
        session = _plan_test_session(rng, ids, index)
        sessions.append(session)
        test_rows.append((session.spectrogram_id, session.eegs[0].eeg_id, test_patients[index % len(test_patients)]))
    return _train_frame(train_rows), _test_frame(test_rows), sessions


def _id_sources(seed: int) -> _IdSources:
    """Id generators: eeg_id < 2^32, spectrogram_id < 2^31, patient_id < 2^16, label_id < 2^32."""
    return _IdSources(eeg=_unique_ints(seed, 1, 10**5, 2**32), spectrogram=_unique_ints(seed, 2, 10**5, 2**31),
                      patient=_unique_ints(seed, 3, 10, 2**16), label=_unique_ints(seed, 4, 10**2, 2**32))


def _unique_ints(seed: int, stream: int, low: int, high: int) -> Iterator[int]:
    """Uniform random ints in [low, high) without repeats, from generator stream (seed, stream)."""
    rng = np.random.default_rng([seed, 100 + stream])
    seen = set()
    while True:
        value = int(rng.integers(low, high))
        if value not in seen:
            seen.add(value)
            yield value


def _eegs_per_patient(rng, n_eegs: int) -> np.ndarray:
    """EEG counts of the patients (sum n_eegs): ~6 per patient, at least 8 patients when possible."""
    n_patients = max(min(n_eegs, 8), round(n_eegs / 6))
    shares = rng.dirichlet(np.full(n_patients, 2.0))
    return 1 + rng.multinomial(n_eegs - n_patients, shares)


def _files_per_session(rng, n_eegs: int) -> list[int]:
    """Split a patient's EEG count into sessions of 1-4 EEG files."""
    counts = []
    while n_eegs > 0:
        counts.append(min(n_eegs, 1 + int(rng.binomial(3, 0.5))))
        n_eegs -= counts[-1]
    return counts


def _plan_train_session(rng, ids: _IdSources, index: int, n_files: int, patient_id: int):
    """One train session with `n_files` EEG files, and its label rows (dicts, train.csv columns).

    Files start at odd session seconds >= 275 and are separated by even gaps, so every label's
    spectrogram offset is an even second >= 0 and its 300 rows fit inside the spectrogram.
    """
    spectrogram_id = next(ids.spectrogram)
    start = SPEC_LEAD_S + 2 * int(rng.integers(0, 10))
    segments = _filler_segments(rng, -MARGIN_S, start)
    eegs, rows = [], []
    for file_index in range(n_files):
        if file_index:
            gap_end = start + 2 * int(rng.integers(1, 30))
            segments += _filler_segments(rng, start, gap_end)
            start = gap_end
        events = [_plan_event(rng) for _ in range(1 + rng.binomial(2, 0.1))]
        eeg = EegFile(next(ids.eeg), start, sum(event.seconds for event in events))
        segments += _event_segments(eeg, events)
        rows += _label_rows(ids, eeg, events, spectrogram_id, patient_id, len(rows))
        eegs.append(eeg)
        start += eeg.seconds
    seconds = start + SPEC_LEAD_S + 2 * int(rng.integers(0, 10))
    segments += _filler_segments(rng, start, seconds + MARGIN_S)
    return Session("train", index, spectrogram_id, seconds, tuple(segments), tuple(eegs)), rows


def _plan_test_session(rng, ids: _IdSources, index: int) -> Session:
    """One test session: a 600 s spectrogram (300 rows) around a 50 s EEG at seconds [275, 325)."""
    event = _plan_event(rng)
    eeg = EegFile(next(ids.eeg), SPEC_LEAD_S, constants.WINDOW_SECONDS)
    seconds = 2 * constants.SPECTROGRAM_WINDOW_ROWS
    start = eeg.start_s - float(rng.uniform(0, 30))
    end = eeg.start_s + eeg.seconds + float(rng.uniform(0, 30))
    segments = (_filler_segments(rng, -MARGIN_S, start)
                + [Segment(start, end, event.pattern, event.side, event.gain)]
                + _filler_segments(rng, end, seconds + MARGIN_S))
    return Session("test", index, next(ids.spectrogram), seconds, tuple(segments), (eeg,))


def _plan_event(rng) -> _Event:
    """A labelled event: dominant pattern, its votes, and 1+ overlapping label windows 2-8 s apart."""
    dominant = int(rng.choice(constants.NUM_CLASSES, p=_DOMINANT_PRIOR))
    mix = _class_mix(rng, dominant)
    n_rows = 1 + min(int(rng.poisson(1.8)), 14)
    step = 2 * int(rng.integers(1, 5))
    lead, tail = 2 * rng.integers(0, 3, size=2)
    offsets = tuple(int(lead + step * k) for k in range(n_rows))
    seconds = int(offsets[-1] + constants.WINDOW_SECONDS + tail)
    gain = 0.5 + 0.5 * float(mix[dominant])  # clearer patterns for windows the raters agree on
    return _Event(seconds, offsets, dominant, _draw_side(rng, dominant), gain, tuple(_draw_votes(rng, mix)))


def _class_mix(rng, dominant: int) -> np.ndarray:
    """(6,) probabilities: the dominant class gets 0.35-1.0, the rest split by _CONFUSION."""
    p_dominant = 0.35 + 0.65 * rng.beta(2.5, 1.2)
    others = rng.dirichlet(0.5 * _CONFUSION[dominant] + 1e-3)
    others[dominant] = 0.0
    mix = (1.0 - p_dominant) * others / others.sum()
    mix[dominant] = p_dominant
    return mix


def _draw_votes(rng, mix: np.ndarray) -> np.ndarray:
    """(6,) int vote counts: 10-28 raters (_HIGH_VOTE_SHARE of events) or 1-7, multinomial on `mix`."""
    if rng.random() < _HIGH_VOTE_SHARE:
        n_raters = 10 + rng.binomial(18, 0.25)
    else:
        n_raters = 1 + rng.binomial(6, 0.35)
    return rng.multinomial(n_raters, mix)


def _draw_side(rng, pattern: int) -> int:
    """-1/+1 (left/right) for lateralized patterns, 0 for generalized; seizure and other: focal 60 %."""
    lateral = {"lpd": True, "lrda": True, "gpd": False, "grda": False}.get(constants.CLASSES[pattern])
    if lateral is None:
        lateral = rng.random() < 0.6
    return int(rng.choice((-1, 1))) if lateral else 0


def _event_segments(eeg: EegFile, events: list[_Event]) -> list[Segment]:
    """The events of an EEG file laid end to end from its start, as session segments."""
    segments, start = [], eeg.start_s
    for event in events:
        segments.append(Segment(start, start + event.seconds, event.pattern, event.side, event.gain))
        start += event.seconds
    return segments


def _filler_segments(rng, start: float, end: float) -> list[Segment]:
    """Unlabelled activity between and around EEG files: random patterns in 30-150 s pieces."""
    segments = []
    while start < end:
        stop = min(end, start + float(rng.uniform(30, 150)))
        pattern = int(rng.choice(constants.NUM_CLASSES, p=_DOMINANT_PRIOR))
        segments.append(Segment(start, stop, pattern, _draw_side(rng, pattern), 1.0))
        start = stop
    return segments


def _label_rows(ids: _IdSources, eeg: EegFile, events: list[_Event], spectrogram_id: int,
                patient_id: int, first_spectrogram_sub_id: int) -> list[dict]:
    """train.csv rows of one EEG file, in time order."""
    rows, event_start = [], 0
    for event in events:
        for offset in event.offsets:
            eeg_offset = event_start + offset
            rows.append({
                "eeg_id": eeg.eeg_id,
                "eeg_sub_id": len(rows),
                "eeg_label_offset_seconds": float(eeg_offset),
                "spectrogram_id": spectrogram_id,
                "spectrogram_sub_id": first_spectrogram_sub_id + len(rows),
                "spectrogram_label_offset_seconds": float(eeg_offset + eeg.start_s - SPEC_LEAD_S),
                "label_id": next(ids.label),
                "patient_id": patient_id,
                "expert_consensus": constants.CONSENSUS_NAMES[int(np.argmax(event.votes))],
                **dict(zip(constants.VOTE_COLUMNS, event.votes)),
            })
        event_start += event.seconds
    return rows


_TRAIN_COLUMNS = (
    "eeg_id", "eeg_sub_id", "eeg_label_offset_seconds", "spectrogram_id", "spectrogram_sub_id",
    "spectrogram_label_offset_seconds", "label_id", "patient_id", "expert_consensus", *constants.VOTE_COLUMNS,
)


def _train_frame(rows: list[dict]) -> pd.DataFrame:
    """train.csv as a frame: 15 columns, int64 / float64 offsets / str consensus, sorted by spectrogram."""
    frame = pd.DataFrame(rows, columns=list(_TRAIN_COLUMNS))
    dtypes = {column: "int64" for column in _TRAIN_COLUMNS}
    dtypes.update(eeg_label_offset_seconds="float64", spectrogram_label_offset_seconds="float64",
                  expert_consensus="str")
    frame = frame.astype(dtypes)
    return frame.sort_values(["spectrogram_id", "spectrogram_sub_id"], kind="stable").reset_index(drop=True)


def _test_frame(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """test.csv as a frame: spectrogram_id, eeg_id, patient_id (int64)."""
    return pd.DataFrame(rows, columns=["spectrogram_id", "eeg_id", "patient_id"]).astype("int64")


def _write_csvs(out_dir: Path, train: pd.DataFrame, test: pd.DataFrame) -> None:
    """Write train.csv, test.csv and a uniform sample_submission.csv."""
    train.to_csv(out_dir / "train.csv", index=False)
    test.to_csv(out_dir / "test.csv", index=False)
    submission = pd.DataFrame({"eeg_id": test["eeg_id"]})
    for column in constants.VOTE_COLUMNS:
        submission[column] = 1.0 / constants.NUM_CLASSES
    submission.to_csv(out_dir / "sample_submission.csv", index=False)


# --------------------------------------------------------------------------------------------
# rendering: session signal -> EEG and spectrogram parquet files


def _render_sessions(sessions: list[Session], seed: int, out_dir: Path, workers: int) -> None:
    """Render and write every session, in `workers` processes when > 1, with a progress bar.

    Workers are spawned, not forked: forking a process that already runs JAX or TensorFlow
    threads (a recipe that imported keras) can hang.
    """
    jobs = [(session, seed, out_dir) for session in sessions]
    progress = {"total": len(jobs), "desc": "synthetic sessions", "unit": "session"}
    if workers <= 1:
        for job in tqdm(jobs, **progress):
            _write_session(job)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in tqdm(pool.map(_write_session, jobs), **progress):
            pass


def _write_session(job: tuple[Session, int, Path]) -> None:
    """Render one session and write its spectrogram and EEG parquet files.

    The signal is rounded to 1/16 µV steps (like an ADC) before both, so the spectrogram is
    exactly that of the stored EEG values.
    """
    session, seed, out_dir = job
    signal = np.round(render_session(session, seed) * 16.0) / 16.0  # (samples, 20) float32 µV
    spectrogram = _spectrogram(signal, session.seconds // constants.SPECTROGRAM_SECONDS_PER_ROW)
    _write_spectrogram(out_dir / f"{session.split}_spectrograms" / f"{session.spectrogram_id}.parquet", spectrogram)
    for eeg in session.eegs:
        first = (eeg.start_s + MARGIN_S) * FS
        _write_eeg(out_dir / f"{session.split}_eegs" / f"{eeg.eeg_id}.parquet",
                   signal[first:first + eeg.seconds * FS])


def _write_eeg(path: Path, eeg: np.ndarray) -> None:
    """Write (time, 20) float32 µV as the 20 EEG_COLUMNS of a parquet file."""
    table = pa.table({name: eeg[:, k] for k, name in enumerate(constants.EEG_COLUMNS)})
    _write_parquet(table, path)


def _write_spectrogram(path: Path, values: np.ndarray) -> None:
    """Write (rows, 400) float32 as `time` (int64 odd seconds) + the 400 SPECTROGRAM_COLUMNS."""
    columns = {"time": np.arange(1, 2 * len(values), 2, dtype=np.int64)}
    columns.update({name: values[:, k] for k, name in enumerate(constants.SPECTROGRAM_COLUMNS)})
    _write_parquet(pa.table(columns), path)


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write float tables compactly (zstd, byte-stream split, no dictionaries); any reader opens them."""
    pq.write_table(table, path, compression="zstd", use_dictionary=False, use_byte_stream_split=True)


def _spectrogram(signal: np.ndarray, n_rows: int) -> np.ndarray:
    """Kaggle-style spectrogram of a rendered session: (n_rows, 400) float32, µV²/Hz.

    Row r is centred on session second 2r + 1 (sample (MARGIN_S + 2r + 1) * 200 of `signal`); per
    bipolar pair a Hann-windowed 1024-sample power spectral density, bins 3..102 (0.59-19.92 Hz),
    averaged over the 4 pairs of each chain; chains in SPECTROGRAM_CHAINS order. A frame touching a
    NaN gives NaN.
    """
    pairs = [pair for chain in constants.SPECTROGRAM_CHAINS for pair in constants.SPECTROGRAM_CHAIN_PAIRS[chain]]
    anodes, cathodes = _bipolar_indices(pairs)
    bipolar = signal[:, anodes] - signal[:, cathodes]  # (samples, 16) µV
    first = (MARGIN_S + 1) * FS - SPEC_FRAME // 2
    frames = sliding_window_view(bipolar, SPEC_FRAME, axis=0)[first::SPEC_HOP][:n_rows]  # (rows, 16, 1024)
    window = scipy.signal.get_window("hann", SPEC_FRAME).astype(np.float32)  # periodic Hann
    spectrum = scipy.fft.rfft(frames * window, axis=-1)[..., SPEC_FIRST_BIN:SPEC_FIRST_BIN + constants.SPECTROGRAM_BINS]
    density = 2.0 * np.abs(spectrum) ** 2 / (FS * np.sum(window**2))  # (rows, 16, 100)
    chains = density.reshape(n_rows, len(constants.SPECTROGRAM_CHAINS), 4, constants.SPECTROGRAM_BINS).mean(axis=2)
    return chains.reshape(n_rows, -1).astype(np.float32)  # (rows, 400)


def _bipolar_indices(pairs) -> tuple[list[int], list[int]]:
    """Column indices (EEG_COLUMNS) of anodes and cathodes of the given BIPOLAR_PAIRS indices."""
    anodes = [constants.EEG_COLUMNS.index(constants.BIPOLAR_PAIRS[p][0]) for p in pairs]
    cathodes = [constants.EEG_COLUMNS.index(constants.BIPOLAR_PAIRS[p][1]) for p in pairs]
    return anodes, cathodes


# --------------------------------------------------------------------------------------------
# the session signal


def render_session(session: Session, seed: int) -> np.ndarray:
    """The session's signal: (samples, 20) float32 µV at 200 Hz, EEG_COLUMNS order.

    Sample i is session second i / 200 - MARGIN_S, so the array covers session seconds
    [-MARGIN_S, session.seconds + MARGIN_S). Deterministic in (seed, session.split, session.index);
    background, patterns and nuisances draw from separate generators, so a session that differs
    only in its segments has the same background and nuisances.
    """
    background_rng, pattern_rng, nuisance_rng = (
        np.random.default_rng([seed, _SPLIT_STREAM[session.split], session.index, stream]) for stream in range(3))
    n = (session.seconds + 2 * MARGIN_S) * FS
    signal = np.zeros((n, len(constants.EEG_COLUMNS)), np.float32)
    signal[:, :NUM_PROBES] = _background(background_rng, n)
    for segment in session.segments:
        _add_segment(pattern_rng, signal, segment)
    _add_ekg(nuisance_rng, signal)
    _add_blinks(nuisance_rng, signal)
    _add_line_noise(nuisance_rng, signal)
    _add_bad_channel(nuisance_rng, signal)
    _add_outliers(nuisance_rng, signal)
    _add_nan_gaps(nuisance_rng, signal, session.eegs)
    return signal


def _colored_noise(rng, n: int, amplitude: np.ndarray) -> np.ndarray:
    """(n, k) float32 Gaussian noise with amplitude spectrum shaped like `amplitude` (n // 2 + 1, k).

    Each column is scaled to an expected RMS of 1 (a complex normal bin has E|X|² = 2, and irfft
    counts every bin but DC twice, so the variance is 4 Σ amplitude² / n²).
    """
    scale = n / np.sqrt(np.maximum(4.0 * np.sum(amplitude[1:].astype(np.float64) ** 2, axis=0), 1e-12))
    spectrum = np.empty(amplitude.shape, np.complex64)
    spectrum.real = rng.standard_normal(amplitude.shape, np.float32)
    spectrum.imag = rng.standard_normal(amplitude.shape, np.float32)
    spectrum *= (amplitude * scale).astype(np.float32)
    return scipy.fft.irfft(spectrum, n=n, axis=0)


def _frequencies(n: int) -> np.ndarray:
    """(n // 2 + 1,) float32 rfft frequencies in Hz of n samples at 200 Hz."""
    return np.fft.rfftfreq(n, 1.0 / FS).astype(np.float32)


def _background(rng, n: int) -> np.ndarray:
    """(n, 19) float32 µV: per-electrode 1/f noise + a common 1/f part + posterior alpha + DC offsets."""
    freq = _frequencies(n)
    exponent = rng.uniform(0.8, 1.6)
    pink = (freq > 0.1) / (freq + 0.5) ** (exponent / 2) / (1.0 + (freq / 70.0) ** 4)  # (n_freq,)
    alpha_hz = rng.uniform(8.5, 11.0)
    alpha = np.exp(-0.5 * ((freq - alpha_hz) / 0.5) ** 2)
    shapes = np.concatenate([np.repeat(pink[:, None], NUM_PROBES + 1, axis=1), alpha[:, None]], axis=1)
    sources = _colored_noise(rng, n, shapes)  # (n, 21): 19 own, common, alpha
    own_rms = rng.uniform(8.0, 20.0) * rng.uniform(0.7, 1.3, NUM_PROBES)
    common_rms = rng.uniform(10.0, 30.0)
    alpha_rms = rng.uniform(6.0, 20.0) if rng.random() < 0.6 else 0.0
    background = sources[:, :NUM_PROBES] * own_rms + sources[:, NUM_PROBES:NUM_PROBES + 1] * common_rms
    background += np.outer(sources[:, -1], alpha_rms * _alpha_weights())
    return background + rng.normal(0.0, 20.0, NUM_PROBES).astype(np.float32)


def _alpha_weights() -> np.ndarray:
    """(19,) alpha amplitude per probe: strongest at O1/O2, then P3/P4/Pz/T5/T6, faint in front."""
    y = _PROBE_XY[:, 1]
    return np.clip(0.15 - 0.85 * y, 0.05, 1.0)


def _field(rng, side: int) -> np.ndarray:
    """(19,) spatial weights in [0, 1] of a pattern.

    side -1/+1: a Gaussian around a focus on the left/right hemisphere, elongated front to back
    (the other hemisphere gets almost nothing); side 0: a focus and its mirror image, frontally
    predominant (generalized).
    Each weight is scaled by 0.6-1 (mirror probes alike), so neighbouring electrodes differ and
    the pattern shows on every bipolar pair inside its field.
    """
    jitter = rng.uniform(0.6, 1.0, NUM_PROBES)
    jitter = np.minimum(jitter, jitter[_MIRROR_PROBE])
    if side:
        focus = np.array([side * rng.uniform(0.5, 1.0), rng.uniform(-0.6, 0.6)])
        return jitter * _gaussian_field(focus, rng.uniform(0.35, 0.5), rng.uniform(0.6, 0.9))
    focus = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.0, 0.8)])
    width_x, width_y = rng.uniform(0.4, 0.6), rng.uniform(0.5, 0.8)
    mirrored = focus * [-1, 1]
    return jitter * np.maximum(_gaussian_field(focus, width_x, width_y), _gaussian_field(mirrored, width_x, width_y))


def _gaussian_field(focus: np.ndarray, width_x: float, width_y: float) -> np.ndarray:
    """(19,) exp(-dx² / 2 width_x² - dy² / 2 width_y²), (dx, dy) = probe position - `focus` (scalp units)."""
    dx, dy = (_PROBE_XY - focus).T
    return np.exp(-0.5 * (dx / width_x) ** 2 - 0.5 * (dy / width_y) ** 2).astype(np.float32)


def _add_segment(rng, signal: np.ndarray, segment: Segment) -> None:
    """Add a segment's pattern (with 1 s fade-in/out) to the probes of `signal` in place."""
    first = max(0, round((segment.start_s + MARGIN_S) * FS))
    stop = min(len(signal), round((segment.end_s + MARGIN_S) * FS))
    if stop <= first:
        return
    pattern = _PATTERN_RENDERERS[segment.pattern](rng, stop - first, segment.side, segment.gain)  # (n, 19)
    signal[first:stop, :NUM_PROBES] += pattern * _taper(stop - first)[:, None]


def _taper(n: int) -> np.ndarray:
    """(n,) float32 window: cosine ramps of min(1 s, n / 4) at both ends, 1 in between."""
    ramp = max(1, min(FS, n // 4))
    window = np.ones(n, np.float32)
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    window[:ramp] = edge
    window[n - ramp:] = np.minimum(window[n - ramp:], edge[::-1])
    return window


def _phase(freq_hz: np.ndarray) -> np.ndarray:
    """(n,) phase in radians of an oscillation with instantaneous frequency `freq_hz` (n,)."""
    return 2.0 * np.pi * np.cumsum(freq_hz, dtype=np.float64) / FS


def _seconds(n: int) -> np.ndarray:
    """(n,) float32 time in seconds of n samples at 200 Hz."""
    return np.arange(n, dtype=np.float32) / FS


def _render_seizure(rng, n: int, side: int, gain: float) -> np.ndarray:
    """(n, 19) µV: sharp-contoured 3.5-7.5 Hz rhythm with frequency and amplitude evolving over 10-25 s."""
    t = _seconds(n)
    period = rng.uniform(10.0, 25.0)
    cycle = 2.0 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(3.5, 7.5) * (1.0 + rng.uniform(0.25, 0.4) * np.sin(cycle))
    phase = _phase(freq)
    wave = np.sin(phase) + 0.5 * np.sin(2 * phase + 0.5) + 0.25 * np.sin(3 * phase + 1.0)
    envelope = gain * rng.uniform(100.0, 220.0) * (1.0 + 0.4 * np.cos(cycle))
    return np.outer(envelope * wave, _field(rng, side)).astype(np.float32)


def _render_discharges(rng, n: int, side: int, gain: float) -> np.ndarray:
    """(n, 19) µV: periodic discharges every 0.5-1.25 s (LPD with side ±1, GPD with side 0)."""
    rate_hz = rng.uniform(0.8, 2.0)
    times = _beat_samples(rng, n, rate_hz, jitter=0.06)
    triphasic = side == 0 and rng.random() < 0.5
    kernel, centre = _discharge_kernel(triphasic)
    amplitudes = gain * rng.uniform(150.0, 300.0) * rng.uniform(0.8, 1.2, len(times))
    wave = _place_kernel(n, times, amplitudes, kernel, centre)
    return np.outer(wave, _field(rng, side)).astype(np.float32)


def _render_delta(rng, n: int, side: int, gain: float) -> np.ndarray:
    """(n, 19) µV: rhythmic 1-2.5 Hz delta with a steady frequency (LRDA with side ±1, GRDA with 0)."""
    t = _seconds(n)
    wobble = 1.0 + 0.04 * np.sin(2 * np.pi * t / rng.uniform(8.0, 20.0) + rng.uniform(0, 2 * np.pi))
    phase = _phase(rng.uniform(1.0, 2.5) * wobble)
    wave = np.sin(phase) + 0.25 * np.sin(2 * phase + np.pi / 2)
    envelope = gain * rng.uniform(80.0, 200.0) * (1.0 + 0.15 * np.sin(2 * np.pi * t / rng.uniform(5.0, 15.0)))
    return np.outer(envelope * wave, _field(rng, side)).astype(np.float32)


def _render_other(rng, n: int, side: int, gain: float) -> np.ndarray:
    """(n, 19) µV of non-IIIC activity: nothing, polymorphic delta, sporadic sharp waves or muscle."""
    kind = rng.choice(4, p=(0.3, 0.35, 0.2, 0.15))
    if kind == 0:
        return np.zeros((n, NUM_PROBES), np.float32)
    if kind == 1:
        return _polymorphic_delta(rng, n, side)
    if kind == 2:
        return _sporadic_sharp_waves(rng, n, side)
    return _muscle(rng, n)


def _polymorphic_delta(rng, n: int, side: int) -> np.ndarray:
    """(n, 19) µV: broadband 0.5-4 Hz noise (irregular slowing, not rhythmic), 15-40 µV RMS."""
    freq = _frequencies(n)
    band = ((freq >= 0.5) & (freq <= 4.0)).astype(np.float32)[:, None]
    wave = _colored_noise(rng, n, band)[:, 0] * rng.uniform(15.0, 40.0)
    return np.outer(wave, _field(rng, side)).astype(np.float32)


def _sporadic_sharp_waves(rng, n: int, side: int) -> np.ndarray:
    """(n, 19) µV: isolated sharp waves at random (Poisson) times, 0.05-0.25 per second."""
    count = rng.poisson(rng.uniform(0.05, 0.25) * n / FS)
    times = np.sort(rng.integers(0, n, count))
    kernel, centre = _discharge_kernel(triphasic=False)
    wave = _place_kernel(n, times, rng.uniform(60.0, 140.0, count), kernel, centre)
    return np.outer(wave, _field(rng, side)).astype(np.float32)


def _muscle(rng, n: int) -> np.ndarray:
    """(n, 19) µV: 20-70 Hz bursts on the temporal electrodes (F7 F8 T3 T4 T5 T6)."""
    freq = _frequencies(n)
    band = ((freq >= 20.0) & (freq <= 70.0)).astype(np.float32)[:, None]
    burst = np.maximum(0.0, np.sin(2 * np.pi * _seconds(n) / rng.uniform(3.0, 10.0))) ** 2
    wave = _colored_noise(rng, n, band)[:, 0] * burst * rng.uniform(10.0, 30.0)
    weights = np.isin(constants.EEG_PROBES, ("F7", "F8", "T3", "T4", "T5", "T6")).astype(np.float32)
    return np.outer(wave, weights).astype(np.float32)


# Renderer of each class's pattern, CLASSES order: (rng, n, side, gain) -> (n, 19) float32 µV.
_PATTERN_RENDERERS = (_render_seizure, _render_discharges, _render_discharges, _render_delta, _render_delta,
                      _render_other)


def _beat_samples(rng, n: int, rate_hz: float, jitter: float) -> np.ndarray:
    """Sample indices < n of events at `rate_hz` with relative interval jitter (sd), random phase."""
    period = FS / rate_hz
    intervals = period * (1.0 + jitter * rng.standard_normal(int(n / period) + 2))
    times = rng.uniform(0, period) + np.cumsum(np.maximum(intervals, 0.5 * period)) - period
    return times[(times >= 0) & (times < n)].astype(np.int64)


def _discharge_kernel(triphasic: bool) -> tuple[np.ndarray, int]:
    """A discharge waveform (peak |value| ~1) at 200 Hz from -0.1 to 0.5 s, and the sample of t=0.

    Sharp negative wave (sd 25 ms, ~100 ms wide) followed by a slow positive wave at 160 ms;
    triphasic adds a small positive phase before the sharp wave.
    """
    t = np.arange(-0.1, 0.5, 1.0 / FS)
    kernel = -_gauss(t, 0.0, 0.025) + 0.5 * _gauss(t, 0.16, 0.07)
    if triphasic:
        kernel += 0.35 * _gauss(t, -0.07, 0.03)
    return kernel.astype(np.float32), round(0.1 * FS)


def _gauss(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Unit-height Gaussian bump at `centre` with standard deviation `width` (units of `t`)."""
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def _place_kernel(n: int, times: np.ndarray, amplitudes: np.ndarray, kernel: np.ndarray, centre: int) -> np.ndarray:
    """(n,) float32: `kernel` (its sample `centre` at each time) scaled by `amplitudes`, summed."""
    impulses = np.zeros(n, np.float32)
    np.add.at(impulses, times, amplitudes)
    return np.convolve(impulses, kernel)[centre:centre + n].astype(np.float32)


# --------------------------------------------------------------------------------------------
# nuisances (all in place on the (samples, 20) µV session signal)


def _add_ekg(rng, signal: np.ndarray) -> None:
    """EKG channel (R wave 1.5-6 mV, 50-110 bpm, baseline wander) and its 0-15 µV leak into the probes.

    The leak is three times stronger on the left hemisphere, as EKG artefact usually is.
    """
    n = len(signal)
    t = np.arange(-0.1, 0.45, 1.0 / FS)
    beat = (1.0 * _gauss(t, 0.0, 0.01) - 0.2 * _gauss(t, -0.025, 0.008) - 0.25 * _gauss(t, 0.025, 0.008)
            + 0.3 * _gauss(t, 0.25, 0.05)).astype(np.float32)
    beats = _beat_samples(rng, n, rng.uniform(50.0, 110.0) / 60.0, jitter=0.04)
    heart = _place_kernel(n, beats, np.ones(len(beats), np.float32), beat, round(0.1 * FS))
    wander = 100.0 * np.sin(2 * np.pi * 0.2 * _seconds(n) + rng.uniform(0, 2 * np.pi))
    signal[:, EKG_COLUMN] = rng.uniform(1500.0, 6000.0) * heart + wander + rng.normal(0.0, 10.0, n)
    leak = rng.uniform(0.0, 10.0) * rng.uniform(0.0, 1.0, NUM_PROBES) * (1.0 - 0.5 * np.sign(_PROBE_XY[:, 0]))
    signal[:, :NUM_PROBES] += np.outer(heart, leak.astype(np.float32))


def _add_blinks(rng, signal: np.ndarray) -> None:
    """In half the sessions: eye blinks (80-200 µV, ~0.4 s) on Fp1/Fp2, weaker on F3/F4/F7/F8/Fz."""
    if rng.random() < 0.5:
        return
    n = len(signal)
    count = rng.poisson(rng.uniform(0.05, 0.3) * n / FS)
    t = np.arange(-0.3, 0.3, 1.0 / FS)
    blink = _gauss(t, 0.0, 0.08).astype(np.float32)
    wave = _place_kernel(n, rng.integers(0, n, count), rng.uniform(80.0, 200.0, count), blink, int(0.3 * FS))
    weights = np.clip(_PROBE_XY[:, 1] - 0.4, 0.0, 1.0) / 0.55  # 1 at Fp1/Fp2, ~0.2 at F3/F4/Fz
    signal[:, :NUM_PROBES] += np.outer(wave, weights.astype(np.float32))


def _add_line_noise(rng, signal: np.ndarray) -> None:
    """In 35 % of sessions: 60 Hz mains, 0-15 µV with a random phase on each of the 20 channels."""
    if rng.random() >= 0.35:
        return
    channels = signal.shape[1]
    phase = 2 * np.pi * 60.0 * np.arange(len(signal)) / FS  # (samples,)
    shift = rng.uniform(0, 2 * np.pi, channels)
    amplitude = rng.uniform(0.0, 15.0, channels)  # sin(a + b) = sin a cos b + cos a sin b
    signal += np.outer(np.sin(phase), amplitude * np.cos(shift)).astype(np.float32)
    signal += np.outer(np.cos(phase), amplitude * np.sin(shift)).astype(np.float32)


def _add_bad_channel(rng, signal: np.ndarray) -> None:
    """In 6 % of sessions one probe is flat (0 µV); in another 6 % one probe has 100-300 µV noise."""
    draw = rng.random()
    probe = rng.integers(NUM_PROBES)
    if draw < 0.06:
        signal[:, probe] = 0.0
    elif draw < 0.12:
        signal[:, probe] += rng.normal(0.0, rng.uniform(100.0, 300.0), len(signal)).astype(np.float32)


def _add_outliers(rng, signal: np.ndarray) -> None:
    """In 15 % of sessions 1-3 electrode pops: 1-40 samples of ±3,000-30,000 µV on one channel."""
    if rng.random() >= 0.15:
        return
    for _ in range(rng.integers(1, 4)):
        length = rng.integers(1, 41)
        first = rng.integers(0, len(signal) - length)
        signal[first:first + length, rng.integers(signal.shape[1])] = rng.choice((-1, 1)) * rng.uniform(3e3, 3e4)


def _add_nan_gaps(rng, signal: np.ndarray, eegs: tuple[EegFile, ...]) -> None:
    """In 12 % of EEG files, a 0.1-3 s gap (NaN on all 20 channels) at least 1 s inside the file."""
    for eeg in eegs:
        if rng.random() >= 0.12:
            continue
        length = int(rng.uniform(0.1, 3.0) * FS)
        file_first = (eeg.start_s + MARGIN_S) * FS
        first = file_first + FS + rng.integers(0, eeg.seconds * FS - 2 * FS - length)
        signal[first:first + length] = np.nan


if __name__ == "__main__":
    main()
