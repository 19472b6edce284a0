"""The official HMS competition score and the v5 high-vote cross-validation protocol (numpy/pandas).

- `kaggle_kl_score`: Kaggle's "kullback-leibler-divergence" metric, micro average
  (`docs/hms_data.md`), aligned by id.
- `high_vote_cv`: the v5 recipe's "n_votes > 8.4" per-EEG CV (`docs/v5_reference.md` §7),
  built from `keep_high_vote_rows`, `pool_eeg_logits`, `eeg_vote_targets` and `softmax`.
- `class_prior` + `constant_row_logits`: the class-prior baseline to report next to a CV.
Invalid inputs raise ValueError naming the frame and the problem.
"""

import numpy as np
import pandas as pd

from hms_keras import constants
from hms_keras.data.labels import PROB_PER_EEG_COLUMNS, vote_probabilities

SUBMISSION_EPSILON = 1e-15  # the submission is clipped to [eps, 1 - eps]; the solution never is
LOGIT_COLUMNS = tuple(f"logit_{k}" for k in range(constants.NUM_CLASSES))  # index-aligned with CLASSES
HIGH_VOTE_MIN_WEIGHT = 0.3  # mean(weight, weight_per_eeg) >= 0.3, i.e. >= 8.4 votes of 28


def _require(frame: pd.DataFrame, columns, name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}")


def _check_ids(frame: pd.DataFrame, name: str, id_column: str) -> None:
    _require(frame, [id_column], name)
    duplicated = frame[id_column].duplicated().to_numpy()
    if duplicated.any():
        raise ValueError(f"{name}: {id_column} {frame[id_column].to_numpy()[duplicated][0]} appears more than once")


def _check_probabilities(frame: pd.DataFrame, name: str, id_column: str) -> np.ndarray:
    """The six vote columns as (rows, 6) float64 after Kaggle's checks (before any clipping)."""
    _require(frame, constants.VOTE_COLUMNS, name)
    for column in constants.VOTE_COLUMNS:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"{name}: column {column!r} is not numeric (dtype {frame[column].dtype})")
    values = frame[list(constants.VOTE_COLUMNS)].to_numpy(np.float64)  # (rows, 6)
    checks = (
        (np.isnan(values).any(axis=1), "NaN values"),
        ((values < 0).any(axis=1), "values below 0"),
        ((values > 1).any(axis=1), "values above 1"),
        (~np.isclose(values.sum(axis=1), 1.0, rtol=1e-5, atol=1e-8), "a sum that is not 1 (rtol 1e-5, atol 1e-8)"),
    )
    for bad, problem in checks:
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"{name}: {int(bad.sum())} row(s) with {problem}, first {id_column}="
                f"{frame[id_column].iloc[row]}: {values[row].tolist()}"
            )
    return values


