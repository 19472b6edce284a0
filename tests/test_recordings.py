"""Reading EEG recordings outside the Kaggle folder: EDF and BDF files written from synthetic
sessions under another lab's channel names, at 256 Hz, in volts; the channel-name rules; missing
electrodes; and the named errors of recordings that cannot be predicted."""

import sys

import numpy as np
import pytest

from hms_keras import constants
from hms_keras.data.cache import preprocess_recording
from hms_keras.data.hms import HmsDataError
from hms_keras.data.recordings import (
    MISSING_ELECTRODE_UV,
    FlatRecordingError,
    MissingElectrodesError,
    NoEegChannelsError,
    RecordingError,
    RecordingTooShortError,
    check_eeg_signal,
    electrode_of,
    read_eeg_recording,
    recording_channels,
)
from hms_keras.data.synthetic.recording_files import NEW_10_20_NAMES, long_recording, write_recording

pytest.importorskip("mne", reason="the eeg extra (mne, edfio) is not installed")

SECONDS = 120
EDGE = 2 * constants.RAW_SAMPLING_RATE_HZ  # resampling's edge effects: first and last 2 s not compared


@pytest.mark.parametrize(("channel", "electrode"), [
    ("Fp1", "Fp1"), ("FP1", "Fp1"), ("fp1", "Fp1"), ("EEG Fp1-REF", "Fp1"), ("EEG FP1-Ref", "Fp1"),
    ("Fp1-LE", "Fp1"), ("Fp1-AVG", "Fp1"), ("C3-A1", "C3"), ("Cz-M2", "Cz"), (" fz ", "Fz"),
    ("T7", "T3"), ("t8", "T4"), ("EEG P7-REF", "T5"), ("P8-AVG", "T6"), ("T3", "T3"),
    ("EKG", "EKG"), ("ECG", "EKG"), ("EKG1", "EKG"), ("EEG EKG1-REF", "EKG"), ("ecg", "EKG"),
    ("Fp1-F7", None), ("T3-T5", None), ("EOG", None), ("Photic", None), ("F9", None), ("EEG A1-REF", None),
])
def test_channel_names_of_other_labs_map_to_the_kaggle_electrodes(channel, electrode):
    assert electrode_of(channel) == electrode


@pytest.fixture(scope="module")
def session():
    """(24000, 20) µV at 200 Hz: 120 s of a synthetic session with background and nuisances."""
    return long_recording(SECONDS, seed=3)


@pytest.mark.parametrize("suffix", [".edf", ".bdf"])
def test_a_256_hz_file_in_volts_with_new_names_reads_back_as_the_kaggle_layout(session, tmp_path, suffix):
    path = write_recording(tmp_path / f"rec{suffix}", session, NEW_10_20_NAMES, sampling_rate_hz=256)
    raw_uv = read_eeg_recording(path)
    assert raw_uv.shape == session.shape and raw_uv.dtype == np.float32
    error = np.abs(raw_uv - session)[EDGE:-EDGE, :19]  # (time, 19) µV after 200 -> 256 -> 200 Hz
    # the two resamplings' low-pass filters take the synthetic noise near 100 Hz (~0.25 µV); channels
    # land in place (T7 -> T3, ...): a swapped channel would be off by tens of µV
    assert np.median(error) < 0.5 and np.percentile(error, 99) < 2.0
    model_band = np.abs(preprocess_recording(raw_uv)[:, 0] - preprocess_recording(session)[:, 0])  # 40 Hz, mV
    assert np.percentile(model_band[EDGE // 5 : -EDGE // 5], 99) < 1e-3  # below 1 µV at 40 Hz
    np.testing.assert_allclose(np.std(raw_uv[EDGE:-EDGE], axis=0), np.std(session[EDGE:-EDGE], axis=0), rtol=0.02)
    assert recording_channels(path)["T5"] == "EEG P7-REF" and recording_channels(path)["EKG"] == "ECG"


def test_missing_electrodes_are_named_or_filled_so_the_channel_quality_marks_them_bad(session, tmp_path):
    names = [name for name in constants.EEG_COLUMNS if name not in ("T3", "O2", "EKG")]
    path = write_recording(tmp_path / "few.edf", session[:, [constants.EEG_COLUMNS.index(n) for n in names]], names)
    with pytest.raises(MissingElectrodesError, match=r"few.edf: missing electrode\(s\) T3, O2; found channels Fp1, "):
        read_eeg_recording(path)
    with pytest.warns(UserWarning, match=r"electrode\(s\) T3, O2 missing"):
        raw_uv = read_eeg_recording(path, allow_missing=True)
    assert (raw_uv[:, constants.EEG_COLUMNS.index("T3")] == MISSING_ELECTRODE_UV).all()
    assert (raw_uv[:, constants.EEG_COLUMNS.index("EKG")] == 0).all()
    cqf = preprocess_recording(raw_uv)[:, 1].astype(np.float32)  # (frames, 19)
    missing = [constants.EEG_PROBES.index("T3"), constants.EEG_PROBES.index("O2")]
    present = np.delete(np.arange(19), missing)
    assert cqf[100:, missing].max() < 0.01 < 0.5 < np.median(cqf[100:, present])
    assert recording_channels(path)["T3"] is None


def test_recordings_that_cannot_be_predicted_raise_named_errors(session, tmp_path):
    others = write_recording(tmp_path / "eog.edf", session[:, :3], ["EOG1", "EOG2", "Fp1-F7"])
    with pytest.raises(NoEegChannelsError, match=r"eog.edf: no EEG channel: none of the 3 channel names \(EOG1"):
        read_eeg_recording(others)
    short = write_recording(tmp_path / "short.edf", session[: 40 * 200], constants.EEG_COLUMNS)
    with pytest.raises(RecordingTooShortError, match=r"short.edf: 40.0 s of EEG; the models need at least one 50 s"):
        read_eeg_recording(short)
    flat = np.zeros_like(session)
    with pytest.raises(FlatRecordingError, match="every EEG channel is flat"):
        check_eeg_signal(flat)
    check_eeg_signal(np.where(np.arange(20) == 4, session, 0.0))  # one live channel is enough
    names = list(constants.EEG_COLUMNS)
    names[0] = "T7"  # in place of Fp1; T7 is T3, which is there too
    twice = write_recording(tmp_path / "twice.edf", session, names)
    with pytest.raises(RecordingError, match=r"several channels stand for one electrode \(T3: T7, T3\)"):
        read_eeg_recording(twice)
    (tmp_path / "notes.txt").write_text("not an EEG")
    with pytest.raises(RecordingError, match="notes.txt: MNE cannot read it"):
        read_eeg_recording(tmp_path / "notes.txt")
    with pytest.raises(RecordingError, match="absent.edf: file not found"):
        read_eeg_recording(tmp_path / "absent.edf")


def test_without_mne_reading_a_recording_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mne", None)  # `import mne` raises ImportError
    (tmp_path / "night.edf").write_bytes(b"0" * 256)
    with pytest.raises(HmsDataError, match=r'night.edf: reading EDF/BDF/... recordings needs MNE; install it with '
                                           r'pip install "hms_keras\[eeg\]"'):
        read_eeg_recording(tmp_path / "night.edf")
