"""Synthetic recordings as a clinic would hand them over: long sessions written as EDF or BDF, with
the file's own channel names, sampling rate and volts (tests and `benchmarks/recording.py`).

    raw_uv = long_recording(seconds=3600, seed=0)       # (time, 20) float32 µV at 200 Hz
    write_recording("night.edf", raw_uv, channel_names=NEW_10_20_NAMES, sampling_rate_hz=256)

EDF goes through MNE's exporter (edfio, 16-bit samples, one physical range per channel); BDF,
which MNE does not write, is written here (24-bit samples, the BioSemi header).
"""

import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from hms_keras import constants
from hms_keras.data.synthetic.plan import MARGIN_S, Segment, Session
from hms_keras.data.synthetic.render import render_session

# The 20 columns under the names of another lab: new 10-20 temporal names, `EEG ... -REF` labels.
NEW_10_20_NAMES = tuple(f"EEG {name}-REF" for name in
                        ("Fp1", "F3", "C3", "P3", "F7", "T7", "P7", "O1", "Fz", "Cz", "Pz",
                         "Fp2", "F4", "C4", "P4", "F8", "T8", "P8", "O2")) + ("ECG",)
_BDF_DIGITAL = (-(2**23), 2**23 - 1)
_UV_TO_VOLTS = 1e-6


def long_recording(seconds: int, seed: int = 0, segments: tuple[Segment, ...] = ()) -> np.ndarray:
    """A synthetic session of `seconds` (even) with background, nuisances and the given pattern
    `segments` (session seconds): (seconds * 200, 20) float32 µV at 200 Hz, EEG_COLUMNS order,
    NaN gaps filled with 0 (file formats hold no NaN)."""
    session = Session(split="test", index=seed, spectrogram_id=0, seconds=seconds, segments=segments, eegs=())
    signal = render_session(session, seed)[MARGIN_S * constants.RAW_SAMPLING_RATE_HZ:]  # session second 0 on
    return np.nan_to_num(signal[: seconds * constants.RAW_SAMPLING_RATE_HZ])


def _resampled(raw_uv: np.ndarray, sampling_rate_hz: int) -> np.ndarray:
    """(time, channels) at 200 Hz -> (time', channels) at `sampling_rate_hz` (polyphase)."""
    ratio = Fraction(sampling_rate_hz, constants.RAW_SAMPLING_RATE_HZ)
    if ratio == 1:
        return np.asarray(raw_uv, np.float64)
    return resample_poly(raw_uv, ratio.numerator, ratio.denominator, axis=0)


def write_recording(path, raw_uv: np.ndarray, channel_names=constants.EEG_COLUMNS,
                    sampling_rate_hz: int = constants.RAW_SAMPLING_RATE_HZ) -> Path:
    """Write (time, channels) µV at 200 Hz as an EDF (`.edf`) or BDF (`.bdf`) file in volts with
    `channel_names`, resampled to `sampling_rate_hz`. Whole seconds of signal keep the file's
    1 s data records full. Returns the path."""
    path = Path(path)
    data_uv = _resampled(raw_uv, sampling_rate_hz)  # (time', channels) µV
    if path.suffix == ".bdf":
        _write_bdf(path, data_uv, channel_names, sampling_rate_hz)
        return path
    import mne

    types = ["ecg" if name.upper().startswith(("ECG", "EKG")) else "eeg" for name in channel_names]
    info = mne.create_info(list(channel_names), sampling_rate_hz, types)
    raw = mne.io.RawArray(data_uv.T * _UV_TO_VOLTS, info, verbose="error")
    mne.export.export_raw(path, raw, fmt="edf", physical_range="channelwise", overwrite=True, verbose="error")
    return path


def _field(value, width: int) -> bytes:
    """A space-padded ASCII header field."""
    text = str(value).encode("ascii")[:width]
    return text + b" " * (width - len(text))


def _write_bdf(path: Path, data_uv: np.ndarray, channel_names, sampling_rate_hz: int) -> None:
    """BioSemi BDF: 256-byte header + 256 bytes per channel, then 1 s records of 24-bit little-endian
    samples, channel after channel; physical unit uV, one physical range per channel."""
    seconds = data_uv.shape[0] // sampling_rate_hz
    data_uv = data_uv[: seconds * sampling_rate_hz]  # (time, channels), whole records
    channels = data_uv.shape[1]
    low = np.minimum(data_uv.min(axis=0), -1.0)  # (channels,) µV; a flat channel still gets a range
    high = np.maximum(data_uv.max(axis=0), 1.0)
    scale = (_BDF_DIGITAL[1] - _BDF_DIGITAL[0]) / (high - low)  # digital steps per µV
    digital = np.clip(np.round((data_uv - low) * scale + _BDF_DIGITAL[0]), *_BDF_DIGITAL).astype(np.int32)
    start = datetime.datetime(2001, 1, 1)
    header = (b"\xffBIOSEMI" + _field("X X X X", 80) + _field("Startdate 01-JAN-2001 X X X", 80)
              + _field(start.strftime("%d.%m.%y"), 8) + _field(start.strftime("%H.%M.%S"), 8)
              + _field(256 * (channels + 1), 8) + _field("24BIT", 44) + _field(seconds, 8) + _field(1, 8)
              + _field(channels, 4))
    columns = [
        [_field(name, 16) for name in channel_names], [_field("AgAgCl electrode", 80)] * channels,
        [_field("uV", 8)] * channels, [_field(f"{value:.6g}", 8) for value in low],
        [_field(f"{value:.6g}", 8) for value in high], [_field(_BDF_DIGITAL[0], 8)] * channels,
        [_field(_BDF_DIGITAL[1], 8)] * channels, [_field("", 80)] * channels,
        [_field(sampling_rate_hz, 8)] * channels, [_field("", 32)] * channels,
    ]
    records = digital.reshape(seconds, sampling_rate_hz, channels).transpose(0, 2, 1)  # (records, channels, samples)
    as_bytes = np.ascontiguousarray(records, "<i4").view(np.uint8).reshape(*records.shape, 4)[..., :3]  # low 3 bytes
    with open(path, "wb") as handle:
        handle.write(header + b"".join(b"".join(column) for column in columns))
        handle.write(np.ascontiguousarray(as_bytes).tobytes())
