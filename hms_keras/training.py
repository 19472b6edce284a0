"""Train one fold x seed of a recipe and write its self-describing run folder (`hms_keras.runs`).

A run folder holds `model.keras` (last epoch, or best validation KL for "best" recipes),
`recipe.json` (the resolved recipe, fold, seed, backend, versions and the fold's scores),
`history.csv` (per-epoch loss, learning rate and validation score) and `oof.parquet`
(out-of-fold logits for every validation row). It is written into `seed_<s>.partial/` and
renamed into place when complete, so a killed run never leaves a folder that looks finished; a
re-run skips finished folders and starts half-written ones again.

The train step is compiled once per run: the datasets yield static shapes (`drop_remainder`),
the min-vote schedule travels inside the targets rather than as a Python constant in the loss,
and every epoch reuses `model.train_function`. On JAX this is checked, not assumed: XLA builds
of `train_step` during `fit` are counted (`compilations.count_xla_compilations`), written to
`recipe.json` as `train_step_compilations`, and a count other than 1 is reported. Compiled
programs are also kept on disk (`paths.use_persistent_compilation_cache`), so the runs after the
first skip XLA compilation.

`train.devices` above 1 trains one run data parallel over several devices (`hms_keras.devices`);
`hms_keras.ray_grid` spreads the fold x seed runs over a Ray cluster through `train_claimed`.
"""

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import keras
import pandas as pd

from hms_keras import runs
from hms_keras.compilations import count_xla_compilations
from hms_keras.devices import data_parallel, distributed, without_distribution
from hms_keras.models import MODELS
from hms_keras.optimizers import OneCycleFromPeak, TorchAdamW
from hms_keras.paths import use_persistent_compilation_cache
from hms_keras.recipe import Recipe
from hms_keras.tasks import TASKS, Task, task_for


def train_recipe(recipe: Recipe, workdir: Path) -> pd.DataFrame:
    """Train every fold x seed of `recipe` not yet finished under `workdir`; returns the score table.

    Each fold x seed is claimed with a lock first: runs another process is training are skipped
    (and said so), and an interrupted run resumes from its last complete epoch.
    """
    recipe.validate(tasks=TASKS, models=MODELS)
    task = task_for(recipe)
    for fold in recipe.folds:
        for seed in recipe.seeds:
            train_claimed(recipe, task, fold, seed, workdir)
    return score_recipe(recipe, workdir, task)


# What `train_claimed` did with one fold x seed.
TRAINED, FINISHED_EARLIER, HELD_ELSEWHERE = "trained", "finished earlier", "held by another process"


def train_claimed(recipe: Recipe, task: Task, fold: int, seed: int, workdir: Path, log_to_file: bool = False) -> str:
    """Train one fold x seed of `recipe` under `workdir` unless it is finished or another process
    holds its lock (`runs.claim`); returns TRAINED, FINISHED_EARLIER or HELD_ELSEWHERE.

    The one path every engine trains a run through (the sequential loop of `train_recipe`, a Ray
    task of `hms_keras.ray_grid`), so their run folders are the same and no two launches on one
    workdir train the same run. `log_to_file`: the training's output (this process's stdout and
    stderr, Python's and the libraries') is appended to `<run>.log` and kept in the finished
    folder as `train.log` (`runs.pending_log`, `runs.keep_log`).
    """
    use_persistent_compilation_cache()
    run_dir = runs.run_dir(Path(workdir) / recipe.name, fold, seed)
    with runs.claim(run_dir) as claimed:
        if not claimed:
            print(f"[{recipe.name}] fold {fold} seed {seed}: another process is training it, skipped")
            return HELD_ELSEWHERE
        if runs.is_finished(run_dir):
            print(f"[{recipe.name}] fold {fold} seed {seed}: finished earlier, skipped ({run_dir})")
            return FINISHED_EARLIER
        with output_appended_to(runs.pending_log(run_dir)) if log_to_file else contextlib.nullcontext():
            train_one(recipe, task, fold, seed, run_dir)
        runs.keep_log(run_dir)
        return TRAINED


