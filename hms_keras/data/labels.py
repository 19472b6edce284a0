"""Vote targets and sample weights of the v5 recipe, their y arrays, and the label rows a recipe uses:
the reproducible evaluation row sample (v5) and the first row of each spectrogram (the baseline).

Spec: `docs/v5_reference.md` §2 (two heads: row-level and per-EEG pooled labels) and §7;
`docs/spectrogram_baseline.md`.
"""

import numpy as np
import pandas as pd

from hms_keras import constants
from hms_keras.data.hms import HmsDataError, require_columns
from hms_keras.target_layout import pack

PROB_COLUMNS = tuple(f"{name}_prob" for name in constants.CLASSES)
PROB_PER_EEG_COLUMNS = tuple(f"{name}_prob_per_eeg" for name in constants.CLASSES)
TARGET_COLUMNS = (*PROB_COLUMNS, "weight", *PROB_PER_EEG_COLUMNS, "weight_per_eeg")  # what v5_targets reads


def vote_probabilities(rows: pd.DataFrame, name: str = "rows") -> np.ndarray:
    """(rows, 6) float64 vote distribution of each label row: its six constants.VOTE_COLUMNS
    divided by their total (the Kaggle target). Raises HmsDataError naming `name` when a vote
    column is missing or a row has no votes."""
    require_columns(rows, constants.VOTE_COLUMNS, name)
    votes = rows[list(constants.VOTE_COLUMNS)].to_numpy(np.float64)  # (rows, 6)
    totals = votes.sum(axis=1, keepdims=True)  # (rows, 1)
    if not (totals > 0).all():
        row = int(np.argmax(~(totals[:, 0] > 0)))
        raise HmsDataError(f"{name}: row {rows.index[row]} has no positive vote total ({votes[row]})")
    return votes / totals


def vote_targets(train_df: pd.DataFrame) -> pd.DataFrame:
    """Per-row and per-EEG vote distributions and weights (v5 reference §2).

    `train_df`: label rows with `eeg_id` and the six constants.VOTE_COLUMNS (e.g. from
    `read_train_csv`). Returns a copy (same index and row order) plus float64 columns:
    `{c}_prob` = row votes / row total; `weight` = row total / 28; `{c}_prob_per_eeg` = the
    votes summed over all rows of the eeg_id / their summed total (the pooled distribution);
    `weight_per_eeg` = mean row total over the eeg_id / 28. c runs over constants.CLASSES.
    """
    require_columns(train_df, ("eeg_id", *constants.VOTE_COLUMNS), "train_df")
    probabilities = vote_probabilities(train_df, "train_df")  # (rows, 6); every row has votes
    votes = train_df[list(constants.VOTE_COLUMNS)].to_numpy(np.float64)  # (rows, 6)
    totals = votes.sum(axis=1)  # (rows,)
    codes = pd.factorize(train_df["eeg_id"])[0]  # (rows,) eeg index in first-appearance order
    eeg_votes = np.zeros((codes.max() + 1, constants.NUM_CLASSES))  # (eegs, 6)
    np.add.at(eeg_votes, codes, votes)
    eeg_totals = eeg_votes.sum(axis=1)  # (eegs,)
    eeg_rows = np.bincount(codes)  # (eegs,)
    targets = train_df.copy()
    targets[list(PROB_COLUMNS)] = probabilities
    targets["weight"] = totals / constants.MAX_VOTES
    targets[list(PROB_PER_EEG_COLUMNS)] = (eeg_votes / eeg_totals[:, None])[codes]
    targets["weight_per_eeg"] = (eeg_totals / eeg_rows / constants.MAX_VOTES)[codes]
    return targets


def v5_targets(targets: pd.DataFrame) -> np.ndarray:
    """(rows, 2, 8) float32 y of each label row (`target_layout`): head 0 the row's probabilities
    and `weight`, head 1 its EEG's pooled probabilities and `weight_per_eeg`, threshold 0.
    `targets`: rows with the `vote_targets` columns (v5 reference §2)."""
    require_columns(targets, TARGET_COLUMNS, "targets")
    row, per_eeg = targets[list(PROB_COLUMNS)].to_numpy(), targets[list(PROB_PER_EEG_COLUMNS)].to_numpy()
    probabilities = np.stack([row, per_eeg], axis=1)  # (rows, 2, 6)
    return pack(probabilities, targets[["weight", "weight_per_eeg"]].to_numpy())  # (rows, 2, 8)


def first_row_per_spectrogram(rows: pd.DataFrame) -> pd.DataFrame:
    """The first label row of each spectrogram_id, in first-appearance order with its index label:
    the rows the spectrogram baseline trains on, splits into folds and scores."""
    require_columns(rows, ("spectrogram_id",), "rows")
    return rows.drop_duplicates("spectrogram_id", keep="first")


def sample_eval_rows(targets: pd.DataFrame, rows_per_eeg: int = 3, seed: int = 123) -> pd.DataFrame:
    """Draw up to `rows_per_eeg` label rows per eeg_id, uniformly without replacement.

    Every row of `targets` gets a uniform key from `np.random.default_rng(seed)` (one draw per
    row, in row order) and each eeg_id keeps its rows with the smallest keys, all of them when
    it has no more than `rows_per_eeg`. The result depends only on (targets, rows_per_eeg, seed).
    Returns the chosen rows in their original order with a fresh RangeIndex; column `row`
    (first) holds each row's index label in `targets`.
    """
    if rows_per_eeg < 1:
        raise ValueError(f"rows_per_eeg must be >= 1, got {rows_per_eeg}")
    require_columns(targets, ("eeg_id",), "targets")
    if "row" in targets.columns:
        raise HmsDataError("targets: already has a column 'row'; sample_eval_rows adds it")
    keys = np.random.default_rng(seed).random(len(targets))  # (rows,)
    codes = pd.factorize(targets["eeg_id"])[0]  # (rows,)
    rank = pd.Series(keys).groupby(codes).rank(method="first").to_numpy()  # (rows,) 1 = smallest key
    chosen = targets[rank <= rows_per_eeg]
    return chosen.rename_axis("row").reset_index()
