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
"""

import time
from pathlib import Path

import keras
import pandas as pd

from hms_keras import runs
from hms_keras.compilations import count_xla_compilations
from hms_keras.models import MODELS
from hms_keras.optimizers import OneCycleFromPeak, TorchAdamW
from hms_keras.paths import use_persistent_compilation_cache
from hms_keras.recipe import Recipe
from hms_keras.tasks import Task, task_for


def train_recipe(recipe: Recipe, workdir: Path) -> pd.DataFrame:
    """Train every fold x seed of `recipe` not yet finished under `workdir`; returns the score table."""
    use_persistent_compilation_cache()
    task = task_for(recipe)
    recipe_dir = Path(workdir) / recipe.name
    for fold in recipe.folds:
        for seed in recipe.seeds:
            run_dir = runs.run_dir(recipe_dir, fold, seed)
            if runs.is_finished(run_dir):
                print(f"[{recipe.name}] fold {fold} seed {seed}: finished earlier, skipped ({run_dir})")
                continue
            train_one(recipe, task, fold, seed, run_dir)
    return task.score_runs(runs.oof_runs_by_fold(recipe_dir, folds=recipe.folds))


def train_one(recipe: Recipe, task: Task, fold: int, seed: int, run_dir: Path) -> Path:
    """Train fold `fold` with seed `seed` and write `run_dir` atomically."""
    partial = runs.start_partial(run_dir)
    started = time.time()

    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(recipe.train.mixed_precision or "float32")
    train_data, steps_per_epoch = task.train_dataset(
        fold,
        seed=seed,
        batch_size=recipe.train.batch_size,
        min_weight_schedule=recipe.min_weight_schedule(),
        worker_count=recipe.data.worker_count,
    )
    if recipe.model not in MODELS:
        raise ValueError(f"unknown model {recipe.model!r} in recipe {recipe.name!r}; choose from {sorted(MODELS)}")
    model = MODELS[recipe.model](**recipe.model_args)
    model.compile(
        optimizer=TorchAdamW(
            learning_rate=_learning_rate_schedule(recipe, steps_per_epoch * recipe.train.epochs),
            weight_decay=recipe.train.weight_decay,
            epsilon=recipe.train.epsilon,
        ),
        loss=task.loss(),
    )
    validation = ValidationScore(task, fold, batch_size=recipe.train.batch_size)
    callbacks = [validation, LearningRateLogger(), keras.callbacks.CSVLogger(str(partial / runs.HISTORY_FILE))]
    if recipe.train.checkpoint == "best":
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_kl",
                mode="min",
                patience=recipe.train.early_stopping_patience or recipe.train.epochs,
                restore_best_weights=True,
            )
        )
    print(f"[{recipe.name}] fold {fold} seed {seed}: {recipe.train.epochs} epochs x {steps_per_epoch} steps")
    with count_xla_compilations() as compilations:
        model.fit(
            train_data,
            epochs=recipe.train.epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,  # the Grain pipeline shuffles, per epoch and seed
            verbose=1,
        )
    train_step_compilations = compilations.get("train_step")  # None where nothing is counted (not JAX)
    if train_step_compilations not in (None, 1):
        print(f"[{recipe.name}] warning: the train step was compiled {train_step_compilations} times, not once")

    model.save(partial / runs.MODEL_FILE)
    oof = task.predict_validation(model, fold, batch_size=recipe.train.batch_size)
    scores = task.score_oof(oof, fold)
    oof.to_parquet(partial / runs.OOF_FILE, index=False)
    description = runs.describe(recipe, fold, seed)
    description.update(scores=scores, train_seconds=round(time.time() - started, 1),
                       train_step_compilations=train_step_compilations)
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


class ValidationScore(keras.callbacks.Callback):
    """Adds `val_kl` (the task's monitoring score on fold `fold`) to the epoch logs."""

    def __init__(self, task: Task, fold: int, batch_size: int):
        super().__init__()
        self.task = task
        self.fold = fold
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        logs["val_kl"] = self.task.monitor_score(self.model, self.fold, batch_size=self.batch_size)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate in force at the end of the epoch to the logs (for history.csv)."""

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
