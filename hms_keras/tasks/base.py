"""Shared pieces of the tasks: the data folder, folds, logits frames and per-fold scoring."""

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from hms_keras import runs
from hms_keras.data.hms import HmsLayout, check_label_windows, read_test_csv, read_train_csv
from hms_keras.data.synthetic import embedded_data_dir
from hms_keras.metrics import LOGIT_COLUMNS, class_prior, kaggle_kl_score, submission_frame


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


def kaggle_score(ids, truth: np.ndarray, probabilities: np.ndarray, id_column: str) -> float:
    """The official metric of (rows, 6) `probabilities` against (rows, 6) `truth`, rows named by
    `ids` (label_id, spectrogram_id, ...)."""
    solution = submission_frame(ids, truth).rename(columns={"eeg_id": id_column})
    submission = submission_frame(ids, probabilities).rename(columns={"eeg_id": id_column})
    return kaggle_kl_score(solution, submission, id_column=id_column)


class Task:
    """Base of the tasks: one data folder in the Kaggle layout. The training side (train.csv,
    folds, caches) is read on first use, so predicting the test set never touches it."""

    def __init__(self, data_dir=None, *, n_folds: int = 5, synthetic_eegs: int = 600, synthetic_seed: int = 0):
        self.layout = HmsLayout(resolve_data_dir(data_dir, synthetic_eegs, synthetic_seed))
        self.n_folds = n_folds

    @functools.cached_property
    def train_df(self) -> pd.DataFrame:
        """train.csv, validated, every label window checked against its recording."""
        train_df = read_train_csv(self.layout.train_csv)
        check_label_windows(train_df, self.layout)
        return train_df

    def test_rows(self) -> pd.DataFrame:
        """test.csv, validated."""
        return read_test_csv(self.layout.test_csv)

    def score_oof(self, oof: pd.DataFrame, fold: int) -> dict[str, float]:
        raise NotImplementedError

    def score_runs(self, runs_by_fold: dict[int, list[Path]]) -> pd.DataFrame:
        """One row of `score_oof` figures per fold, the seeds of a fold ensembled.

        runs_by_fold: fold -> run folders holding out-of-fold predictions
        (`runs.oof_runs_by_fold`)."""
        table = []
        for fold, run_dirs in runs_by_fold.items():
            oof = runs.read_oof(run_dirs)
            table.append({"fold": fold, "seeds": oof["seed"].nunique(), **self.score_oof(oof, fold)})
        return pd.DataFrame(table)
