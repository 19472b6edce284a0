"""Ensembles of trained fold x seed models: test-set submissions, single recordings, OOF scores.

    ensemble = Ensemble.load("runs/v5_eeg_cutmix")          # every finished fold x seed model
    ensemble = Ensemble.load("ensembles/blend.json")        # or several recipes (hms_keras.ensembles)
    submission = ensemble.predict_test("/path/to/hms-data")  # DataFrame in test.csv order
    probabilities = ensemble.predict_file("/path/to/123.parquet")  # (6,), one EEG or spectrogram
    windows = ensemble.predict_recording("/path/to/night.edf")     # one row per 50 s window, every 10 s

Models are loaded once with `compile=False`, so files trained under any Keras backend load
under any other. On JAX, compiled predict programs are kept on disk
(`paths.use_persistent_compilation_cache`): the fold x seed models of a recipe share one
architecture, so only the first compiles (v5, batch 32, 2 CPU cores: first predict call ~10 s,
later models and later processes ~4-6 s, of which ~3 s is the call itself). The recipe's task
(`hms_keras.tasks`) reads inputs and combines the models: v5 models are averaged in logit space,
spectrogram models in probability space, as their references do.
"""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from hms_keras import runs, sliding_windows
from hms_keras.paths import use_persistent_compilation_cache
from hms_keras.tasks import task_for


class Ensemble:
    """The models of finished runs of one recipe, loaded once, combined as the recipe's task does."""

    def __init__(self, run_dirs):
        self.run_dirs = [Path(run_dir) for run_dir in run_dirs]
        descriptions = [runs.read_description(run_dir) for run_dir in self.run_dirs]
        tasks = {description["recipe"].task for description in descriptions}
        if len(tasks) != 1:
            raise ValueError(f"cannot ensemble runs of different tasks {sorted(tasks)}: {self.run_dirs}")
        self.recipe = descriptions[0]["recipe"]
        self.task = task_for(self.recipe)  # reads no data until a method needs it
        use_persistent_compilation_cache()
        self.models = [runs.load_model(run_dir) for run_dir in self.run_dirs]

    @classmethod
    def load(cls, recipe_dir) -> "Ensemble":
        """Every finished run under `recipe_dir` (e.g. `runs/v5_eeg_cutmix`); or, given an
        ensemble file (`ensembles/<name>.json`, written by `recipes.ensemble`), the ensemble it
        describes: a `hms_keras.ensembles.Blend`, with the same predict methods."""
        if Path(recipe_dir).suffix == ".json":
            from hms_keras.ensembles import Blend  # which imports this module

            return Blend.load(recipe_dir)
        return cls(runs.finished_runs(recipe_dir))

    def predict_test(self, data_dir=None, *, batch_size: int = 32, on_bad_recording: str = "error") -> pd.DataFrame:
        """A submission for `data_dir`'s test.csv (default: the data the models were trained on):
        `eeg_id` + the six vote columns as probabilities, rows in test.csv order.

        Every test recording is checked before any model runs. Unreadable ones raise one
        HmsDataError naming them all (on_bad_recording="error"), or their rows get the training
        class prior, with a warning listing them ("prior"); see `Task.predict_test`."""
        task = self.task if data_dir is None else task_for(self.recipe, data_dir)
        return task.predict_test(self.models, batch_size=batch_size, on_bad_recording=on_bad_recording)

    def predict_file(self, path, offset_seconds: float = 0.0) -> np.ndarray:
        """(6,) class probabilities (constants.CLASSES order) of one input file, e.g. an EEG
        parquet (or EDF, BDF, ... through MNE) for raw-EEG recipes or a Kaggle spectrogram for
        spectrogram recipes; the window starts `offset_seconds` into the recording (0 for Kaggle
        test files)."""
        return sliding_windows.predict_window(self, path, offset_seconds)

    def predict_recording(self, recording, stride_s: float = 10.0, *, batch_size: int = 32,
                          progress: bool = True) -> pd.DataFrame:
        """One row per window sliding over a whole recording, every `stride_s` seconds: start_s,
        end_s, centre_s and the six class probabilities (`sliding_windows.predict_recording`).
        recording: a file path, or the array `task.read_recording` returns (raw EEG: (time, 20)
        µV at 200 Hz)."""
        return sliding_windows.predict_recording(self, recording, stride_s=stride_s, batch_size=batch_size,
                                                 progress=progress)

    def window_probabilities(self, prepared, starts_s, shifts=(0,)) -> np.ndarray:
        """(windows, 6) probabilities of the windows starting `starts_s` seconds into a prepared
        recording (`Task.prepare_recording`), the models and test-time views (`shifts`)
        combined as the task combines them (`Task.log_probabilities`)."""
        logits = []  # (models x views) of (windows, 6)
        for shift in shifts:
            inputs = self.task.windows_inputs(prepared, starts_s, shift)
            logits += [self.task.model_logits(model, inputs) for model in self.models]
        return np.exp(self.task.log_probabilities(logits))


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
