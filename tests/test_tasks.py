"""The Task seam on its own: `task_for` builds tasks from recipes without reading data, and a toy
third kind of input trains, predicts and scores through `training` and `inference` unchanged."""

import dataclasses
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from hms_keras import constants, models, runs, tasks
from hms_keras.inference import Ensemble, score_out_of_fold
from hms_keras.losses import KLDivergenceFromLogits
from hms_keras.metrics import LOGIT_COLUMNS, softmax, submission_frame
from hms_keras.recipe import DataSettings, Recipe, TrainSettings
from hms_keras.tasks.base import Task, logits_frame
from hms_keras.training import BestWeights, train_recipe
from recipes.registry import get_recipe

FEATURES = 4


def mean_kl(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over rows of KL(truth || probabilities), both (rows, 6)."""
    return float(np.mean(np.sum(truth * np.log(truth / probabilities), axis=1)))


class ToyTask(Task):
    """64 rows of 4 features whose vote distribution is softmax(features @ W): a third kind of
    input that lives only in this test. Fold of row i: i % n_folds; "test" rows are the first 5."""

    ROWS = 64

    def __init__(self, data_dir=None, **settings):
        super().__init__(data_dir, **settings)
        rng = np.random.default_rng(0)
        self.features = rng.normal(size=(self.ROWS, FEATURES)).astype(np.float32)  # (rows, 4)
        weights = rng.normal(size=(FEATURES, constants.NUM_CLASSES))  # (4, 6)
        self.truth = softmax(self.features @ weights)  # (rows, 6)
        self.fold = np.arange(self.ROWS) % self.n_folds

    def _rows(self, fold, validation):
        return np.flatnonzero((self.fold == fold) == validation)

    def train_dataset(self, fold, *, seed, batch_size, min_weight_schedule, worker_count=0, first_epoch=0):
        rows = self._rows(fold, validation=False)
        steps = len(rows) // batch_size

        def batches():
            rng = np.random.default_rng(seed)
            for epoch in range(len(min_weight_schedule)):
                order = rng.permutation(rows)[: steps * batch_size].reshape(steps, batch_size)
                for batch in order if epoch >= first_epoch else ():
                    yield self.features[batch], self.truth[batch].astype(np.float32)

        return batches(), steps

    def loss(self):
        return KLDivergenceFromLogits()

    def monitor_score(self, model, fold, *, batch_size):
        return self.score_oof(self.predict_validation(model, fold, batch_size=batch_size), fold)["kl"]

    def predict_validation(self, model, fold, *, batch_size):
        rows = self._rows(fold, validation=True)
        logits = model.predict(self.features[rows], batch_size=batch_size, verbose=0)  # (rows, 6)
        return logits_frame(pd.DataFrame({"row": rows}), logits)

    def score_oof(self, oof, fold):
        logits = oof.groupby("row")[list(LOGIT_COLUMNS)].mean()  # (rows, 6) seed mean
        truth = self.truth[logits.index.to_numpy()]
        prior = self.truth[self._rows(fold, validation=False)].mean(axis=0)
        return {"kl": mean_kl(truth, softmax(logits.to_numpy())), "prior_kl": mean_kl(truth, prior[None])}

    def predict_test(self, models, *, batch_size=32, on_bad_recording="error"):
        return submission_frame(np.arange(5), self.ensemble_probabilities(models, self.features[:5]))

    def ensemble_probabilities(self, models, inputs, steps=None):
        return softmax(np.mean([model.predict(inputs, steps=steps, verbose=0) for model in models], axis=0))

    def read_recording(self, path):
        return np.load(path)  # (4,) features

    def recording_inputs(self, recording, offset_seconds=0.0):
        return np.asarray(recording, np.float32)[None]  # (1, 4)


def build_toy_model(name="toy_dense"):
    inputs = keras.Input((FEATURES,), name="features")
    return keras.Model(inputs, keras.layers.Dense(constants.NUM_CLASSES, name="logits")(inputs), name=name)


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "toy", ToyTask)
    monkeypatch.setitem(models.MODELS, "toy_dense", build_toy_model)
    return Recipe(
        name="toy",
        task="toy",
        model="toy_dense",
        data=DataSettings(n_folds=2),
        train=TrainSettings(epochs=3, batch_size=8, learning_rate=0.05, epsilon=1e-7),
        folds=(0, 1),
        seeds=(0, 1),
    )


def test_a_third_task_trains_predicts_and_scores_through_the_library(toy_registered, tmp_path):
    scores = train_recipe(toy_registered, tmp_path)
    assert list(scores["fold"]) == [0, 1] and list(scores["seeds"]) == [2, 2]
    assert (scores["kl"] < scores["prior_kl"]).all()  # it learned something in 3 epochs
    pd.testing.assert_frame_equal(score_out_of_fold(tmp_path / "toy"), scores)

    ensemble = Ensemble.load(tmp_path / "toy")
    assert isinstance(ensemble.task, ToyTask) and len(ensemble.models) == 4
    submission = ensemble.predict_test()
    assert list(submission["eeg_id"]) == list(range(5))
    np.save(tmp_path / "row3.npy", ensemble.task.features[3])
    np.testing.assert_allclose(
        ensemble.predict_file(tmp_path / "row3.npy"), submission.iloc[3, 1:].to_numpy(float), atol=1e-6
    )


def test_scoring_leaves_out_runs_without_oof_with_a_warning(toy_registered, tmp_path):
    recipe = dataclasses.replace(toy_registered, folds=(0,), seeds=(0, 1))
    train_recipe(recipe, tmp_path)
    (runs.run_dir(tmp_path / "toy", 0, 1) / runs.OOF_FILE).unlink()
    with pytest.warns(UserWarning, match=r"1 finished run\(s\) have no out-of-fold predictions.*seed_1"):
        scores = score_out_of_fold(tmp_path / "toy")
    assert list(scores["seeds"]) == [1]


def test_task_for_builds_the_recipes_task_without_reading_data(tmp_path):
    recipe = get_recipe("v5_eeg_cutmix")
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, n_folds=3))
    task = tasks.task_for(recipe, tmp_path / "not_there")
    assert isinstance(task, tasks.TASKS["v5_eeg"]) and task.n_folds == 3
    assert task.data_dir == tmp_path / "not_there"  # nothing read yet
    with pytest.raises(ValueError, match="not_there: HMS data folder not found"):
        task.layout  # noqa: B018 (the property reads the folder)
    assert isinstance(tasks.task_for(get_recipe("spec_resnet34d")), tasks.TASKS["spectrogram"])


def test_an_unknown_task_is_named():
    recipe = dataclasses.replace(get_recipe("v5_eeg_cutmix"), task="audio")
    with pytest.raises(ValueError, match="unknown task 'audio' in recipe 'v5_eeg_cutmix'; choose from"):
        tasks.task_for(recipe)


def test_runs_of_different_tasks_are_not_ensembled(toy_registered, tmp_path):
    recipe = dataclasses.replace(toy_registered, folds=(0,), seeds=(0, 1))
    train_recipe(recipe, tmp_path)
    other = runs.run_dir(tmp_path / "toy", 0, 1)
    description = runs.read_description(other)
    runs.write_description(other, {**description, "recipe": dataclasses.replace(description["recipe"], task="v5_eeg")})
    with pytest.raises(ValueError, match="cannot ensemble runs of different tasks"):
        Ensemble.load(tmp_path / "toy")


def test_the_best_checkpoint_rule_keeps_the_best_epoch_and_stops_after_patience(tmp_path):
    model = build_toy_model()
    model.compile(optimizer="adam", loss="mse")
    best = BestWeights(tmp_path, patience=2)
    best.set_model(model)
    kernel = model.get_layer("logits").kernel
    for epoch, val_kl in enumerate([0.5, 0.3, 0.4, 0.6]):
        kernel.assign(np.full(kernel.shape, float(epoch), np.float32))  # the weights "after" this epoch
        best.on_epoch_end(epoch, {"val_kl": val_kl})
    assert model.stop_training and best.state() == {"val_kl": 0.3, "epoch": 1, "wait": 2}
    best.restore(model)
    np.testing.assert_array_equal(np.asarray(kernel), 1.0)
    resumed = BestWeights(tmp_path, patience=2, state=best.state())  # as after a resume
    resumed.set_model(model)
    resumed.on_epoch_end(4, {"val_kl": 0.2})
    assert resumed.state() == {"val_kl": 0.2, "epoch": 4, "wait": 0}


HOLD_CLAIM = """
import sys, time
from pathlib import Path
from hms_keras import runs
with runs.claim(Path(sys.argv[1])) as claimed:
    print("held" if claimed else "busy", flush=True)
    time.sleep(120)
"""


def test_a_run_another_process_holds_is_skipped_then_trained_once_it_is_free(toy_registered, tmp_path, capsys):
    recipe = dataclasses.replace(toy_registered, folds=(0,), seeds=(0, 1))
    held = runs.run_dir(tmp_path / "toy", 0, 1)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        train_recipe(recipe, tmp_path)
        assert "fold 0 seed 1: another process is training it, skipped" in capsys.readouterr().out
        assert runs.is_finished(runs.run_dir(tmp_path / "toy", 0, 0))
        assert not runs.is_finished(held) and not runs.partial_dir(held).exists()
    finally:
        holder.kill()  # kill -9: the lock goes with the process
        holder.wait()
    train_recipe(recipe, tmp_path)
    assert runs.is_finished(held)


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(toy_registered, tmp_path, monkeypatch):
    def broken_model(name="toy_dense"):
        raise RuntimeError("the model cannot be built")

    monkeypatch.setitem(models.MODELS, "toy_dense", broken_model)
    with pytest.raises(RuntimeError, match="cannot be built"):
        train_recipe(dataclasses.replace(toy_registered, folds=(0,), seeds=(0,)), tmp_path)
    assert not runs.partial_dir(runs.run_dir(tmp_path / "toy", 0, 0)).exists()
