"""EEG recordings outside the Kaggle folder (EDF, EDF+, BDF, BrainVision, EEGLAB, FIF, ...), read
with MNE into the raw layout every v5 function takes: (time, 20) float32 µV at 200 Hz, columns
`constants.EEG_COLUMNS` (the 19 scalp electrodes, then EKG).

    raw_uv = read_eeg_recording("night.edf")                       # all 19 electrodes must be there
    raw_uv = read_eeg_recording("cap.bdf", allow_missing=True)     # missing ones marked bad

Channel names are matched to the Kaggle electrodes by `electrode_of` (`docs/recordings.md`):
case-insensitive, an `EEG ` prefix and a reference suffix (`-REF`, `-LE`, `-AVG`, `-A1`, ...)
dropped, the new 10-20 names T7/T8/P7/P8 read as T3/T4/T5/T6, and `EKG`/`ECG` (numbered or not)
as EKG. Values come from MNE in volts and are converted to µV; other sampling rates are
resampled to 200 Hz with a polyphase filter (`scipy.signal.resample_poly`, its default Kaiser
window), one channel at a time, so the float64 copy MNE hands out is one channel long.

MNE is an optional extra (`pip install "hms_keras[eeg]"`), imported only when a file is read.
"""

import re
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from hms_keras import constants
from hms_keras.data.hms import HmsDataError, read_eeg

VOLTS_TO_UV = 1e6
# What a missing electrode holds with allow_missing: a constant 10 mV, so far from every electrode
# that the channel quality factor's pairwise distances mark it bad (CQF ~1e-4), and which the
# bipolar montage's 0.5 Hz high-pass filter removes from the signal (a few seconds after a window's
# first frame, long before the model's crop). NaN would become 0 µV, which the CQF rates as good.
MISSING_ELECTRODE_UV = 10_000.0
# Kaggle name of each new (10-10) name of the same electrode.
ELECTRODE_ALIASES = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
# Reference suffixes after a `-`: linked ears, average, a mastoid or ear electrode, common reference.
REFERENCE_SUFFIXES = ("REF", "LE", "AR", "AVG", "AV", "CAR", "A1", "A2", "M1", "M2", "REF1", "REF2")
_PREFIX = re.compile(r"^EEG[\s_]+", re.IGNORECASE)
_EKG = re.compile(r"^(EKG|ECG)\d*$", re.IGNORECASE)
_CANONICAL = {name.upper(): name for name in constants.EEG_COLUMNS}
_NUM_PROBES = len(constants.EEG_PROBES)
_MAX_LISTED = 40  # channel names a missing-electrode message lists before counting the rest


class RecordingError(HmsDataError):
    """A recording that cannot feed the models; the message names the file (or `recording` for
    an array) and the problem on one line."""


class NoEegChannelsError(RecordingError):
    """No channel of the file is one of the 19 scalp electrodes."""


class MissingElectrodesError(RecordingError):
    """Some of the 19 electrodes are not in the file (and `allow_missing` was not given)."""


class RecordingTooShortError(RecordingError):
    """The recording is shorter than one 50 s window."""


class FlatRecordingError(RecordingError):
    """Every electrode holds one constant value (or nothing finite) throughout."""


def electrode_of(channel_name: str) -> str | None:
    """The `constants.EEG_COLUMNS` name a file's channel name stands for, or None.

    `EEG Fp1-REF`, `fp1`, `FP1-LE` -> `Fp1`; `T7` -> `T3`, `P8-AVG` -> `T6`; `ECG`, `EKG1`,
    `EEG EKG1-REF` -> `EKG`; a bipolar derivation such as `Fp1-F7` or an unknown name -> None.
    """
    name = _PREFIX.sub("", channel_name.strip())
    base, dash, suffix = name.partition("-")
    if dash:
        if suffix.strip().upper() not in REFERENCE_SUFFIXES:
            return None
        name = base
    name = name.strip()
    if _EKG.match(name):
        return "EKG"
    name = ELECTRODE_ALIASES.get(name.upper(), name.upper())
    return _CANONICAL.get(name)


def match_channels(channel_names, source) -> dict[str, int]:
    """{EEG_COLUMNS name: index into channel_names} of the channels `electrode_of` recognises.

    Raises RecordingError naming `source` when two channels stand for one electrode (e.g. `T3`
    and `T7`), NoEegChannelsError when none is a scalp electrode."""
    matches: dict[str, list[int]] = {}
    for index, channel in enumerate(channel_names):
        electrode = electrode_of(channel)
        if electrode is not None:
            matches.setdefault(electrode, []).append(index)
    twice = {electrode: indices for electrode, indices in matches.items() if len(indices) > 1}
    if twice:
        listed = "; ".join(f"{electrode}: {', '.join(channel_names[i] for i in indices)}"
                           for electrode, indices in twice.items())
        raise RecordingError(f"{source}: several channels stand for one electrode ({listed}); keep one of each")
    if not any(electrode in matches for electrode in constants.EEG_PROBES):
        raise NoEegChannelsError(
            f"{source}: no EEG channel: none of the {len(channel_names)} channel names "
            f"({_listed(channel_names)}) is one of the 19 10-20 electrodes {', '.join(constants.EEG_PROBES)}"
        )
    return {electrode: indices[0] for electrode, indices in matches.items()}


def _listed(names) -> str:
    """Channel names joined by commas, the first _MAX_LISTED of them and a count of the rest."""
    shown = ", ".join(names[:_MAX_LISTED])
    return shown if len(names) <= _MAX_LISTED else f"{shown}, ... ({len(names) - _MAX_LISTED} more)"


