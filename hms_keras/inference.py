"""Ensembles of trained fold x seed models: test-set submissions, single recordings, OOF scores.

    ensemble = Ensemble.load("runs/v5_eeg_cutmix")          # every finished fold x seed model
    submission = ensemble.predict_test("/path/to/hms-data")  # DataFrame in test.csv order
    probabilities = ensemble.predict_file("/path/to/123.parquet")  # (6,), one EEG or spectrogram

Models are loaded once with `compile=False`, so files trained under any Keras backend load
under any other. v5 models are averaged in logit space, spectrogram models in probability space,
as their references do.
"""

import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from hms_keras import runs
from hms_keras.data.hms import read_eeg, read_spectrogram
from hms_keras.tasks import spectrogram as spectrogram_task
from hms_keras.tasks import task_for
from hms_keras.tasks import v5_eeg as v5_eeg_task


class Ensemble:
    """The models of finished runs of one recipe, loaded once, combined as the recipe's task does."""

    def __init__(self, run_dirs):
        self.run_dirs = [Path(run_dir) for run_dir in run_dirs]
        descriptions = [runs.read_description(run_dir) for run_dir in self.run_dirs]
        tasks = {description["recipe"].task for description in descriptions}
        if len(tasks) != 1:
            raise ValueError(f"cannot ensemble runs of different tasks {sorted(tasks)}: {self.run_dirs}")
        self.recipe = descriptions[0]["recipe"]
        self.models = [keras.models.load_model(run_dir / runs.MODEL_FILE, compile=False) for run_dir in self.run_dirs]

    @classmethod
    def load(cls, recipe_dir) -> "Ensemble":
        """Every finished run under `recipe_dir` (e.g. `runs/v5_eeg_cutmix`)."""
        return cls(runs.finished_runs(recipe_dir))

    def predict_test(self, data_dir=None, *, batch_size: int = 32) -> pd.DataFrame:
        """A submission for `data_dir`'s test.csv (default: the data the models were trained on):
        `eeg_id` + the six vote columns as probabilities, rows in test.csv order."""
        return task_for(self.recipe, data_dir).predict_test(self.models, batch_size=batch_size)

    def predict_file(self, path, offset_seconds: float = 0.0) -> np.ndarray:
        """(6,) class probabilities (constants.CLASSES order) of one parquet file: an EEG for
        raw-EEG recipes, a Kaggle spectrogram for spectrogram recipes; the window starts
        `offset_seconds` into the recording (0 for Kaggle test files)."""
        if self.recipe.task == "v5_eeg":
            return self.predict_eeg(read_eeg(path), offset_seconds)
        return self.predict_spectrogram(read_spectrogram(path)[1], offset_seconds)

    def predict_eeg(self, raw_uv: np.ndarray, offset_seconds: float = 0.0) -> np.ndarray:
        """(6,) probabilities of one raw EEG, (time, 20) µV at 200 Hz in the Kaggle column order."""
        self._require_task("v5_eeg")
        inputs = v5_eeg_task.eeg_inputs(raw_uv, offset_seconds)
        return v5_eeg_task.ensemble_probabilities(self.models, inputs)[0]

    def predict_spectrogram(self, values: np.ndarray, offset_seconds: float = 0.0) -> np.ndarray:
        """(6,) probabilities of one Kaggle spectrogram, (rows, 400) as in its parquet file."""
        self._require_task("spectrogram")
        inputs = spectrogram_task.spectrogram_inputs(values, offset_seconds)
        return spectrogram_task.ensemble_probabilities(self.models, inputs)[0]

    def _require_task(self, task: str) -> None:
        if self.recipe.task != task:
            raise ValueError(f"these models are {self.recipe.task!r} models ({self.recipe.name}), not {task!r}")


def score_out_of_fold(recipe_dir, data_dir=None) -> pd.DataFrame:
    """Per-fold CV table of the finished runs under `recipe_dir` that hold out-of-fold
    predictions, with the class-prior baseline on the same rows; the seeds of a fold are
    ensembled as at test time. Runs without predictions (converted ones) are listed in a warning."""
    by_fold = runs.oof_runs_by_fold(recipe_dir)
    scored = {path for paths in by_fold.values() for path in paths}
    unscored = [path for path in runs.finished_runs(recipe_dir) if path not in scored]
    if unscored:
        warnings.warn(
            f"{len(unscored)} finished run(s) have no out-of-fold predictions and are not scored: "
            + ", ".join(str(path) for path in unscored),
            stacklevel=2,
        )
    recipe = runs.read_description(next(iter(scored)))["recipe"]
    return task_for(recipe, data_dir).score_runs(by_fold)
