"""The fold x seed grid on Ray (`hms_keras.ray_grid`, `recipes.train --engine ray`): a local Ray
with 2 CPUs trains a tiny grid into the sequential loop's folders and scores, a second launch
trains nothing, a task whose worker is killed mid-run is retried and resumes, an error of the
training itself is raised once, not retried, and the command explains a missing Ray in one line."""

import dataclasses
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from test_training import tiny_recipe

from hms_keras import runs
from hms_keras.data.hms import HmsDataError
from hms_keras.data.synthetic import generate_dataset
from hms_keras.ray_grid import RAY_MISSING, train_recipe_on_ray
from hms_keras.training import train_recipe
from recipes import train as train_script

FOLDS = (0, 1)
RUN_FILES = ("model.keras", "recipe.json", "history.csv", "oof.parquet")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "hms", n_eegs=30, seed=3, n_test_eegs=3)


def test_the_ray_engine_without_ray_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ModuleNotFoundError
    status = train_script.main(["--recipe", "v5_eeg_cutmix:quick", "--engine", "ray", "--workdir", str(tmp_path)])
    assert status == 2
    assert capsys.readouterr().err.strip() == f"error: {RAY_MISSING}"
    assert not any(tmp_path.iterdir())  # nothing trained


def test_an_address_without_the_ray_engine_is_refused(tmp_path, capsys):
    status = train_script.main(["--recipe", "v5_eeg_cutmix:quick", "--address", "auto", "--workdir", str(tmp_path)])
    assert status == 2 and "--address names a Ray cluster; it needs --engine ray" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_trains_the_sequential_loops_folders_and_scores(data_dir, tmp_path, capsys):
    recipe = tiny_recipe(data_dir, folds=FOLDS, seeds=(0,), epochs=1)
    sequential = train_recipe(recipe, tmp_path / "sequential")
    on_ray = train_recipe_on_ray(recipe, tmp_path / "ray", local_cpus=2)
    # same seeds, same data, same code path: the same weights, so the same out-of-fold scores
    pd.testing.assert_frame_equal(on_ray, sequential)
    for fold in FOLDS:
        run_dir = runs.run_dir(tmp_path / "ray" / recipe.name, fold, 0)
        assert runs.is_finished(run_dir) and all((run_dir / name).is_file() for name in RUN_FILES)
        assert f"fold {fold} seed 0: 1 epochs x" in (run_dir / runs.LOG_FILE).read_text()
        assert not runs.pending_log(run_dir).exists() and not runs.partial_dir(run_dir).exists()
        description = runs.read_description(run_dir)
        assert description["recipe"] == recipe and (description["fold"], description["seed"]) == (fold, 0)
    capsys.readouterr()
    again = train_recipe_on_ray(recipe, tmp_path / "ray", local_cpus=2)  # a second launch trains nothing
    pd.testing.assert_frame_equal(again, sequential)
    output = capsys.readouterr()
    assert (output.out + output.err).count(": finished earlier") == len(FOLDS)


def _kill_when_checkpointed(run_dir: Path, killed: list, timeout: float = 1200) -> None:
    """SIGKILL the process holding `run_dir`'s lock (the Ray worker training it, a descendant of
    this test process) once its first epoch checkpoint exists; appends the killed pid to `killed`."""
    lock = str(run_dir.with_name(run_dir.name + runs.LOCK_SUFFIX))
    deadline = time.time() + timeout
    while time.time() < deadline and runs.read_checkpoint(runs.partial_dir(run_dir)) is None:
        time.sleep(0.5)
    for process in psutil.Process().children(recursive=True):
        try:
            if any(file.path == lock for file in process.open_files()):
                process.send_signal(signal.SIGKILL)
                killed.append(process.pid)
                return
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


@pytest.mark.slow
def test_a_task_killed_mid_run_is_retried_and_resumes(data_dir, tmp_path):
    recipe = tiny_recipe(data_dir, folds=(0,), seeds=(0,), epochs=2)
    recipe = dataclasses.replace(recipe, name="killed_v5")
    run_dir = runs.run_dir(tmp_path / recipe.name, 0, 0)
    killed = []
    killer = threading.Thread(target=_kill_when_checkpointed, args=(run_dir, killed), daemon=True)
    killer.start()
    scores = train_recipe_on_ray(recipe, tmp_path, local_cpus=2)
    killer.join(timeout=5)
    assert killed, "no worker was killed after the first epoch checkpoint"
    assert runs.is_finished(run_dir) and all((run_dir / name).is_file() for name in RUN_FILES)
    description = runs.read_description(run_dir)
    assert description["resumed_after_epoch"] == 1  # the retry resumed from the killed attempt's checkpoint
    assert len(pd.read_csv(run_dir / "history.csv")) == 2
    log = (run_dir / runs.LOG_FILE).read_text()
    assert log.count("fold 0 seed 0: 2 epochs x") == 2 and "resuming after epoch 1" in log  # both attempts
    assert list(scores["fold"]) == [0]


@pytest.mark.slow
def test_an_error_of_the_training_is_raised_as_itself_and_not_retried(data_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.csv").write_text("not,the,hms,columns\n1,2,3,4\n")
    recipe = tiny_recipe(broken, folds=(0,), seeds=(0,), epochs=1)
    with pytest.raises(HmsDataError, match="train.csv"):
        train_recipe_on_ray(recipe, tmp_path / "runs", local_cpus=2)
    run_dir = runs.run_dir(tmp_path / "runs" / recipe.name, 0, 0)
    log = runs.pending_log(run_dir).read_text().splitlines()
    assert sum(line.startswith("hms_keras.data.hms.HmsDataError: ") for line in log) == 1  # one attempt, logged
    assert not runs.partial_dir(run_dir).exists() and not run_dir.exists()
