"""Shared pieces of the tasks: the data folder, folds, logits frames, per-fold scoring and what a
test row gets when its recording cannot be read."""

import abc
import functools
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from hms_keras import runs
from hms_keras.data.hms import HmsDataError, HmsLayout, check_label_windows, read_test_csv, read_train_csv
from hms_keras.data.synthetic import DEFAULT_EMBEDDED_EEGS, embedded_data_dir
from hms_keras.metrics import LOGIT_COLUMNS, class_prior, kaggle_kl_score, log_softmax, submission_frame


def resolve_data_dir(data_dir, synthetic_eegs: int, synthetic_seed: int) -> Path:
    """`data_dir`, or the embedded synthetic dataset (generated on first use) when it is None."""
    if data_dir is None:
        return embedded_data_dir(n_eegs=synthetic_eegs, seed=synthetic_seed)
    return Path(data_dir).expanduser()


def num_batches(rows: pd.DataFrame, batch_size: int) -> int:
    """Batches of an evaluation dataset over `rows` (the last one may be partial)."""
    return -(-len(rows) // batch_size)


def logits_frame(ids: pd.DataFrame, logits: np.ndarray) -> pd.DataFrame:
    """`ids` columns followed by `logit_0..logit_5` from (rows, 6) logits."""
    frame = ids.reset_index(drop=True).copy()
    frame[list(LOGIT_COLUMNS)] = np.asarray(logits, np.float64)
    return frame


def baseline_prior(train_rows: pd.DataFrame) -> np.ndarray:
    """(6,) the class-prior baseline: the training rows' mean vote distribution, floored at 1e-6
    (and renormalised) so that a class absent from a small training split still has a logit."""
    prior = np.maximum(class_prior(train_rows), 1e-6)
    return prior / prior.sum()


# What `Task.predict_test` does with test recordings that cannot be read (`--on-bad-eeg` of recipes.predict).
ON_BAD_RECORDING = ("error", "prior")


def check_on_bad_recording(on_bad_recording: str) -> None:
    """Raise ValueError unless `on_bad_recording` is one of ON_BAD_RECORDING."""
    if on_bad_recording not in ON_BAD_RECORDING:
        raise ValueError(f"on_bad_recording must be one of {ON_BAD_RECORDING}, got {on_bad_recording!r}")


def _problem(path: Path, error: Exception) -> str:
    """What `error` says about `path`, on one line, without the leading `<path>: ` of an HmsDataError."""
    message = str(error)
    if message.startswith(f"{path}: "):
        message = message[len(f"{path}: ") :]
    return " ".join(message.split())


def kaggle_score(ids, truth: np.ndarray, probabilities: np.ndarray, id_column: str) -> float:
    """The official metric of (rows, 6) `probabilities` against (rows, 6) `truth`, rows named by
    `ids` (label_id, spectrogram_id, ...)."""
    solution = submission_frame(ids, truth).rename(columns={"eeg_id": id_column})
    submission = submission_frame(ids, probabilities).rename(columns={"eeg_id": id_column})
    return kaggle_kl_score(solution, submission, id_column=id_column)


class Task(abc.ABC):
    """What a recipe trains on and how it is scored: the seam between one kind of input and the
    training loop (`hms_keras.training`) and ensembler (`hms_keras.inference`), which call only
    these methods. A new kind of input is a subclass registered in `tasks.TASKS`, a model in
    `models.MODELS` and a recipe; `training` and `inference` stay as they are.

    Constructed by `tasks.task_for(recipe, data_dir)` with the recipe's data settings; the
    constructor must not read data (the per-recording methods are used without any data folder).
    """

    default_fold_scheme = "patient_group"  # the fold scheme (data.folds.FOLD_SCHEMES) when the recipe names none
    # What one test-time augmentation shift moves (`predict_validation(shift=)`, `predict_test(tta=)`);
    # None: the task has no test-time augmentation.
    tta_unit: str | None = None

    def __init__(
        self,
        data_dir=None,
        *,
        n_folds: int = 5,
        synthetic_eegs: int = DEFAULT_EMBEDDED_EEGS,
        synthetic_seed: int = 0,
        fold_scheme: str | None = None,
    ):
        self.data_dir = data_dir
        self.n_folds = n_folds
        self.synthetic_eegs = synthetic_eegs
        self.synthetic_seed = synthetic_seed
        self.fold_scheme = fold_scheme or self.default_fold_scheme

    # --- training ---------------------------------------------------------------------------

    @abc.abstractmethod
    def train_dataset(
        self,
        fold: int,
        *,
        seed: int,
        batch_size: int,
        min_weight_schedule: Sequence[float],
        worker_count: int = 0,
        first_epoch: int = 0,
    ) -> tuple[Iterable, int]:
        """(dataset of `(inputs, y)` batches, steps per epoch) of the fold's training rows for
        epochs `first_epoch .. len(min_weight_schedule) - 1`; `min_weight_schedule` holds one
        loss threshold per epoch. Starting at `first_epoch` (a resumed run) gives the batches an
        uninterrupted run sees from that epoch on."""

    @abc.abstractmethod
    def loss(self) -> keras.losses.Loss:
        """The training loss for this task's `y`."""

    @abc.abstractmethod
    def monitor_score(self, model: keras.Model, fold: int, *, batch_size: int) -> float:
        """The validation score logged after each epoch (`val_kl`, lower is better)."""

    # --- out-of-fold predictions and scores -------------------------------------------------

    @abc.abstractmethod
    def predict_validation(self, model: keras.Model, fold: int, *, batch_size: int) -> pd.DataFrame:
        """Out-of-fold logits of the fold's validation rows: id columns (`label_id` among them) +
        `metrics.LOGIT_COLUMNS`. Tasks with test-time augmentation (`tta_unit`) also take
        `shift=` (one view; 0 = the unaugmented prediction written to `oof.parquet`)."""

    @abc.abstractmethod
    def score_oof(self, oof: pd.DataFrame, fold: int) -> dict[str, float]:
        """CV figures of `predict_validation` frames (one or more seeds stacked, with a `seed`
        column) and the class-prior baseline's on the same rows."""

    def score_runs(self, runs_by_fold: dict[int, list[Path]]) -> pd.DataFrame:
        """One row of `score_oof` figures per fold, the seeds of a fold ensembled.

        runs_by_fold: fold -> run folders holding out-of-fold predictions
        (`runs.oof_runs_by_fold`)."""
        table = []
        for fold, run_dirs in runs_by_fold.items():
            oof = runs.read_oof(run_dirs)
            table.append({"fold": fold, "seeds": oof["seed"].nunique(), **self.score_oof(oof, fold)})
        return pd.DataFrame(table)

    # --- combining models and test-time augmentation views ---------------------------------

    def model_logits(self, model: keras.Model, inputs, steps: int | None = None) -> np.ndarray:
        """(rows, 6) float64 logits of one model on `inputs` (an evaluation dataset of `steps`
        batches, or a batch of model inputs), as `log_probabilities` combines them."""
        return np.asarray(model.predict(inputs, steps=steps, verbose=0), np.float64)

    def log_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(rows, 6) float64 natural-log class probabilities of several models (or test-time
        augmentation views) combined as this task ensembles them; logits: (models, rows, 6).
        Here: the logits averaged, then log-softmax (the v5 reference's logit mean)."""
        return log_softmax(np.mean(np.asarray(logits, np.float64), axis=0))

    def check_tta(self, shifts: Sequence[int]) -> tuple[int, ...]:
        """`shifts` as a tuple of distinct ints, after checking that this task can predict each
        view (0 is the unaugmented one); ValueError naming the task and the problem otherwise.
        Here: only (0,), the task has no test-time augmentation."""
        shifts = tuple(int(shift) for shift in shifts)
        if not shifts or len(set(shifts)) != len(shifts):
            raise ValueError(f"{type(self).__name__}: test-time augmentation shifts {list(shifts)} must be distinct, "
                             "at least one")
        if self.tta_unit is None and shifts != (0,):
            raise ValueError(f"{type(self).__name__} has no test-time augmentation (shifts {list(shifts)})")
        return shifts

    # --- prediction -------------------------------------------------------------------------

    @abc.abstractmethod
    def predict_test(
        self, models: Sequence[keras.Model], *, batch_size: int = 32, on_bad_recording: str = "error"
    ) -> pd.DataFrame:
        """The ensembled submission for the data's test set: `eeg_id` + the six vote columns, one
        row per test.csv row, in its order.

        Every test recording is checked before any model runs. on_bad_recording="error" raises
        one HmsDataError naming every unreadable one and its problem; "prior" gives their rows
        the training class prior instead and lists them in a warning (ON_BAD_RECORDING)."""

    @abc.abstractmethod
    def ensemble_probabilities(self, models: Sequence[keras.Model], inputs, steps: int | None = None) -> np.ndarray:
        """(rows, 6) class probabilities of `models` combined as this task ensembles them.
        `inputs`: an evaluation dataset of `steps` batches, or a batch of model inputs."""

    @abc.abstractmethod
    def read_recording(self, path) -> np.ndarray:
        """One input file (e.g. an EEG or spectrogram parquet) as the array `recording_inputs` takes."""

    @abc.abstractmethod
    def recording_inputs(self, recording: np.ndarray, offset_seconds: float = 0.0):
        """Model inputs (a batch of one) of the window starting `offset_seconds` into a recording."""

    # --- sliding windows over a whole recording (`hms_keras.sliding_windows`) -----------------

    # Length of one input window in seconds; None: the task predicts no sliding windows.
    window_seconds: float | None = None

    def prepare_recording(self, recording: np.ndarray):
        """What `read_recording` returned, made ready for `windows_inputs`: the work done once per
        recording whatever the number of windows. Here: the recording unchanged."""
        return recording

    def recording_seconds(self, prepared) -> float:
        """Seconds covered by a `prepare_recording` result, in which windows may start and end."""
        raise NotImplementedError(f"{type(self).__name__} predicts no sliding windows")

    def windows_inputs(self, prepared, offsets_seconds: Sequence[float], shift: int = 0):
        """Model inputs (a batch of len(offsets_seconds)) of the windows starting at those seconds
        into a `prepare_recording` result; `shift`: a test-time augmentation view (0: none).
        Here: `recording_inputs` of each window, concatenated along the batch axis."""
        view = {"shift": shift} if shift else {}
        batches = [self.recording_inputs(prepared, offset, **view) for offset in offsets_seconds]
        return keras.tree.map_structure(lambda *arrays: np.concatenate(arrays), *batches)


class HmsTask(Task):
    """A task on one data folder in the Kaggle layout (or the embedded synthetic dataset when
    `data_dir` is None). The training side (train.csv, folds, caches) is read on first use, so
    predicting the test set never touches it."""

    @functools.cached_property
    def layout(self) -> HmsLayout:
        return HmsLayout(resolve_data_dir(self.data_dir, self.synthetic_eegs, self.synthetic_seed))

    @functools.cached_property
    def train_df(self) -> pd.DataFrame:
        """train.csv, validated, every label window checked against its recording."""
        train_df = read_train_csv(self.layout.train_csv)
        check_label_windows(train_df, self.layout)
        return train_df

    def test_rows(self) -> pd.DataFrame:
        """test.csv, validated."""
        return read_test_csv(self.layout.test_csv)

    def unreadable_test_prediction(self, unreadable: dict[Path, Exception], on_bad_recording: str) -> np.ndarray:
        """(6,) the probabilities for the test rows of unreadable recordings, or an HmsDataError.

        unreadable: {recording file: why it cannot be read} (not empty, one folder). With
        on_bad_recording="error", raises HmsDataError, on one line: `<folder>: <n> unreadable test
        recording(s): <file> (<problem>), ...`. With "prior", warns with the same list and returns
        the training label distribution: `baseline_prior` of train.csv's rows (train.csv alone is
        read, not the training recordings).
        """
        check_on_bad_recording(on_bad_recording)
        folder = next(iter(unreadable)).parent
        listed = ", ".join(f"{path} ({_problem(path, error)})" for path, error in unreadable.items())
        message = f"{folder}: {len(unreadable)} unreadable test recording(s): {listed}"
        if on_bad_recording == "error":
            raise HmsDataError(message)
        try:
            prior = baseline_prior(read_train_csv(self.layout.train_csv))
        except HmsDataError as error:
            raise HmsDataError(f"{message}; their rows cannot get the class prior: {error}") from error
        warnings.warn(f"{message}; their rows get the training class prior", stacklevel=3)
        return prior
