"""End to end: a tiny fold x seed run writes its folders, predict writes a valid submission,
--oof scores, resume retrains only what is missing, a killed run is never used, and the same
recipe trains and predicts under TensorFlow."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from hms_keras import constants
from hms_keras.data.hms import read_test_csv
from hms_keras.data.synthetic import generate_dataset
from hms_keras.inference import Ensemble
from hms_keras.recipe import Recipe
from hms_keras.runs import RunFolderError, finished_runs, is_finished, read_checkpoint, read_description
from hms_keras.training import train_recipe
from recipes import predict as predict_script
from recipes.registry import get_recipe

REPO = Path(__file__).resolve().parents[1]


def tiny_recipe(data_dir: Path, folds=(0, 1), seeds=(0, 1), epochs=1) -> Recipe:
    recipe = get_recipe("v5_eeg_cutmix:quick")
    return dataclasses.replace(
        recipe,
        name="tiny_v5",
        data=dataclasses.replace(recipe.data, data_dir=str(data_dir), n_folds=3),
        train=dataclasses.replace(recipe.train, epochs=epochs, batch_size=4, min_weight_from_epoch=1),
        folds=folds,
        seeds=seeds,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "hms", n_eegs=18, seed=3, n_test_eegs=3)


GRID_SEEDS = (0, 1)
GRID_EPOCHS = 2  # the min-vote threshold switches on at epoch 1: the step must not recompile


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """2 folds x 2 seeds, 2 epochs, trained in this process (runs after the first reuse the
    persistent XLA compilation cache)."""
    workdir = tmp_path_factory.mktemp("runs")
    recipe = tiny_recipe(data_dir, seeds=GRID_SEEDS, epochs=GRID_EPOCHS)
    scores = train_recipe(recipe, workdir)
    return recipe, workdir / recipe.name, scores


def test_every_fold_and_seed_writes_a_complete_self_describing_folder(trained):
    recipe, recipe_dir, scores = trained
    runs = finished_runs(recipe_dir)
    assert [(run.parent.name, run.name) for run in runs] == [
        (f"fold_{fold}", f"seed_{seed}") for fold in (0, 1) for seed in GRID_SEEDS
    ]
    for run in runs:
        assert all((run / name).is_file() for name in ("model.keras", "recipe.json", "history.csv", "oof.parquet"))
        description = read_description(run)
        assert description["recipe"] == recipe
        assert description["fold"] == int(run.parent.name[-1]) and description["seed"] == int(run.name[-1])
        history = pd.read_csv(run / "history.csv")
        assert len(history) == GRID_EPOCHS and {"loss", "val_kl", "learning_rate"} <= set(history.columns)
        assert description["train_step_compilations"] == 1  # once per run, not per epoch
        assert np.isfinite(history[["loss", "val_kl"]].to_numpy()).all()
        oof = pd.read_parquet(run / "oof.parquet")
        assert {"eeg_id", "row", "label_id", *[f"logit_{k}" for k in range(6)]} <= set(oof.columns)
        assert np.isfinite(oof.filter(like="logit_").to_numpy()).all()
    assert list(scores["fold"]) == [0, 1] and list(scores["seeds"]) == [len(GRID_SEEDS)] * 2
    assert np.isfinite(scores[["cv", "prior_cv", "kaggle_all_rows", "prior_kaggle_all_rows"]].to_numpy()).all()


def test_predict_writes_a_valid_submission_in_test_order(trained, data_dir, tmp_path):
    _, recipe_dir, _ = trained
    out = tmp_path / "submission.csv"
    assert predict_script.main(["--runs", str(recipe_dir), "--out", str(out)]) == 0
    submission = pd.read_csv(out)
    assert list(submission.columns) == ["eeg_id", *constants.VOTE_COLUMNS]
    assert list(submission["eeg_id"]) == list(read_test_csv(data_dir / "test.csv")["eeg_id"])
    probabilities = submission[list(constants.VOTE_COLUMNS)].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert (probabilities > 0).all()


def test_single_file_api_matches_the_test_set_prediction(trained, data_dir):
    _, recipe_dir, _ = trained
    ensemble = Ensemble.load(recipe_dir)
    submission = ensemble.predict_test()
    eeg_id = int(submission["eeg_id"].iloc[0])
    probabilities = ensemble.predict_file(data_dir / "test_eegs" / f"{eeg_id}.parquet")
    expected = submission[list(constants.VOTE_COLUMNS)].to_numpy(float)[0]
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_oof_mode_prints_finite_scores(trained, capsys):
    _, recipe_dir, _ = trained
    assert predict_script.main(["--runs", str(recipe_dir), "--oof"]) == 0
    table = capsys.readouterr().out
    assert "prior_cv" in table and "nan" not in table


def test_resume_retrains_only_the_deleted_run(trained):
    recipe, recipe_dir, _ = trained
    import shutil

    deleted = recipe_dir / "fold_1" / "seed_0"
    kept = {run: (run / "model.keras").stat().st_mtime_ns for run in finished_runs(recipe_dir) if run != deleted}
    shutil.rmtree(deleted)
    train_recipe(recipe, recipe_dir.parent)
    assert is_finished(deleted)
    assert {run: (run / "model.keras").stat().st_mtime_ns for run in kept} == kept


@pytest.mark.slow  # 240 s on 2 idle cores (fresh-clone CI, 2026-12-02)
def test_a_killed_run_leaves_no_folder_that_predict_would_use(data_dir, tmp_path):
    workdir = tmp_path / "runs"
    command = [
        sys.executable, "-m", "recipes.train", "--recipe", "v5_eeg_cutmix:quick", "--workdir", str(workdir),
        "--data-dir", str(data_dir), "--set", "data.n_folds=3", "--set", "train.batch_size=4",
        "--set", "train.epochs=50",
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "KERAS_BACKEND": "jax"})
    partial = workdir / "v5_eeg_cutmix_quick" / "fold_0" / "seed_0.partial"
    deadline = time.time() + 240
    while not (partial / "history.csv").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.is_dir(), "the run never started"
    assert not (workdir / "v5_eeg_cutmix_quick" / "fold_0" / "seed_0").exists()
    with pytest.raises(RunFolderError, match="no finished run"):
        finished_runs(workdir / "v5_eeg_cutmix_quick")


RESUMED_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_training import tiny_recipe
from hms_keras.training import train_recipe
train_recipe(tiny_recipe(Path({data_dir!r}), folds=(0,), seeds=(0,), epochs={epochs}), Path({workdir!r}))
"""


