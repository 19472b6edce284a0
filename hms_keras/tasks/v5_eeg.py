"""The v5 raw-EEG task: 50 s EEG windows -> two-head logits; scored per EEG on high-vote rows."""

import functools

import keras
import numpy as np
import pandas as pd

from hms_keras import constants
from hms_keras.data.cache import EegCache, build_eeg_cache, preprocess_recording, recording_window
from hms_keras.data.folds import label_row_folds
from hms_keras.data.labels import PROB_COLUMNS, sample_eval_rows, vote_targets
from hms_keras.data.pipeline import make_v5_eval_dataset, make_v5_train_dataset
from hms_keras.data.recordings import check_eeg_signal, read_eeg_file
from hms_keras.data.transforms import check_crop_shift, window_inputs
from hms_keras.losses import VoteWeightedKLDivergence
from hms_keras.metrics import (
    LOGIT_COLUMNS,
    constant_row_logits,
    high_vote_cv,
    softmax,
    submission_frame,
)
from hms_keras.tasks.base import (
    HmsTask,
    baseline_prior,
    check_on_bad_recording,
    kaggle_score,
    logits_frame,
    num_batches,
)

ROW_SAMPLING_SEED_OFFSET = 127458  # the reference seeds its row sampler with seed + 127458


def head_mean_logits(model: keras.Model, inputs, steps: int | None = None) -> np.ndarray:
    """(rows, 6) float64: the model's two heads' logits averaged, as at inference (v5 reference §7).
    `inputs`: an evaluation dataset of `steps` batches, or an inputs dict of arrays."""
    logits = model.predict(inputs, steps=steps, verbose=0)  # (rows, 2, 6)
    return np.asarray(logits, np.float64).mean(axis=1)


def windows_inputs(recording: np.ndarray, offsets_seconds, crop_shift: int = 0) -> dict[str, np.ndarray]:
    """Model inputs of windows of one preprocessed recording: {"eeg", "mask"}, each (windows,
    512, 18) float32, window i starting `offsets_seconds[i]` into it.

    recording: (frames, 2, 19) at 40 Hz as `cache.preprocess_recording` returns it (and the EEG
    cache stores it); crop_shift moves the model's 512-frame crop (a test-time augmentation view).
    The same steps as the evaluation pipeline (`pipeline.ReadV5Inputs`) on a cache file. Raises
    ValueError when a window does not fit inside the recording.
    """
    batch = []
    for offset_seconds in offsets_seconds:
        # truncated to a frame as the pipeline does (pipeline.window_start_frames), the 1e-6 absorbing
        # float error of offsets such as 3 * 0.1 s
        start = int(offset_seconds * constants.SAMPLING_RATE_HZ + 1e-6)
        if start < 0 or start + constants.WINDOW_FRAMES > len(recording):
            raise ValueError(f"a 50 s window at {offset_seconds} s does not fit a "
                             f"{len(recording) / constants.SAMPLING_RATE_HZ:.1f} s recording")
        window = recording_window(recording, start, constants.WINDOW_FRAMES)  # (2000, 2, 19) float32
        batch.append(window_inputs(window, crop_shift))  # (512, 18) each
    return {name: np.stack([inputs[name] for inputs in batch]) for name in batch[0]}


def eeg_inputs(raw_uv: np.ndarray, offset_seconds: float = 0.0, crop_shift: int = 0) -> dict[str, np.ndarray]:
    """Model inputs of one recording: {"eeg", "mask"}, each (1, 512, 18) float32.

    raw_uv: (time, 20) µV at 200 Hz in constants.EEG_COLUMNS order, masked at parquet nulls as
    `hms.read_eeg` returns it (NaN in a plain array is not interpolated: `preprocess_eeg`);
    the 50 s window starts `offset_seconds` into it (0 for a Kaggle test EEG); crop_shift as for
    `windows_inputs`.
    """
    recording = preprocess_recording(raw_uv)  # (frames, 2, 19) float16, 40 Hz, as cached
    return windows_inputs(recording, [offset_seconds], crop_shift)


