"""The spectrogram-baseline task: Kaggle spectrogram windows -> 6 logits; KL over spectrograms."""

import functools

import numpy as np
import pandas as pd

from hms_keras import constants
from hms_keras.data.folds import label_row_folds
from hms_keras.data.hms import read_spectrogram
from hms_keras.data.labels import (
    PROB_COLUMNS,
    first_row_per_spectrogram,
    sample_eval_rows,
    vote_probabilities,
    vote_targets,
)
from hms_keras.data.pipeline import make_spectrogram_eval_dataset, make_spectrogram_train_dataset
from hms_keras.data.preprocess import (
    MAX_TIME_SHIFT_ROWS,
    normalize_spectrogram,
    shift_spectrogram_window,
    spectrogram_window,
)
from hms_keras.losses import KLDivergenceFromLogits
from hms_keras.metrics import LOGIT_COLUMNS, constant_row_logits, high_vote_cv, log_softmax, softmax, submission_frame
from hms_keras.tasks.base import (
    HmsTask,
    baseline_prior,
    check_on_bad_recording,
    kaggle_score,
    logits_frame,
    num_batches,
)


def spectrogram_inputs(values: np.ndarray, offset_seconds: float = 0.0, time_shift: int = 0) -> np.ndarray:
    """Model input of one Kaggle spectrogram: (1, 400, 300, 1) float32, log + standardised.

    values: (rows, 400) as `hms.read_spectrogram` returns them; the 600 s window starts
    `offset_seconds` into it (0 for a test spectrogram); time_shift: rows (2 s) the window is
    moved by, a test-time augmentation view (`preprocess.shift_spectrogram_window`)."""
    window = shift_spectrogram_window(spectrogram_window(values, offset_seconds), time_shift)  # (400, 300)
    return normalize_spectrogram(window)[None, ..., None]


