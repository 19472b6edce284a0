"""The spectrogram-baseline task: Kaggle spectrogram windows -> 6 logits; KL over spectrograms."""

import functools

import numpy as np
import pandas as pd

from hms_keras import constants
from hms_keras.data.folds import stratified_spectrogram_folds
from hms_keras.data.hms import read_spectrogram
from hms_keras.data.labels import first_row_per_spectrogram, vote_probabilities
from hms_keras.data.pipeline import make_spectrogram_eval_dataset, make_spectrogram_train_dataset
from hms_keras.data.preprocess import normalize_spectrogram, spectrogram_window
from hms_keras.losses import KLDivergenceFromLogits
from hms_keras.metrics import LOGIT_COLUMNS, softmax, submission_frame
from hms_keras.tasks.base import (
    HmsTask,
    baseline_prior,
    check_on_bad_recording,
    kaggle_score,
    logits_frame,
    num_batches,
)


def spectrogram_inputs(values: np.ndarray, offset_seconds: float = 0.0) -> np.ndarray:
    """Model input of one Kaggle spectrogram: (1, 400, 300, 1) float32, log + standardised.

    values: (rows, 400) as `hms.read_spectrogram` returns them; the 600 s window starts
    `offset_seconds` into it (0 for a test spectrogram)."""
    return normalize_spectrogram(spectrogram_window(values, offset_seconds))[None, ..., None]


class SpectrogramTask(HmsTask):
    """The ResNet34d baseline's set-up: the first label row of each spectrogram_id, its 600 s
    window, stratified patient-grouped folds (seed 1086), probabilities averaged over models."""

    @functools.cached_property
    def rows(self) -> pd.DataFrame:
        """The first train.csv row of every spectrogram_id, with its `fold`."""
        rows = first_row_per_spectrogram(self.train_df).copy()
        rows["fold"] = rows["spectrogram_id"].map(stratified_spectrogram_folds(self.train_df, self.n_folds))
        return rows

    def fold_rows(self, fold: int, *, validation: bool) -> pd.DataFrame:
        """First rows of the fold's validation spectrograms, or of its training spectrograms."""
        in_fold = self.rows["fold"].to_numpy() == fold
        return self.rows[in_fold if validation else ~in_fold]

    def train_dataset(self, fold, *, seed, batch_size, min_weight_schedule, worker_count=0, first_epoch=0):
        return make_spectrogram_train_dataset(
            self.layout,
            self.fold_rows(fold, validation=False),
            batch_size=batch_size,
            seed=seed,
            num_epochs=len(min_weight_schedule),
            worker_count=worker_count,
            first_epoch=first_epoch,
        )

    def loss(self):
        return KLDivergenceFromLogits()

    def predict_validation(self, model, fold, *, batch_size):
        """Logits of the first row of every validation spectrogram: spectrogram_id, eeg_id,
        label_id, logit_0..logit_5."""
        dataset, rows = make_spectrogram_eval_dataset(self.layout, self.fold_rows(fold, validation=True),
                                                      batch_size=batch_size)
        logits = model.predict(dataset, steps=num_batches(rows, batch_size), verbose=0)  # (rows, 6)
        return logits_frame(rows[["spectrogram_id", "eeg_id", "label_id"]], logits)

    def monitor_score(self, model, fold, *, batch_size):
        return self.score_oof(self.predict_validation(model, fold, batch_size=batch_size), fold)["kl"]

    def score_oof(self, oof: pd.DataFrame, fold: int) -> dict[str, float]:
        """The official KL over the fold's spectrograms (seeds' probabilities averaged) and the
        class prior's KL on the same rows."""
        probabilities = pd.DataFrame(softmax(oof[list(LOGIT_COLUMNS)].to_numpy()), index=oof["spectrogram_id"])
        probabilities = probabilities.groupby(level=0).mean()  # (spectrograms, 6) seed mean
        rows = self.fold_rows(fold, validation=True)
        prior = baseline_prior(self.fold_rows(fold, validation=False))
        return {
            "kl": self._score(rows, probabilities.loc[rows["spectrogram_id"]].to_numpy()),
            "prior_kl": self._score(rows, np.tile(prior, (len(rows), 1))),
        }

    @staticmethod
    def _score(rows: pd.DataFrame, probabilities: np.ndarray) -> float:
        """The official metric over spectrograms, each first row's vote distribution as truth."""
        return kaggle_score(rows["spectrogram_id"], vote_probabilities(rows), probabilities, "spectrogram_id")

    def predict_test(self, models, *, batch_size=32, on_bad_recording="error") -> pd.DataFrame:
        """Submission for test.csv: softmax probabilities of each model on the test spectrogram,
        averaged over models (as the baseline's notebook does). Rows in test.csv order.

        Every test spectrogram is read and its window cut before any model runs (`read_spectrogram`:
        each file is read twice, here and by the pipeline); the unreadable ones are handled as
        `on_bad_recording` says ("error" or "prior": `HmsTask.unreadable_test_prediction`)."""
        check_on_bad_recording(on_bad_recording)
        test = self.test_rows()
        errors = {}  # spectrogram_id -> HmsDataError, or ValueError of a spectrogram too short
        for spectrogram_id in pd.unique(test["spectrogram_id"]):
            try:  # a test row's window: the first 600 s
                spectrogram_window(read_spectrogram(self.layout.spectrogram_path("test", spectrogram_id))[1], 0.0)
            except ValueError as error:
                errors[spectrogram_id] = error
        bad = test["spectrogram_id"].isin(list(errors)).to_numpy()  # (rows,)
        probabilities = np.empty((len(test), constants.NUM_CLASSES))  # (rows, 6)
        if bad.any():
            unreadable = {self.layout.spectrogram_path("test", key): error for key, error in errors.items()}
            probabilities[bad] = self.unreadable_test_prediction(unreadable, on_bad_recording)
        if not bad.all():
            good = test[~bad]
            dataset, rows = make_spectrogram_eval_dataset(self.layout, good, split="test", batch_size=batch_size)
            probabilities[~bad] = self.ensemble_probabilities(models, dataset, num_batches(rows, batch_size))
        return submission_frame(test["eeg_id"], probabilities)

    def ensemble_probabilities(self, models, inputs, steps=None) -> np.ndarray:
        """(rows, 6): softmax probabilities averaged over models, as the baseline ensembles them.
        `inputs`: an evaluation dataset of `steps` batches or a (rows, 400, 300, 1) array."""
        return np.mean([softmax(model.predict(inputs, steps=steps, verbose=0)) for model in models], axis=0)

    def read_recording(self, path) -> np.ndarray:
        """One Kaggle spectrogram parquet file: (rows, 400) power, one row per 2 s."""
        return read_spectrogram(path)[1]

    def recording_inputs(self, recording, offset_seconds=0.0) -> np.ndarray:
        return spectrogram_inputs(recording, offset_seconds)