class V5EegTask(HmsTask):
    """bilzard's v5 set-up: vote targets of two heads, patient-grouped folds, the EEG cache.

    `targets` (one row per train.csv row, its index is the row id used in every logits frame)
    holds `labels.vote_targets` columns and the `fold` of the row's EEG (under `fold_scheme`,
    patient-grouped by default).

    Test-time augmentation: a shift moves the 512-frame crop the model sees (12.8 s, frames
    [744, 1256) of the 2048-frame padded window) by that many 40 Hz frames; the views' logits are
    averaged like the models'.
    """

    cache_workers = 2  # processes that build the preprocessing cache
    tta_unit = "40 Hz frames the 512-frame crop moves inside the 2048-frame window"
    window_seconds = constants.WINDOW_SECONDS  # sliding windows over whole recordings

    @functools.cached_property
    def targets(self) -> pd.DataFrame:
        targets = vote_targets(self.train_df)
        targets["fold"] = label_row_folds(self.train_df, self.fold_scheme, self.n_folds)
        return targets

    @functools.cached_property
    def cache(self) -> EegCache:
        """The preprocessed training EEGs (built on first use, resumable)."""
        return EegCache(build_eeg_cache(self.layout, "train", self.targets["eeg_id"], workers=self.cache_workers))

    def fold_rows(self, fold: int, *, validation: bool) -> pd.DataFrame:
        """The label rows of the fold's validation EEGs, or of its training EEGs."""
        in_fold = self.targets["fold"].to_numpy() == fold
        return self.targets[in_fold if validation else ~in_fold]

    def train_dataset(self, fold, *, seed, batch_size, min_weight_schedule, worker_count=0, first_epoch=0):
        return make_v5_train_dataset(
            self.cache,
            self.fold_rows(fold, validation=False),
            batch_size=batch_size,
            seed=seed + ROW_SAMPLING_SEED_OFFSET,
            min_weight_schedule=min_weight_schedule,
            worker_count=worker_count,
            first_epoch=first_epoch,
        )

    def loss(self):
        return VoteWeightedKLDivergence()

    def _row_logits(self, model, rows: pd.DataFrame, batch_size: int, crop_shift: int = 0) -> pd.DataFrame:
        """Head-mean logits of `rows` (which carry `eeg_id` and `row`), the crop moved by `crop_shift`."""
        dataset, rows = make_v5_eval_dataset(self.cache, rows, batch_size=batch_size, crop_shift=crop_shift)
        return logits_frame(rows[["eeg_id", "row"]], head_mean_logits(model, dataset, num_batches(rows, batch_size)))

    def _sampled_rows(self, fold: int) -> pd.DataFrame:
        """The CV protocol's rows: up to 3 per validation EEG, seed 123 (v5 reference §7)."""
        return sample_eval_rows(self.fold_rows(fold, validation=True))

    def monitor_score(self, model, fold, *, batch_size):
        """High-vote per-EEG CV of `model` on the fold (the protocol of v5 reference §7), in nats."""
        return high_vote_cv(self.targets, self._row_logits(model, self._sampled_rows(fold), batch_size))

    def predict_validation(self, model, fold, *, batch_size, shift=0):
        """Out-of-fold head-mean logits of EVERY label row of the fold's validation EEGs, the crop
        moved by `shift` frames (a test-time augmentation view; 0 = the model's own crop).

        Columns: eeg_id, row (index into `targets`), label_id, logit_0..logit_5.
        """
        rows = self.fold_rows(fold, validation=True).rename_axis("row").reset_index()
        oof = self._row_logits(model, rows, batch_size, self.check_tta([shift])[0])
        oof.insert(2, "label_id", rows["label_id"].to_numpy())
        return oof

    def score_oof(self, oof: pd.DataFrame, fold: int) -> dict[str, float]:
        """CV (high-vote protocol), the Kaggle score over all rows, and the class prior's scores.

        `oof`: `predict_validation` frames of one or more seeds, stacked (a `seed` column is
        allowed); seeds are averaged in logit space, as the reference ensembles them.
        """
        validation = self.fold_rows(fold, validation=True)
        sampled = self._sampled_rows(fold)[["eeg_id", "row"]]
        row_logits = oof.merge(sampled, on=["eeg_id", "row"])
        prior = baseline_prior(self.fold_rows(fold, validation=False))
        mean_logits = oof.groupby("row")[list(LOGIT_COLUMNS)].mean()  # (rows, 6) seed mean
        return {
            "cv": high_vote_cv(self.targets, row_logits),
            "prior_cv": high_vote_cv(self.targets, constant_row_logits(sampled, prior)),
            "kaggle_all_rows": self._all_rows_score(validation, softmax(mean_logits.loc[validation.index].to_numpy())),
            "prior_kaggle_all_rows": self._all_rows_score(validation, np.tile(prior, (len(validation), 1))),
        }

    @staticmethod
    def _all_rows_score(rows: pd.DataFrame, probabilities: np.ndarray) -> float:
        """The official metric over label rows (id = label_id), row vote distributions as truth."""
        return kaggle_score(rows["label_id"], rows[list(PROB_COLUMNS)].to_numpy(), probabilities, "label_id")

    def predict_test(self, models, *, batch_size=32, on_bad_recording="error", tta=(0,)) -> pd.DataFrame:
        """Submission for test.csv: per model the head-mean logits of the whole 50 s test EEG,
        averaged over models in logit space, then softmax (v5 reference §7). Rows in test.csv order.
        tta: crop shifts (frames) of the test-time augmentation views, averaged with the models
        (default: the central crop alone, as the reference predicts).

        Every test EEG is read and preprocessed into the test cache before any model runs, the
        unreadable ones collected on the way; they are handled as `on_bad_recording` says
        ("error" or "prior": `HmsTask.unreadable_test_prediction`)."""
        check_on_bad_recording(on_bad_recording)
        tta = self.check_tta(tta)
        test = self.test_rows()
        errors = {}  # eeg_id -> HmsDataError
        cache_dir = build_eeg_cache(self.layout, "test", test["eeg_id"], workers=self.cache_workers, errors=errors)
        bad = test["eeg_id"].isin(list(errors)).to_numpy()  # (rows,)
        probabilities = np.empty((len(test), constants.NUM_CLASSES))  # (rows, 6)
        if bad.any():
            unreadable = {self.layout.eeg_path("test", eeg_id): error for eeg_id, error in errors.items()}
            probabilities[bad] = self.unreadable_test_prediction(unreadable, on_bad_recording)
        if not bad.all():
            logits = []  # (models x views) of (rows, 6)
            for shift in tta:
                dataset, rows = make_v5_eval_dataset(
                    EegCache(cache_dir), test.loc[~bad, ["eeg_id"]], batch_size=batch_size, crop_shift=shift
                )
                logits += [self.model_logits(model, dataset, num_batches(rows, batch_size)) for model in models]
            probabilities[~bad] = softmax(np.mean(logits, axis=0))
        return submission_frame(test["eeg_id"], probabilities)

    def model_logits(self, model, inputs, steps=None) -> np.ndarray:
        """(rows, 6) float64: the two heads' logits averaged (`head_mean_logits`)."""
        return head_mean_logits(model, inputs, steps)

    def check_tta(self, shifts) -> tuple[int, ...]:
        """Crop shifts as a tuple; ValueError when one leaves the padded window (`transforms.CROP_SHIFT_RANGE`)."""
        shifts = super().check_tta(shifts)
        for shift in shifts:
            check_crop_shift(shift)
        return shifts

    def ensemble_probabilities(self, models, inputs, steps=None) -> np.ndarray:
        """(rows, 6) probabilities: head-mean logits averaged over models, then softmax (v5 reference §7)."""
        return softmax(np.mean([head_mean_logits(model, inputs, steps) for model in models], axis=0))

    def read_recording(self, path) -> np.ndarray:
        """One EEG file: (time, 20) µV at 200 Hz. A Kaggle `.parquet` through `hms.read_eeg` (nulls
        masked), any other format through MNE (`recordings.read_eeg_file`, which needs every
        electrode; call it with allow_missing=True to accept fewer)."""
        return read_eeg_file(path)

    def recording_inputs(self, recording, offset_seconds=0.0, shift=0) -> dict[str, np.ndarray]:
        return eeg_inputs(recording, offset_seconds, shift)

    def prepare_recording(self, recording) -> np.ndarray:
        """(frames, 2, 19) float16 at 40 Hz (`cache.preprocess_recording`) of a (time, 20) µV
        recording at 200 Hz, after `recordings.check_eeg_signal` (RecordingTooShortError,
        FlatRecordingError)."""
        check_eeg_signal(recording)
        return preprocess_recording(recording)

    def recording_seconds(self, prepared) -> float:
        return len(prepared) / constants.SAMPLING_RATE_HZ

    def windows_inputs(self, prepared, offsets_seconds, shift=0) -> dict[str, np.ndarray]:
        return windows_inputs(prepared, offsets_seconds, shift)