@contextlib.contextmanager
def output_appended_to(path: Path) -> Iterator[None]:
    """Append everything this process writes to stdout and stderr during the block to `path`: the
    file descriptors 1 and 2 themselves, so the output of compiled libraries (XLA) goes there too.
    Python's streams write each line through, so a killed process's log ends where it stopped.
    An exception that ends the block is written there too, with its traceback."""
    streams = (sys.stdout, sys.stderr)
    line_buffering = [stream.line_buffering for stream in streams]
    for stream in streams:
        stream.flush()
        stream.reconfigure(line_buffering=True)
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            for stream, buffering in zip(streams, line_buffering, strict=True):
                stream.flush()
                stream.reconfigure(line_buffering=buffering)
            for descriptor, original in zip((1, 2), saved, strict=True):
                os.dup2(original, descriptor)
                os.close(original)


def score_recipe(recipe: Recipe, workdir: Path, task: Task) -> pd.DataFrame:
    """The per-fold out-of-fold score table of the recipe's finished runs under `workdir`."""
    return task.score_runs(runs.oof_runs_by_fold(Path(workdir) / recipe.name, folds=recipe.folds))


def train_one(recipe: Recipe, task: Task, fold: int, seed: int, run_dir: Path) -> Path:
    """Train fold `fold` with seed `seed` and write `run_dir` atomically.

    After every epoch the model and optimizer variables and the training state are saved in
    `<run>.partial/` (`runs.write_checkpoint`); a run started again resumes after the last
    complete epoch, on the same batches an uninterrupted run would see next. Call while holding
    the run's `runs.claim`.
    """
    checkpoint = runs.read_checkpoint(runs.partial_dir(run_dir))
    state = checkpoint[1] if checkpoint else {"epochs_done": 0, "history": [], "seconds": 0.0, "best": None}
    first_epoch = state["epochs_done"]
    started = time.time()

    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(recipe.train.mixed_precision or "float32")
    distribution = data_parallel(recipe.train.devices, recipe.train.batch_size, recipe.name)  # None: one device
    train_data, steps_per_epoch = task.train_dataset(
        fold,
        seed=seed,
        batch_size=recipe.train.batch_size,
        min_weight_schedule=recipe.min_weight_schedule(),
        worker_count=recipe.data.worker_count,
        first_epoch=first_epoch,
    )
    # after the data is read: a data error leaves no folder behind
    with runs.writing(run_dir) as partial, distributed(distribution):
        model = MODELS[recipe.model](**recipe.model_args)
        model.compile(
            optimizer=TorchAdamW(
                learning_rate=_learning_rate_schedule(recipe, steps_per_epoch * recipe.train.epochs),
                weight_decay=recipe.train.weight_decay,
                epsilon=recipe.train.epsilon,
            ),
            loss=task.loss(),
        )
        best = None
        if recipe.train.checkpoint == "best":
            best = BestWeights(partial, patience=recipe.train.early_stopping_patience or recipe.train.epochs,
                               state=state["best"])
        if checkpoint:
            model.optimizer.build(model.trainable_variables)  # so that its saved variables load too
            model.load_weights(checkpoint[0])
            print(f"[{recipe.name}] fold {fold} seed {seed}: resuming after epoch {first_epoch} ({checkpoint[0]})")
        callbacks = [OneStepInFlight(), ValidationScore(task, fold, batch_size=recipe.train.batch_size),
                     LearningRateLogger()]
        callbacks += [best] if best else []
        callbacks.append(EpochCheckpoint(partial, state, best, started))
        print(f"[{recipe.name}] fold {fold} seed {seed}: {recipe.train.epochs} epochs x {steps_per_epoch} steps")
        with count_xla_compilations() as compilations:
            model.fit(
                train_data,
                epochs=recipe.train.epochs,
                initial_epoch=first_epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=callbacks,
                shuffle=False,  # the Grain pipeline shuffles, per epoch and seed
                verbose=1,
            )
        train_step_compilations = compilations.get("train_step")  # None where nothing is counted (not JAX)
        if train_step_compilations not in (None, 1) and first_epoch < recipe.train.epochs:
            print(f"[{recipe.name}] warning: the train step was compiled {train_step_compilations} times, not once")
        if best is not None:
            best.restore(model)

        model.save(partial / runs.MODEL_FILE)
        pd.DataFrame(state["history"]).to_csv(partial / runs.HISTORY_FILE, index=False)
        with without_distribution():  # the last evaluation batch may not split across the devices
            oof = task.predict_validation(model, fold, batch_size=recipe.train.batch_size)
        scores = task.score_oof(oof, fold)
        oof.to_parquet(partial / runs.OOF_FILE, index=False)
        description = runs.describe(recipe, fold, seed)
        description.update(
            scores=scores,
            train_seconds=round(state["seconds"], 1),  # in epochs, over every process that trained this run
            resumed_after_epoch=first_epoch or None,
            train_step_compilations=train_step_compilations,
        )
        runs.write_description(partial, description)
        runs.publish(partial, run_dir)
        print(f"[{recipe.name}] fold {fold} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return run_dir


def _learning_rate_schedule(recipe: Recipe, total_steps: int):
    if recipe.train.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(recipe.train.learning_rate, decay_steps=total_steps, alpha=0.0)
    if recipe.train.schedule == "one_cycle":
        return OneCycleFromPeak(recipe.train.learning_rate, total_steps)
    raise ValueError(f"unknown schedule {recipe.train.schedule!r}; use 'cosine' or 'one_cycle'")


class OneStepInFlight(keras.callbacks.Callback):
    """Waits for each train step to finish before `fit` dispatches the next one.

    When no callback reads batch-level logs, Keras dispatches callbacks on a thread pool and the
    training loop does not wait for a step's results; on JAX every step is then queued as soon as
    its batch is ready (the Grain pipeline is ~100x faster than a CPU train step), and XLA:CPU
    runs several at once, each with its own temporary buffers. v5 at batch 32 on 2 CPU cores, one
    epoch of `train_recipe` (`benchmarks/train_run.py`): peak RSS 13.2 GB without this callback,
    5.3 GB with it (the bare step: 5.5 GB).
    """

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # blocks until the step's outputs exist


class ValidationScore(keras.callbacks.Callback):
    """Adds `val_kl` (the task's monitoring score on fold `fold`) to the epoch logs."""

    def __init__(self, task: Task, fold: int, batch_size: int):
        super().__init__()
        self.task = task
        self.fold = fold
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        with without_distribution():  # the last evaluation batch may not split across the devices
            logs["val_kl"] = self.task.monitor_score(self.model, self.fold, batch_size=self.batch_size)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate in force at the end of the epoch to the logs (for history.csv)."""

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest `val_kl` in `<partial>/best.weights.h5` and
    stops training after `patience` epochs without improvement (the "best" checkpoint rule).
    Its state survives a resume: pass the `state()` saved in the epoch checkpoint back in."""

    WEIGHTS = "best" + runs.CHECKPOINT_WEIGHTS_SUFFIX

    def __init__(self, partial: Path, patience: int, state: dict | None = None):
        super().__init__()
        self.path = partial / self.WEIGHTS
        self.patience = patience
        self.best = state or {"val_kl": None, "epoch": None, "wait": 0}

    def state(self) -> dict:
        return dict(self.best)

    def on_epoch_end(self, epoch, logs=None):
        score = float(logs["val_kl"])
        if self.best["val_kl"] is None or score < self.best["val_kl"]:
            temporary = self.path.with_name(f".tmp_{self.path.name}")
            self.model.save_weights(temporary)
            temporary.replace(self.path)
            self.best = {"val_kl": score, "epoch": epoch, "wait": 0}
        else:
            self.best["wait"] += 1
            if self.best["wait"] >= self.patience:
                self.model.stop_training = True

    def restore(self, model: keras.Model) -> None:
        """Load the best epoch's weights into `model` (its optimizer state included)."""
        model.load_weights(self.path)


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: append the epoch's logs to `state["history"]`, then save the model,
    optimizer and training state in `<run>.partial/` (`runs.write_checkpoint`). Runs last, after
    the callbacks that add to the logs."""

    def __init__(self, partial: Path, state: dict, best: BestWeights | None, started: float):
        super().__init__()
        self.partial = partial
        self.state = state
        self.best = best
        self.started = started
        self.seconds_before = state["seconds"]

    def on_epoch_end(self, epoch, logs=None):
        self.state["history"].append({"epoch": epoch, **{key: float(value) for key, value in logs.items()}})
        self.state["epochs_done"] = epoch + 1
        self.state["seconds"] = self.seconds_before + time.time() - self.started
        self.state["best"] = self.best.state() if self.best else None
        runs.write_checkpoint(self.partial, epoch + 1, self.model.save_weights, self.state)
