"""Sliding-window prediction over whole recordings (`Ensemble.predict_recording`): the same
probabilities from a Kaggle parquet and from the signal written as a 256 Hz EDF, a Kaggle window
embedded in a longer recording predicted at its offset as on its own, batches of any size, and
the windows' placement; two tiny untrained v5 stand-ins saved as runs."""

import numpy as np
import pandas as pd
import pytest
from recording_runs import write_tiny_runs, write_two_member_ensemble

from hms_keras import constants
from hms_keras.data.hms import HmsDataError
from hms_keras.data.recordings import FlatRecordingError, RecordingTooShortError
from hms_keras.data.synthetic.recording_files import NEW_10_20_NAMES, long_recording, write_recording
from hms_keras.inference import Ensemble
from hms_keras.metrics import log_softmax, softmax
from hms_keras.sliding_windows import PREDICTION_COLUMNS, window_starts
from hms_keras.tasks.v5_eeg import eeg_inputs, head_mean_logits

pytest.importorskip("mne", reason="the eeg extra (mne, edfio) is not installed")

RATE = constants.RAW_SAMPLING_RATE_HZ


def write_parquet(path, raw_uv: np.ndarray):
    """(time, 20) µV as a Kaggle EEG parquet (float32 columns EEG_COLUMNS)."""
    pd.DataFrame(raw_uv, columns=list(constants.EEG_COLUMNS)).to_parquet(path)
    return path


def test_windows_start_every_stride_and_the_last_one_ends_with_the_recording():
    np.testing.assert_allclose(window_starts(130, 50, 10), [0, 10, 20, 30, 40, 50, 60, 70, 80])
    np.testing.assert_allclose(window_starts(136, 50, 10), [0, 10, 20, 30, 40, 50, 60, 70, 80, 86])
    np.testing.assert_allclose(window_starts(50, 50, 10), [0])
    np.testing.assert_allclose(window_starts(50.3, 50, 0.1), [0, 0.1, 0.2, 0.3], atol=1e-9)
    assert window_starts(49.9, 50, 10).size == 0
    with pytest.raises(ValueError, match="stride_s must be positive"):
        window_starts(100, 50, 0)


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory):
    return write_tiny_runs(tmp_path_factory.mktemp("runs") / "tiny_v5")


@pytest.fixture(scope="module")
def ensemble(recipe_dir):
    return Ensemble.load(recipe_dir)


@pytest.fixture(scope="module")
def recording():
    """(61200, 20) µV at 200 Hz: 306 s of a synthetic session."""
    return long_recording(306, seed=5)


def test_a_kaggle_parquet_and_the_same_signal_as_a_256_hz_edf_give_the_same_windows(ensemble, recording, tmp_path):
    parquet = ensemble.predict_recording(write_parquet(tmp_path / "1.parquet", recording), progress=False)
    assert list(parquet.columns) == list(PREDICTION_COLUMNS)
    np.testing.assert_allclose(parquet["start_s"], [*range(0, 251, 10), 256])
    np.testing.assert_allclose(parquet["end_s"] - parquet["start_s"], 50)
    np.testing.assert_allclose(parquet["centre_s"], parquet["start_s"] + 25)
    probabilities = parquet[list(constants.CLASSES)].to_numpy()  # (windows, 6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert probabilities.std(axis=0).max() > 0.01  # the windows differ: the comparison below means something

    edf = write_recording(tmp_path / "1.edf", recording, NEW_10_20_NAMES, sampling_rate_hz=256)
    from_edf = ensemble.predict_recording(edf, stride_s=10, progress=False)
    pd.testing.assert_frame_equal(from_edf[["start_s", "end_s"]], parquet[["start_s", "end_s"]])
    np.testing.assert_allclose(from_edf[list(constants.CLASSES)].to_numpy(), probabilities, atol=2e-3)
    # the array in memory is the parquet; a batch of 3 (the last one padded) is a batch of 32
    from_array = ensemble.predict_recording(recording, batch_size=3, progress=False)
    np.testing.assert_allclose(from_array[list(constants.CLASSES)].to_numpy(), probabilities, rtol=1e-5, atol=1e-7)