def _check_weights(sample_weight, n_rows: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight: shape {weights.shape}, expected ({n_rows},) (one per solution row)")
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("sample_weight: weights must be finite, >= 0 and have a positive sum")
    return weights


def kaggle_kl_score(
    solution: pd.DataFrame, submission: pd.DataFrame, id_column: str = "eeg_id", sample_weight=None
) -> float:
    """The competition score: mean over rows of KL(solution row || clipped submission row).

    Both frames hold `id_column` and the six constants.VOTE_COLUMNS (probabilities; other columns
    are ignored). Both are checked before any clipping: numeric, no NaN, in [0, 1], rows sum to 1
    within np.isclose(rtol=1e-5, atol=1e-8), unique ids, the same id set. Submission rows are
    aligned to the solution by id, then clipped to [1e-15, 1 - 1e-15] and not renormalised;
    the solution is not clipped. Per cell p * ln(p / q) where p > 0 and 0 where p == 0,
    summed over the 6 classes; the result (nats) is the mean of the row sums, weighted by
    `sample_weight` ((rows,) in solution row order) when given. Computed in float64.
    """
    _check_ids(solution, "solution", id_column)
    _check_ids(submission, "submission", id_column)
    target = _check_probabilities(solution, "solution", id_column)  # (rows, 6)
    predicted = _check_probabilities(submission, "submission", id_column)  # (rows, 6), submission order
    solution_ids = pd.Index(solution[id_column])
    submission_ids = pd.Index(submission[id_column])
    missing = solution_ids.difference(submission_ids)
    if len(missing):
        raise ValueError(f"submission: {len(missing)} {id_column}(s) of the solution are missing, e.g. {missing[0]}")
    extra = submission_ids.difference(solution_ids)
    if len(extra):
        raise ValueError(f"submission: {len(extra)} {id_column}(s) are not in the solution, e.g. {extra[0]}")
    weights = _check_weights(sample_weight, len(target))
    predicted = predicted[submission_ids.get_indexer(solution_ids)]  # (rows, 6), solution order
    predicted = np.clip(predicted, SUBMISSION_EPSILON, 1 - SUBMISSION_EPSILON)
    terms = np.zeros_like(target)  # (rows, 6)
    positive = target > 0
    terms[positive] = target[positive] * np.log(target[positive] / predicted[positive])
    return float(np.average(terms.sum(axis=1), weights=weights))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float64; (..., 6) logits -> (..., 6) probabilities."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis, float64, computed stably; (..., 6) logits -> (..., 6)
    natural-log probabilities (`softmax` of the result gives back `softmax(logits)`)."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def submission_frame(eeg_ids, probabilities: np.ndarray) -> pd.DataFrame:
    """A submission-shaped frame: `eeg_id` and the six VOTE_COLUMNS from (rows, 6) probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float64)  # (rows, 6)
    frame = pd.DataFrame(probabilities, columns=list(constants.VOTE_COLUMNS))
    frame.insert(0, "eeg_id", np.asarray(eeg_ids))
    return frame


def eeg_vote_targets(targets: pd.DataFrame) -> pd.DataFrame:
    """Per-EEG pooled vote distribution (all rows of the EEG), one row per eeg_id.

    `targets`: `hms_keras.data.labels.vote_targets` output. Returns a submission-shaped frame
    (`eeg_id` + VOTE_COLUMNS as probabilities) in eeg_id first-appearance order.
    """
    _require(targets, ("eeg_id", *PROB_PER_EEG_COLUMNS), "targets")
    first_rows = targets.drop_duplicates("eeg_id")
    return submission_frame(first_rows["eeg_id"], first_rows[list(PROB_PER_EEG_COLUMNS)].to_numpy())


def _check_row_logits(targets: pd.DataFrame, row_logits: pd.DataFrame) -> None:
    _require(targets, ("eeg_id", "weight", "weight_per_eeg"), "targets")
    _require(row_logits, ("eeg_id", "row", *LOGIT_COLUMNS), "row_logits")
    if not targets.index.is_unique:
        raise ValueError("targets: index labels must be unique (they are the row ids)")
    unknown = ~row_logits["row"].isin(targets.index).to_numpy()
    if unknown.any():
        row = row_logits["row"].iloc[int(np.argmax(unknown))]
        raise ValueError(f"row_logits: row {row} is not an index label of targets")
    mismatch = targets.loc[row_logits["row"], "eeg_id"].to_numpy() != row_logits["eeg_id"].to_numpy()
    if mismatch.any():
        first = int(np.argmax(mismatch))
        raise ValueError(
            f"row_logits: row {row_logits['row'].iloc[first]} belongs to another EEG than "
            f"eeg_id {row_logits['eeg_id'].iloc[first]}"
        )
    if not np.isfinite(row_logits[list(LOGIT_COLUMNS)].to_numpy(np.float64)).all():
        raise ValueError("row_logits: logits must be finite")
    entries_per_row = row_logits.groupby(["eeg_id", "row"]).size()
    uneven = entries_per_row.groupby(level="eeg_id").nunique() > 1
    if uneven.any():
        raise ValueError(
            f"row_logits: the rows of eeg_id {uneven.index[int(np.argmax(uneven.to_numpy()))]} appear "
            "different numbers of times; every seed/model must predict the same sampled rows"
        )


def keep_high_vote_rows(
    targets: pd.DataFrame, row_logits: pd.DataFrame, min_weight: float = HIGH_VOTE_MIN_WEIGHT
) -> pd.DataFrame:
    """The entries of `row_logits` whose label row has mean(weight, weight_per_eeg) >= min_weight.

    `targets`: `vote_targets` output; `row_logits`: see `high_vote_cv`. Keeps row order and index.
    """
    _check_row_logits(targets, row_logits)
    labels = targets.loc[row_logits["row"]]
    mean_weight = (labels["weight"].to_numpy() + labels["weight_per_eeg"].to_numpy()) / 2  # (entries,)
    return row_logits[mean_weight >= min_weight]


def pool_eeg_logits(row_logits: pd.DataFrame) -> pd.DataFrame:
    """Mean of the LOGIT_COLUMNS over all entries of each eeg_id.

    Returns float64 logits indexed by eeg_id (first-appearance order). With several seeds
    stacked (one entry per row and seed, every seed predicting the same rows) this equals the
    mean over seeds of each seed's mean over rows.
    """
    return row_logits.groupby("eeg_id", sort=False)[list(LOGIT_COLUMNS)].mean().astype(np.float64)


def high_vote_cv(targets: pd.DataFrame, row_logits: pd.DataFrame, min_weight: float = HIGH_VOTE_MIN_WEIGHT) -> float:
    """The v5 "n_votes > 8.4" CV: per-EEG KL on high-vote rows, unweighted mean over EEGs (v5 reference §7).

    `targets`: `vote_targets` output covering (at least) every EEG of `row_logits`; its index
    labels are the `row` ids. `row_logits`: columns `eeg_id`, `row` and `logit_0..logit_5`, the
    head-averaged logits of the rows drawn by `labels.sample_eval_rows(targets, 3, seed=123)`.
    Seeds/models are STACKED: one entry per (row, seed), every seed predicting the same rows; to
    pass seed-averaged logits instead, give one entry per row. Steps: keep the rows with
    mean(weight, weight_per_eeg) >= min_weight; skip EEGs with no kept row; EEG logit = mean
    over its kept entries; score = `kaggle_kl_score` of the pooled per-EEG vote distribution
    (all rows of the EEG) against softmax(EEG logit), each EEG weighing 1. Result in nats.
    """
    kept = keep_high_vote_rows(targets, row_logits, min_weight)
    if kept.empty:
        raise ValueError(f"row_logits: no row has mean(weight, weight_per_eeg) >= {min_weight}")
    eeg_logits = pool_eeg_logits(kept)  # (eegs, 6)
    solution = eeg_vote_targets(targets[targets["eeg_id"].isin(eeg_logits.index)])
    submission = submission_frame(eeg_logits.index, softmax(eeg_logits.to_numpy()))
    return kaggle_kl_score(solution, submission)


def class_prior(train_df: pd.DataFrame) -> np.ndarray:
    """The training-set mean vote distribution: mean over label rows of votes / row total, (6,) float64."""
    _require(train_df, constants.VOTE_COLUMNS, "train_df")
    return vote_probabilities(train_df, "train_df").mean(axis=0)  # raises HmsDataError (a ValueError)


def constant_row_logits(rows: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    """`row_logits` that predict the same distribution for every row (e.g. `class_prior`).

    `rows`: frame with `eeg_id` and `row` (e.g. `sample_eval_rows` output); `probabilities`:
    (6,) positive. Logits are ln(probabilities), so softmax gives back probabilities / their sum.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (constants.NUM_CLASSES,) or not (probabilities > 0).all():
        raise ValueError(f"probabilities: expected ({constants.NUM_CLASSES},) positive values, got {probabilities}")
    _require(rows, ("eeg_id", "row"), "rows")
    logits = np.broadcast_to(np.log(probabilities), (len(rows), constants.NUM_CLASSES))  # (rows, 6)
    frame = pd.DataFrame(logits, columns=list(LOGIT_COLUMNS))
    frame.insert(0, "row", rows["row"].to_numpy())
    frame.insert(0, "eeg_id", rows["eeg_id"].to_numpy())
    return frame
