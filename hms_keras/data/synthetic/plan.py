"""Planning the synthetic dataset: sessions, EEG files, labelled events, votes and the CSV frames.

Planning is cheap (no signals): `render` turns each planned `Session` into its signal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hms_keras import constants

# A session is rendered MARGIN_S seconds beyond its spectrogram on both sides, so the first and
# last 5.12 s spectrogram frames have data.
MARGIN_S = 3
# The EEG and spectrogram windows of a label share their centre (EEG second off+25, spectrogram
# second off+300), so spectrogram offset = EEG offset + file start in the session - SPEC_LEAD_S.
SPEC_LEAD_S = constants.SPECTROGRAM_WINDOW_ROWS - constants.WINDOW_SECONDS // 2  # 275

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
                **dict(zip(constants.VOTE_COLUMNS, event.votes, strict=True)),
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