def test_a_kaggle_window_embedded_at_an_offset_is_predicted_there_as_on_its_own(ensemble, recording, tmp_path):
    window = long_recording(50, seed=11)  # (10000, 20): the Kaggle test file
    alone = ensemble.predict_file(write_parquet(tmp_path / "2.parquet", window))  # (6,)
    embedded = recording.copy()
    embedded[120 * RATE : 170 * RATE] = window  # seconds [120, 170)
    windows = ensemble.predict_recording(embedded, stride_s=10, progress=False).set_index("start_s")
    # within float16 rounding: the preprocessing stores (signal - the recording's median) as float16 mV, and
    # the two medians differ (the bipolar montage cancels the median itself)
    np.testing.assert_allclose(windows.loc[120.0, list(constants.CLASSES)].to_numpy(float), alone, atol=5e-4)
    assert np.abs(windows.loc[100.0, list(constants.CLASSES)].to_numpy(float) - alone).max() > 0.01


def test_recordings_that_cannot_be_predicted_raise_named_errors(ensemble, recording, tmp_path):
    with pytest.raises(RecordingTooShortError, match=r"^49.0 s of EEG; the models need at least one 50 s window"):
        ensemble.predict_recording(recording[: 49 * RATE])
    with pytest.raises(HmsDataError, match=r"short.parquet: only 9800 rows"):  # hms.read_eeg's own check
        ensemble.predict_recording(write_parquet(tmp_path / "short.parquet", recording[: 49 * RATE]))
    flat = write_parquet(tmp_path / "flat.parquet", np.zeros_like(recording))
    with pytest.raises(FlatRecordingError, match=r"flat.parquet: every EEG channel is flat"):
        ensemble.predict_recording(flat)


def test_a_spectrogram_recipe_slides_its_600_s_window_over_a_long_spectrogram(tmp_path):
    ensemble = Ensemble.load(write_tiny_runs(tmp_path / "tiny_spec", "spec_resnet34d"))
    spectrogram = np.random.default_rng(0).lognormal(size=(450, 400)).astype(np.float32)  # (rows, 400): 900 s
    windows = ensemble.predict_recording(spectrogram, stride_s=100, progress=False)
    np.testing.assert_allclose(windows["start_s"], [0, 100, 200, 300])
    np.testing.assert_allclose(windows["end_s"], [600, 700, 800, 900])
    one = ensemble.task.ensemble_probabilities(ensemble.models, ensemble.task.recording_inputs(spectrogram, 200.0))
    np.testing.assert_allclose(windows.loc[2, list(constants.CLASSES)].to_numpy(float), one[0], rtol=1e-5)


def test_an_ensemble_file_slides_its_members_views_and_weights_over_the_recording(recipe_dir, recording, tmp_path):
    blend = Ensemble.load(write_two_member_ensemble(tmp_path / "blend.json", recipe_dir))
    windows = blend.predict_recording(recording[: 100 * RATE], stride_s=25, progress=False)  # starts 0, 25, 50
    np.testing.assert_allclose(windows["start_s"], [0, 25, 50])
    # by hand, one window at a time from the raw recording: each member's views' head-mean logits
    # averaged, softmax; the members' log-probabilities weighted 0.7 / 0.3, softmax
    first, second = (ensemble.models[0] for ensemble in blend.ensembles)
    for row, start in enumerate([0.0, 25.0, 50.0]):
        views = [head_mean_logits(first, eeg_inputs(recording[: 100 * RATE], start, shift)) for shift in (-64, 0, 64)]
        log_first = log_softmax(np.mean(views, axis=0))  # (1, 6)
        log_second = log_softmax(head_mean_logits(second, eeg_inputs(recording[: 100 * RATE], start)))
        expected = softmax(0.7 * log_first + 0.3 * log_second)[0]
        np.testing.assert_allclose(windows.loc[row, list(constants.CLASSES)].to_numpy(float), expected, rtol=1e-5)