@pytest.mark.slow  # 160 s on 2 idle cores (fresh-clone CI, 2026-12-02)
def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(trained, data_dir, tmp_path):
    """kill -9 during epoch 2 of 2, then the same command again: it resumes after epoch 1 and ends
    with the uninterrupted run's weights, optimizer steps and history, bit for bit (JAX, CPU)."""
    recipe, reference_dir, _ = trained
    script = RESUMED_RUN.format(tests=str(REPO / "tests"), data_dir=str(data_dir), epochs=GRID_EPOCHS,
                                workdir=str(tmp_path))
    command = [sys.executable, "-c", script]
    partial = tmp_path / recipe.name / "fold_0" / "seed_0.partial"
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while read_checkpoint(partial) is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint = read_checkpoint(partial)
    assert checkpoint is not None and checkpoint[1]["epochs_done"] == 1, "not killed inside epoch 2"

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch 1" in resumed.stdout
    run, reference = tmp_path / recipe.name / "fold_0" / "seed_0", reference_dir / "fold_0" / "seed_0"
    assert is_finished(run) and not partial.exists()
    resumed_model = keras.models.load_model(run / "model.keras")
    reference_model = keras.models.load_model(reference / "model.keras")
    assert int(resumed_model.optimizer.iterations) == int(reference_model.optimizer.iterations)
    for got, expected in zip(resumed_model.weights, reference_model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=got.path)
    pd.testing.assert_frame_equal(pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv"))
    assert read_description(run)["resumed_after_epoch"] == 1


@pytest.mark.slow  # 300 s on 2 idle cores (fresh-clone CI, 2026-12-02)
def test_tensorflow_trains_and_predicts_and_reads_jax_models(trained, data_dir, tmp_path):
    _, jax_recipe_dir, _ = trained
    script = f"""
import dataclasses, sys
sys.path.insert(0, {str(REPO / 'tests')!r})
from pathlib import Path
from test_training import tiny_recipe
from hms_keras.training import train_recipe
from hms_keras.inference import Ensemble
recipe = dataclasses.replace(tiny_recipe(Path({str(data_dir)!r}), folds=(0,), seeds=(0,)), name="tiny_v5_tf")
train_recipe(recipe, Path({str(tmp_path)!r}))
for recipe_dir in (Path({str(tmp_path)!r}) / "tiny_v5_tf", Path({str(jax_recipe_dir)!r})):
    submission = Ensemble.load(recipe_dir).predict_test()
    print("rowsums", submission.iloc[:, 1:].sum(axis=1).round(6).tolist())
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": "tensorflow"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sums = [line for line in result.stdout.splitlines() if line.startswith("rowsums")]
    assert sums == ["rowsums [1.0, 1.0, 1.0]"] * 2
    assert is_finished(tmp_path / "tiny_v5_tf" / "fold_0" / "seed_0")


@pytest.mark.slow
def test_spectrogram_recipe_trains_scores_and_predicts(data_dir, tmp_path):
    recipe = get_recipe("spec_resnet34d:quick")
    recipe = dataclasses.replace(
        recipe,
        name="tiny_spec",
        data=dataclasses.replace(recipe.data, data_dir=str(data_dir), n_folds=3),
        train=dataclasses.replace(recipe.train, epochs=2, batch_size=2, early_stopping_patience=1),
    )
    scores = train_recipe(recipe, tmp_path)
    run = tmp_path / "tiny_spec" / "fold_0" / "seed_1086"
    assert is_finished(run)
    history = pd.read_csv(run / "history.csv")
    assert len(history) >= 1 and np.isfinite(history["val_kl"]).all()
    assert np.isfinite(scores[["kl", "prior_kl"]].to_numpy()).all()
    submission = Ensemble.load(tmp_path / "tiny_spec").predict_test()
    assert list(submission["eeg_id"]) == list(read_test_csv(data_dir / "test.csv")["eeg_id"])
    np.testing.assert_allclose(submission[list(constants.VOTE_COLUMNS)].sum(axis=1), 1.0, rtol=1e-6)