def check_eeg_signal(raw_uv: np.ndarray, source=None) -> None:
    """Raise RecordingTooShortError when (time, 20) `raw_uv` (200 Hz) is shorter than one 50 s
    window, FlatRecordingError when none of its 19 electrodes varies (each constant or NaN).
    The message starts with `<source>: ` when a source (file) is given."""
    prefix = f"{source}: " if source is not None else ""
    seconds = len(raw_uv) / constants.RAW_SAMPLING_RATE_HZ
    if seconds < constants.WINDOW_SECONDS:
        raise RecordingTooShortError(
            f"{prefix}{seconds:.1f} s of EEG; the models need at least one {constants.WINDOW_SECONDS} s window")
    probes = np.ma.filled(np.ma.asarray(raw_uv[:, :_NUM_PROBES], np.float32), np.nan)  # (time, 19)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
        spread = np.nanmax(probes, axis=0) - np.nanmin(probes, axis=0)  # (19,) µV, NaN for all-NaN
    if not np.any(spread > 0):
        raise FlatRecordingError(f"{prefix}every EEG channel is flat (one constant value or no finite value)")


def _import_mne(path):
    try:
        import mne
    except ImportError:
        raise HmsDataError(f'{path}: reading EDF/BDF/... recordings needs MNE; install it with pip install '
                           '"hms_keras[eeg]"') from None
    return mne


def resampling_ratio(sampling_rate_hz: float) -> Fraction:
    """`constants.RAW_SAMPLING_RATE_HZ` / `sampling_rate_hz` as up/down factors (denominator <= 1000)."""
    return Fraction(constants.RAW_SAMPLING_RATE_HZ / sampling_rate_hz).limit_denominator(1000)


def resample_to_raw_rate(signal: np.ndarray, sampling_rate_hz: float) -> np.ndarray:
    """(time,) samples at `sampling_rate_hz` -> (ceil(time * ratio),) float64 at
    `constants.RAW_SAMPLING_RATE_HZ` by polyphase filtering (`resampling_ratio`)."""
    ratio = resampling_ratio(sampling_rate_hz)
    if ratio == 1:
        return np.asarray(signal, np.float64)
    return resample_poly(signal, ratio.numerator, ratio.denominator)


def _open(path):
    """The file as an MNE Raw (data not loaded); RecordingError naming it when MNE cannot read it."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: file not found")
    mne = _import_mne(path)
    try:
        return mne.io.read_raw(path, preload=False, verbose="error")
    except Exception as error:  # MNE raises many types (ValueError, RuntimeError, KeyError, ...) for bad files
        raise RecordingError(f"{path}: MNE cannot read it as an EEG recording ({type(error).__name__}: "
                             f"{error})") from None


def recording_channels(path) -> dict[str, str | None]:
    """{EEG_COLUMNS name: the file's channel read as it, or None when missing} (header only)."""
    raw = _open(path)
    channels = match_channels(raw.ch_names, path)
    return {name: raw.ch_names[channels[name]] if name in channels else None for name in constants.EEG_COLUMNS}


def read_eeg_file(path, *, allow_missing: bool = False) -> np.ndarray:
    """(time, 20) µV at 200 Hz of any EEG file: a Kaggle `.parquet` through `hms.read_eeg`
    (nulls masked), any other format through `read_eeg_recording`."""
    if Path(path).suffix == ".parquet":
        return read_eeg(path)
    return read_eeg_recording(path, allow_missing=allow_missing)


def read_eeg_recording(path, *, allow_missing: bool = False) -> np.ndarray:
    """One EEG recording in any format `mne.io.read_raw` opens, as (time, 20) float32 µV at
    200 Hz in `constants.EEG_COLUMNS` order (what `hms.read_eeg` gives for a Kaggle parquet).

    Channels are matched with `electrode_of`; other channels are ignored. A missing EKG is 0 (the
    models do not use it). Missing electrodes raise MissingElectrodesError listing them and the
    file's channels; with `allow_missing` they hold MISSING_ELECTRODE_UV instead, which the
    channel quality factor marks bad, and a warning names them. Also raises
    NoEegChannelsError, RecordingTooShortError, FlatRecordingError, and RecordingError for a file
    MNE cannot read, each naming the file.
    """
    raw = _open(path)
    channels = match_channels(raw.ch_names, path)
    missing = [electrode for electrode in constants.EEG_PROBES if electrode not in channels]
    if missing and not allow_missing:
        raise MissingElectrodesError(
            f"{path}: missing electrode(s) {', '.join(missing)}; found channels {_listed(raw.ch_names)}; "
            "rename them, or pass --allow-missing (allow_missing=True) to predict with them marked bad")
    if missing:
        warnings.warn(f"{path}: electrode(s) {', '.join(missing)} missing; predicting with them marked bad "
                      "(a constant the channel quality factor rejects)", stacklevel=2)
    sampling_rate_hz = float(raw.info["sfreq"])
    ratio = resampling_ratio(sampling_rate_hz)
    samples = -(-raw.n_times * ratio.numerator // ratio.denominator)  # resample_poly's output length
    raw_uv = np.zeros((samples, len(constants.EEG_COLUMNS)), np.float32)  # (time, 20) µV, 200 Hz
    raw_uv[:, [constants.EEG_COLUMNS.index(electrode) for electrode in missing]] = MISSING_ELECTRODE_UV
    for electrode, index in channels.items():
        volts = raw.get_data(picks=[index], verbose="error")[0]  # (n_times,) float64 V
        raw_uv[:, constants.EEG_COLUMNS.index(electrode)] = resample_to_raw_rate(volts * VOLTS_TO_UV,
                                                                                 sampling_rate_hz)
    check_eeg_signal(raw_uv, path)
    return raw_uv
