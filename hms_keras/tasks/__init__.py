"""Tasks: what a recipe trains on and how it is scored, one class per kind of input.

A task owns one data folder's labels, folds and input caches, and offers the training loop
(`hms_keras.training`) and the ensembler (`hms_keras.inference`) the same small surface:

- `train_dataset(fold, *, seed, batch_size, min_weight_schedule, worker_count)`
  -> (dataset of (inputs, y) batches, steps_per_epoch)
- `loss()`: the training loss for the task's targets
- `monitor_score(model, fold, *, batch_size)`: the validation KL logged each epoch
- `predict_validation(model, fold, *, batch_size)`: out-of-fold logits (a DataFrame)
- `score_oof(oof, fold)` / `score_runs(runs_by_fold)`: CV figures and the class-prior
  baseline on the same rows
- `predict_test(models, *, batch_size, on_bad_recording)`: the ensembled submission for test.csv
  (unreadable test recordings: one error naming them all, or the class prior for their rows)
"""

from hms_keras.recipe import Recipe
from hms_keras.tasks.base import Task, resolve_data_dir
from hms_keras.tasks.spectrogram import SpectrogramTask
from hms_keras.tasks.v5_eeg import V5EegTask

TASKS: dict[str, type[Task]] = {"v5_eeg": V5EegTask, "spectrogram": SpectrogramTask}


def task_for(recipe: Recipe, data_dir=None) -> Task:
    """The recipe's task on `data_dir` (default: the recipe's own data, the embedded synthetic
    dataset when that is None), with the recipe's fold count, fold scheme and synthetic-data settings."""
    if recipe.task not in TASKS:
        raise ValueError(f"unknown task {recipe.task!r} in recipe {recipe.name!r}; choose from {sorted(TASKS)}")
    return TASKS[recipe.task](
        data_dir if data_dir is not None else recipe.data.data_dir,
        n_folds=recipe.data.n_folds,
        synthetic_eegs=recipe.data.synthetic_eegs,
        synthetic_seed=recipe.data.synthetic_seed,
        fold_scheme=recipe.data.fold_scheme,
    )


__all__ = ["TASKS", "Task", "resolve_data_dir", "task_for"]
