"""A recipe's fold x seed grid on Ray: each run is one Ray task, on this machine or a cluster.

    python -m recipes.train --recipe v5_eeg_cutmix --engine ray                        # a local Ray
    python -m recipes.train --recipe v5_eeg_cutmix --engine ray --address HEAD_IP:6379  # a cluster

Each task trains one fold x seed through `hms_keras.training.train_claimed`, the path the
sequential loop takes: the same run folders (written in `seed_<s>.partial/`, renamed when
complete), finished runs skipped, a run held by another process (another launch on the same
workdir) skipped, an interrupted run resumed from its last epoch checkpoint. A task's output goes
to `<run>.log`, kept in the finished folder as `train.log` (`runs.pending_log`).

A task whose worker dies (a lost node, an out-of-memory kill) is started again up to `max_retries`
times, and resumes from the run's last complete epoch; an exception raised by the training itself
(bad data, a bug) is not retried: it would fail the same way. Each task runs in a fresh worker
process (`max_calls=1`): `import hms_keras` applies its runtime settings before JAX starts, and
a GPU that Ray assigns (`CUDA_VISIBLE_DEVICES`) is the one JAX sees.

Resources: one GPU per task when the cluster has GPUs, and `cpus_per_task` CPUs (Ray counts them;
XLA:CPU itself uses every core of its node). The workdir must be one file system every node sees
at the same path (the run folders and their locks live there), and every node needs hms_keras
installed in the same environment (docs/scaling.md).
"""

import dataclasses
import os
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from hms_keras import runs
from hms_keras.models import MODELS
from hms_keras.recipe import Recipe
from hms_keras.tasks import TASKS, task_for
from hms_keras.training import TRAINED, score_recipe, train_claimed

RAY_MISSING = "--engine ray needs Ray, an optional extra: pip install 'hms_keras[ray]' (or pip install 'ray>=2.9')"
MAX_RETRIES = 2  # restarts of a task whose worker died
# what a local Ray keeps for objects: the tasks exchange only a recipe and a status line
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20
# the launching process's settings that the task processes need too (when set)
FORWARDED_ENVIRONMENT = ("KERAS_BACKEND", "HMS_KERAS_CACHE", "HMS_KERAS_RUNTIME_SETTINGS")


class RayMissingError(ImportError):
    """Ray is not installed; the message says how to install it."""


def import_ray():
    """The `ray` module; RayMissingError (RAY_MISSING) when it is not installed."""
    try:
        import ray
    except ModuleNotFoundError as error:
        if error.name != "ray":
            raise
        raise RayMissingError(RAY_MISSING) from None
    return ray


def train_recipe_on_ray(
    recipe: Recipe,
    workdir,
    *,
    address: str | None = None,
    cpus_per_task: float = 1,
    max_retries: int = MAX_RETRIES,
    local_cpus: int | None = None,
) -> pd.DataFrame:
    """Train every unfinished fold x seed of `recipe` under `workdir` as Ray tasks; returns the
    score table of `training.train_recipe`.

    address: a running Ray cluster (`HOST:6379`, or "auto"); None starts a local Ray with
    `local_cpus` CPUs (default: all) and a small object store, stopped at the end. Every run is
    waited for; when some failed, the first failure is raised after the others finished.
    """
    recipe.validate(tasks=TASKS, models=MODELS)
    ray = import_ray()
    workdir = Path(workdir).resolve()  # the task processes may start in another folder
    if recipe.data.data_dir is not None:  # ... so their data folder is an absolute path too
        data_dir = str(Path(recipe.data.data_dir).expanduser().resolve())
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, data_dir=data_dir))
    environment = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT if name in os.environ}
    local = {} if address else {"num_cpus": local_cpus, "object_store_memory": LOCAL_OBJECT_STORE_BYTES}
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": environment}, **local)
    try:
        gpus_per_task = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        train_task = ray.remote(
            num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries, retry_exceptions=False,
            max_calls=1,
        )(train_run_task)
        pending = {
            train_task.remote(recipe, fold, seed, str(workdir)): (fold, seed)
            for fold in recipe.folds
            for seed in recipe.seeds
        }
        failures = []
        with tqdm(total=len(pending), desc=f"{recipe.name} on Ray", unit="run") as progress:
            while pending:
                (done,), _ = ray.wait(list(pending), num_returns=1)
                fold, seed = pending.pop(done)
                run_dir = runs.run_dir(workdir / recipe.name, fold, seed)
                try:
                    outcome = ray.get(done)
                    log = f" ({run_dir / runs.LOG_FILE})" if outcome == TRAINED else ""
                    progress.write(f"[{recipe.name}] fold {fold} seed {seed}: {outcome}{log}")
                except ray.exceptions.RayError as error:
                    failures.append(error)
                    progress.write(f"[{recipe.name}] fold {fold} seed {seed}: failed ({type(error).__name__}); "
                                   f"its output is in {runs.pending_log(run_dir)}")
                progress.update()
    finally:
        ray.shutdown()
    if failures:  # the training's own exception (e.g. HmsDataError) where there is one, else Ray's
        first = failures[0]
        raise first.cause if isinstance(first, ray.exceptions.RayTaskError) and first.cause is not None else first
    return score_recipe(recipe, workdir, task_for(recipe))


def train_run_task(recipe: Recipe, fold: int, seed: int, workdir: str) -> str:
    """One Ray task: `train_claimed` for one fold x seed, its output in the run's log; returns
    the outcome (`training.TRAINED`, `FINISHED_EARLIER` or `HELD_ELSEWHERE`)."""
    return train_claimed(recipe, task_for(recipe), fold, seed, Path(workdir), log_to_file=True)