class SpectrogramTask(HmsTask):
    """The ResNet34d baseline's set-up: the first label row of each spectrogram_id, its 600 s
    window, stratified patient-grouped folds (seed 1086), probabilities averaged over models.

    On the v5 split (fold_scheme "patient_group") it trains on the same first rows of the
    training folds' spectrograms, but predicts and scores out of fold what the v5 task does:
    every label row of the fold's EEGs, each with its own window, scored by the high-vote per-EEG
    CV and over all rows too, so the out-of-fold rows of both recipes can be ensembled
    (`hms_keras.ensembles`). The per-epoch `val_kl` stays the baseline's (first rows only).

    Test-time augmentation: a shift moves the 300-row window by that many rows (2 s), reflecting
    the window's edge (`preprocess.shift_spectrogram_window`); views are averaged like models.
    """

    default_fold_scheme = "stratified_spectrogram"
    tta_unit = "spectrogram rows (2 s) the 600 s window moves, its edge reflected"
    window_seconds = constants.SPECTROGRAM_WINDOW_ROWS * constants.SPECTROGRAM_SECONDS_PER_ROW  # 600: sliding windows

    @functools.cached_property
    def targets(self) -> pd.DataFrame:
        """Every train.csv row with the `labels.vote_targets` columns and its `fold` (under
        `fold_scheme`); the index is the row id of the out-of-fold frames."""
        targets = vote_targets(self.train_df)
        targets["fold"] = label_row_folds(self.train_df, self.fold_scheme, self.n_folds)
        return targets

    @functools.cached_property
    def rows(self) -> pd.DataFrame:
        """The first train.csv row of every spectrogram_id, with its `fold`."""
        return first_row_per_spectrogram(self.targets)

    def oof_rows(self, fold: int) -> pd.DataFrame:
        """The label rows `predict_validation` predicts: the first row of each of the fold's
        spectrograms, or on the "patient_group" scheme every label row of the fold (all rows of
        its EEGs, as the v5 task predicts them)."""
        if self.fold_scheme == "patient_group":
            return self.targets[self.targets["fold"].to_numpy() == fold]
        return self.fold_rows(fold, validation=True)

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

    def _logits(self, model, rows: pd.DataFrame, batch_size: int, time_shift: int = 0) -> pd.DataFrame:
        """Logits of `rows` (each its own window, moved by `time_shift` rows): spectrogram_id,
        eeg_id, row, label_id, logit_0..logit_5."""
        rows = rows.rename_axis("row").reset_index()
        dataset, rows = make_spectrogram_eval_dataset(self.layout, rows, batch_size=batch_size, time_shift=time_shift)
        logits = model.predict(dataset, steps=num_batches(rows, batch_size), verbose=0)  # (rows, 6)
        return logits_frame(rows[["spectrogram_id", "eeg_id", "row", "label_id"]], logits)

    def predict_validation(self, model, fold, *, batch_size, shift=0):
        """Out-of-fold logits of the fold's `oof_rows`, the windows moved by `shift` rows (a
        test-time augmentation view; 0 = unshifted): spectrogram_id, eeg_id, row (train.csv
        index), label_id, logit_0..logit_5."""
        return self._logits(model, self.oof_rows(fold), batch_size, self.check_tta([shift])[0])

    def monitor_score(self, model, fold, *, batch_size):
        """The baseline's KL over the first rows of the fold's spectrograms, in nats."""
        rows = self.fold_rows(fold, validation=True)
        logits = self._logits(model, rows, batch_size)[list(LOGIT_COLUMNS)].to_numpy()  # (spectrograms, 6)
        return self._score(rows, softmax(logits))

    def score_oof(self, oof: pd.DataFrame, fold: int) -> dict[str, float]:
        """The official KL over the fold's spectrograms (their first rows; seeds' probabilities
        averaged) and the class prior's KL on the same rows. On the "patient_group" scheme also
        the v5 task's figures on the same rows as it: `cv` (high-vote per-EEG protocol, the
        log of the seed-mean probabilities pooled per EEG), `kaggle_all_rows`, and the prior's."""
        probabilities = pd.DataFrame(softmax(oof[list(LOGIT_COLUMNS)].to_numpy()), index=oof["label_id"])
        probabilities = probabilities.groupby(level=0).mean()  # (label rows, 6) seed mean
        rows = self.fold_rows(fold, validation=True)
        prior = baseline_prior(self.fold_rows(fold, validation=False))
        scores = {
            "kl": self._score(rows, probabilities.loc[rows["label_id"]].to_numpy()),
            "prior_kl": self._score(rows, np.tile(prior, (len(rows), 1))),
        }
        if self.fold_scheme == "patient_group":
            scores.update(self._v5_scores(probabilities, fold))
        return scores

    def _v5_scores(self, probabilities: pd.DataFrame, fold: int) -> dict[str, float]:
        """The v5 task's figures of (label rows, 6) `probabilities` indexed by label_id, covering
        every label row of the fold, and of the v5 class prior (all training rows' mean)."""
        in_fold = self.targets["fold"].to_numpy() == fold
        validation, prior = self.targets[in_fold], baseline_prior(self.targets[~in_fold])
        sampled = sample_eval_rows(validation)  # the v5 CV's rows: up to 3 per EEG, seed 123
        logits = np.log(np.maximum(probabilities.loc[sampled["label_id"]].to_numpy(), 1e-300))  # (sampled, 6)
        row_logits = logits_frame(sampled[["eeg_id", "row"]], logits)
        truth = validation[list(PROB_COLUMNS)].to_numpy()  # (rows, 6)
        predicted = probabilities.loc[validation["label_id"]].to_numpy()  # (rows, 6)
        return {
            "cv": high_vote_cv(self.targets, row_logits),
            "prior_cv": high_vote_cv(self.targets, constant_row_logits(sampled, prior)),
            "kaggle_all_rows": kaggle_score(validation["label_id"], truth, predicted, "label_id"),
            "prior_kaggle_all_rows": kaggle_score(validation["label_id"], truth, np.tile(prior, (len(truth), 1)),
                                                  "label_id"),
        }

    @staticmethod
    def _score(rows: pd.DataFrame, probabilities: np.ndarray) -> float:
        """The official metric over spectrograms, each first row's vote distribution as truth."""
        return kaggle_score(rows["spectrogram_id"], vote_probabilities(rows), probabilities, "spectrogram_id")

    def predict_test(self, models, *, batch_size=32, on_bad_recording="error", tta=(0,)) -> pd.DataFrame:
        """Submission for test.csv: softmax probabilities of each model on the test spectrogram,
        averaged over models (as the baseline's notebook does). Rows in test.csv order.

        Every test spectrogram is read and its window cut before any model runs (`read_spectrogram`:
        each file is read twice, here and by the pipeline); the unreadable ones are handled as
        `on_bad_recording` says ("error" or "prior": `HmsTask.unreadable_test_prediction`)."""
        check_on_bad_recording(on_bad_recording)
        tta = self.check_tta(tta)
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
            good, logits = test[~bad], []  # logits: (models x views) of (rows, 6)
            for shift in tta:
                dataset, rows = make_spectrogram_eval_dataset(
                    self.layout, good, split="test", batch_size=batch_size, time_shift=shift
                )
                logits += [self.model_logits(model, dataset, num_batches(rows, batch_size)) for model in models]
            probabilities[~bad] = np.exp(self.log_probabilities(logits))
        return submission_frame(test["eeg_id"], probabilities)

    def log_probabilities(self, logits) -> np.ndarray:
        """(rows, 6) log of the softmax probabilities averaged over models (and views), as the
        baseline ensembles them; logits: (models, rows, 6)."""
        log_probabilities = log_softmax(np.asarray(logits, np.float64))  # (models, rows, 6)
        largest = log_probabilities.max(axis=0)  # (rows, 6)
        return largest + np.log(np.mean(np.exp(log_probabilities - largest), axis=0))

    def check_tta(self, shifts) -> tuple[int, ...]:
        """Time shifts as a tuple; ValueError when one exceeds `preprocess.MAX_TIME_SHIFT_ROWS`."""
        shifts = super().check_tta(shifts)
        outside = [shift for shift in shifts if abs(shift) > MAX_TIME_SHIFT_ROWS]
        if outside:
            raise ValueError(f"spectrogram time shifts {outside} rows: |shift| must be <= {MAX_TIME_SHIFT_ROWS}")
        return shifts

    def ensemble_probabilities(self, models, inputs, steps=None) -> np.ndarray:
        """(rows, 6): softmax probabilities averaged over models, as the baseline ensembles them.
        `inputs`: an evaluation dataset of `steps` batches or a (rows, 400, 300, 1) array."""
        return np.mean([softmax(model.predict(inputs, steps=steps, verbose=0)) for model in models], axis=0)

    def read_recording(self, path) -> np.ndarray:
        """One Kaggle spectrogram parquet file: (rows, 400) power, one row per 2 s."""
        return read_spectrogram(path)[1]

    def recording_inputs(self, recording, offset_seconds=0.0, shift=0) -> np.ndarray:
        return spectrogram_inputs(recording, offset_seconds, shift)

    def recording_seconds(self, prepared) -> float:
        """Seconds of a (rows, 400) spectrogram, one row per 2 s."""
        return len(prepared) * constants.SPECTROGRAM_SECONDS_PER_ROW
