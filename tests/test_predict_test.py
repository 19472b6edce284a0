"""Test-set prediction with recordings that changed or cannot be read: a replaced test EEG is
followed (not its stale cache), unreadable test files are named together in one error before any
model runs, or (on_bad_recording="prior") their rows get the training class prior."""

import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from hms_keras import constants
from hms_keras.data.hms import HmsDataError, read_test_csv, read_train_csv
from hms_keras.data.synthetic import generate_dataset
from hms_keras.inference import Ensemble
from hms_keras.tasks.base import baseline_prior
from hms_keras.tasks.spectrogram import SpectrogramTask
from hms_keras.tasks.v5_eeg import V5EegTask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small synthetic dataset (4 train, 4 test EEGs), generated once for the module."""
    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "data", n_eegs=4, n_test_eegs=4, seed=0)


@pytest.fixture
def data_dir(dataset, tmp_path):
    """A private copy of `dataset`, free to damage (its caches are its own too)."""
    return shutil.copytree(dataset, tmp_path / "data")


def tiny_v5_model(seed: int = 0) -> keras.Model:
    """{"eeg", "mask"}: (B, 512, 18) each -> (B, 2, 6) logits that differ from recording to recording."""
    eeg, mask = keras.Input((512, 18), name="eeg"), keras.Input((512, 18), name="mask")
    masked = keras.layers.Multiply()([eeg, mask])  # (B, 512, 18)
    features = keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling1D()(masked), keras.layers.GlobalMaxPooling1D()(masked)]
    )  # (B, 36)
    logits = keras.layers.Dense(12, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed))(features)
    return keras.Model({"eeg": eeg, "mask": mask}, keras.layers.Reshape((2, constants.NUM_CLASSES))(logits))


def tiny_spectrogram_model(seed: int = 0) -> keras.Model:
    """(B, 400, 300, 1) images -> (B, 6) logits."""
    image = keras.Input((400, 300, 1))
    features = keras.layers.Flatten()(keras.layers.AveragePooling2D((40, 30))(image))  # (B, 100)
    initializer = keras.initializers.RandomNormal(stddev=1.0, seed=seed)
    return keras.Model(image, keras.layers.Dense(constants.NUM_CLASSES, kernel_initializer=initializer)(features))


class MustNotRun:
    """A stand-in model that fails the test when asked to predict."""

    def predict(self, *args, **kwargs):
        raise AssertionError("a model ran before the unreadable test recordings were reported")


def recording_files(task, positions: list[int]) -> list:
    """The test recordings the task reads (EEG or spectrogram files) of test.csv rows `positions`."""
    test = read_test_csv(task.layout.test_csv)
    if isinstance(task, V5EegTask):
        return [task.layout.eeg_path("test", eeg_id) for eeg_id in test["eeg_id"].iloc[positions]]
    return [task.layout.spectrogram_path("test", key) for key in test["spectrogram_id"].iloc[positions]]


def damage(path, how: str) -> None:
    """Make a parquet file unreadable: "not parquet" overwrites it with text, "missing column"
    drops its second data column."""
    if how == "not parquet":
        path.write_bytes(b"this is not a parquet file\n")
    else:
        frame = pd.read_parquet(path)
        frame.drop(columns=frame.columns[1]).to_parquet(path, index=False)


def test_a_replaced_test_eeg_is_predicted_from_its_new_data(data_dir, caplog):
    task, models = V5EegTask(data_dir), [tiny_v5_model(0), tiny_v5_model(1)]
    before = task.predict_test(models)
    test = read_test_csv(data_dir / "test.csv")
    first = task.layout.eeg_path("test", test["eeg_id"].iloc[0])
    train_eeg = next(iter(sorted((data_dir / "train_eegs").iterdir())))
    shutil.copyfile(train_eeg, first)  # same eeg_id, another recording (a train EEG is >= 50 s too)

    with caplog.at_level("WARNING", logger="hms_keras.data.cache"):
        after = task.predict_test(models)
    assert f"1 source file(s) changed since they were cached, rebuilding them: {first}" in caplog.text
    expected = task.ensemble_probabilities(models, task.recording_inputs(task.read_recording(train_eeg)))  # (1, 6)
    np.testing.assert_allclose(after.iloc[0, 1:].to_numpy(float), expected[0], rtol=1e-5, atol=1e-7)
    assert not np.allclose(after.iloc[0, 1:].to_numpy(float), before.iloc[0, 1:].to_numpy(float))
    pd.testing.assert_frame_equal(after.iloc[1:], before.iloc[1:])  # the unchanged recordings


@pytest.mark.parametrize("task_class", [V5EegTask, SpectrogramTask])
def test_unreadable_test_recordings_are_named_in_one_error_before_any_model_runs(data_dir, task_class):
    task = task_class(data_dir)
    bad = recording_files(task, [1, 3])
    damage(bad[0], "not parquet")
    damage(bad[1], "missing column")

    with pytest.raises(HmsDataError) as error:
        task.predict_test([MustNotRun()])
    message = str(error.value)
    assert message.startswith(f"{bad[0].parent}: 2 unreadable test recording(s): {bad[0]} (not a readable parquet file")
    assert f", {bad[1]} (" in message and "missing" in message.split(f"{bad[1]} (")[1]
    assert "\n" not in message


@pytest.mark.parametrize(
    "task_class, build_model", [(V5EegTask, tiny_v5_model), (SpectrogramTask, tiny_spectrogram_model)]
)
def test_prior_fills_the_rows_of_unreadable_recordings(data_dir, task_class, build_model):
    task, models = task_class(data_dir), [build_model(0), build_model(1)]
    clean = task.predict_test(models)
    bad = recording_files(task, [0, 2])
    damage(bad[0], "missing column")
    damage(bad[1], "not parquet")

    with pytest.warns(UserWarning, match=r"2 unreadable test recording\(s\).*class prior") as caught:
        submission = task.predict_test(models, on_bad_recording="prior")
    assert all(str(path) in str(caught[0].message) for path in bad)
    assert list(submission["eeg_id"]) == list(read_test_csv(data_dir / "test.csv")["eeg_id"])  # all, in order
    probabilities = submission[list(constants.VOTE_COLUMNS)].to_numpy()  # (4, 6)
    prior = baseline_prior(read_train_csv(data_dir / "train.csv"))  # (6,)
    np.testing.assert_array_equal(probabilities[[0, 2]], np.tile(prior, (2, 1)))
    clean_probabilities = clean[list(constants.VOTE_COLUMNS)].to_numpy()
    np.testing.assert_allclose(probabilities[[1, 3]], clean_probabilities[[1, 3]], rtol=1e-5, atol=1e-7)
    assert not np.allclose(clean_probabilities[[0, 2]], np.tile(prior, (2, 1)))  # the prior is a real change


def test_an_unknown_on_bad_recording_is_refused_before_reading_data(tmp_path):
    with pytest.raises(ValueError, match=r"on_bad_recording must be one of \('error', 'prior'\), got 'skip'"):
        V5EegTask(tmp_path / "not_there").predict_test([], on_bad_recording="skip")


def test_the_ensemble_passes_on_bad_recording_to_its_task():
    calls = []

    class RecordingTask:
        def predict_test(self, models, *, batch_size, on_bad_recording):
            calls.append((batch_size, on_bad_recording))

    ensemble = object.__new__(Ensemble)  # no run folders needed for the pass-through
    ensemble.task, ensemble.models = RecordingTask(), []
    ensemble.predict_test(batch_size=8, on_bad_recording="prior")
    ensemble.predict_test()
    assert calls == [(8, "prior"), (32, "error")]
