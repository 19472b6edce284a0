"""hms_keras.metrics: the official KL score (worked values, validation, a property test) and the
v5 high-vote CV protocol on a hand-made example."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hms_keras import constants
from hms_keras.data.labels import sample_eval_rows, vote_targets
from hms_keras.metrics import (
    LOGIT_COLUMNS,
    class_prior,
    constant_row_logits,
    high_vote_cv,
    kaggle_kl_score,
    pool_eeg_logits,
    submission_frame,
)

UNIFORM = np.full(6, 1 / 6)
ONE_HOT = np.eye(6)[0]


def frame(probabilities, eeg_ids=None) -> pd.DataFrame:
    probabilities = np.atleast_2d(probabilities)
    return submission_frame(np.arange(len(probabilities)) if eeg_ids is None else eeg_ids, probabilities)


def test_worked_values():
    target = frame([ONE_HOT, [0.5, 0.5, 0, 0, 0, 0]])
    assert kaggle_kl_score(target.iloc[1:], target.iloc[1:].copy()) == 0.0
    # The submission's 1.0 is clipped to 1 - 1e-15, so a one-hot row scores ln(1 / (1 - 1e-15)) ~ 1e-15.
    assert kaggle_kl_score(target, target.copy()) == pytest.approx(0.5 * -math.log1p(-1e-15), rel=0.01)
    assert kaggle_kl_score(frame(ONE_HOT), frame(UNIFORM)) == pytest.approx(math.log(6), abs=1e-12)
    assert kaggle_kl_score(frame(ONE_HOT), frame(UNIFORM)) == pytest.approx(1.7918, abs=1e-4)
    # 0.5 ln(0.5 / 0.25) twice = ln 2; cells with p == 0 add nothing whatever q is.
    half = frame([0.5, 0.5, 0, 0, 0, 0])
    assert kaggle_kl_score(half, frame([0.25, 0.25, 0.5, 0, 0, 0])) == pytest.approx(math.log(2), abs=1e-12)


def test_submission_clipped_not_renormalised():
    # q = 0 where p = 1 is clipped to 1e-15: KL = ln(1e15).
    assert kaggle_kl_score(frame(ONE_HOT), frame(np.eye(6)[1])) == pytest.approx(15 * math.log(10), rel=1e-12)


def test_aligns_by_id_and_weights_rows():
    solution = frame([ONE_HOT, UNIFORM], eeg_ids=[11, 22])
    submission = frame([UNIFORM, ONE_HOT], eeg_ids=[22, 11])  # same predictions, rows swapped
    assert kaggle_kl_score(solution, submission) == pytest.approx(0.0, abs=1e-14)
    mixed = frame([UNIFORM, UNIFORM], eeg_ids=[22, 11])
    # row 11: ln 6, row 22: 0.
    assert kaggle_kl_score(solution, mixed) == pytest.approx(math.log(6) / 2)
    assert kaggle_kl_score(solution, mixed, sample_weight=[3, 1]) == pytest.approx(0.75 * math.log(6))
    with pytest.raises(ValueError, match="sample_weight"):
        kaggle_kl_score(solution, mixed, sample_weight=[1, -1])


def test_custom_id_column():
    solution = frame(ONE_HOT).rename(columns={"eeg_id": "row_id"})
    submission = frame(UNIFORM).rename(columns={"eeg_id": "row_id"})
    assert kaggle_kl_score(solution, submission, id_column="row_id") == pytest.approx(math.log(6))


def _cell(value, row=0, column="lpd_vote"):
    def mutate(table):
        table = table.astype({column: object}) if isinstance(value, str) else table
        table.loc[row, column] = value
        return table
    return mutate


INVALID = {
    "negative": (_cell(-0.1), "values below 0"),
    "above one": (_cell(1.5), "values above 1"),
    "not summing to 1": (_cell(0.2), "sum that is not 1"),
    "NaN": (_cell(np.nan), "NaN values"),
    "not numeric": (_cell("x"), "'lpd_vote' is not numeric"),
    "missing column": (lambda t: t.drop(columns="grda_vote"), "missing column.*'grda_vote'"),
    "missing id column": (lambda t: t.drop(columns="eeg_id"), "missing column.*'eeg_id'"),
    "duplicate id": (lambda t: t.assign(eeg_id=[5, 5]), "eeg_id 5 appears more than once"),
}


@pytest.mark.parametrize("case", INVALID)
@pytest.mark.parametrize("which", ["solution", "submission"])
def test_invalid_frames_rejected(case, which):
    mutate, problem = INVALID[case]
    valid = frame([UNIFORM, [0, 0.5, 0.5, 0, 0, 0]])
    solution, submission = (mutate(valid.copy()), valid) if which == "solution" else (valid, mutate(valid.copy()))
    with pytest.raises(ValueError, match=f"{which}: .*{problem}"):
        kaggle_kl_score(solution, submission)


def test_tolerance_and_id_sets():
    solution = frame([UNIFORM, UNIFORM])
    slightly_off = frame([UNIFORM * (1 + 5e-6), UNIFORM])  # within rtol 1e-5: accepted, not renormalised
    assert kaggle_kl_score(solution, slightly_off) == pytest.approx(-math.log(1 + 5e-6) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="submission: 1 eeg_id\\(s\\) of the solution are missing, e.g. 1"):
        kaggle_kl_score(solution, frame(UNIFORM))
    with pytest.raises(ValueError, match="submission: 1 eeg_id\\(s\\) are not in the solution, e.g. 7"):
        kaggle_kl_score(solution, frame([UNIFORM, UNIFORM, UNIFORM], eeg_ids=[0, 1, 7]))


def _distributions(n_rows, zeros):
    """Rows of 6 probabilities; with `zeros`, some cells are exactly 0."""
    low = 0.0 if zeros else 1e-3
    return arrays(np.float64, (n_rows, 6), elements=st.floats(low, 1.0)).filter(
        lambda a: (a.sum(axis=1) > 0.1).all()
    ).map(lambda a: a / a.sum(axis=1, keepdims=True))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n_rows=st.integers(1, 8))
def test_matches_direct_formula(data, n_rows):
    p = data.draw(_distributions(n_rows, zeros=True))
    q = data.draw(_distributions(n_rows, zeros=True))
    order = data.draw(st.permutations(range(n_rows)))
    clipped = np.clip(q, 1e-15, 1 - 1e-15)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(p > 0, p * np.log(p / clipped), 0.0).sum(axis=1).mean()
    ids = np.arange(n_rows) * 3 + 1
    shuffled = frame(q[order], eeg_ids=ids[order])
    assert kaggle_kl_score(frame(p, eeg_ids=ids), shuffled) == pytest.approx(expected, rel=1e-9, abs=1e-12)


# --- the v5 high-vote CV protocol -----------------------------------------------------------------

def cv_targets() -> pd.DataFrame:
    """Three EEGs. A (id 1): rows of 20 and 7 votes; B (id 2): rows of 2 and 20 votes; C (id 3): 3 votes."""
    votes = np.zeros((5, 6), int)
    votes[0, 0] = 20          # A row 0: all seizure
    votes[1, [0, 5]] = 3, 4   # A row 1: 3 seizure, 4 other -> A pooled (23, 0, 0, 0, 0, 4) / 27
    votes[2, 1] = 2           # B row 2: 2 lpd votes
    votes[3, 2] = 20          # B row 3: 20 gpd votes -> B pooled (0, 2, 20, 0, 0, 0) / 22
    votes[4, 3] = 3           # C row 4: 3 lrda votes, weight 3/28: never kept
    table = pd.DataFrame(votes, columns=list(constants.VOTE_COLUMNS))
    table.insert(0, "eeg_id", [1, 1, 2, 2, 3])
    return vote_targets(table)


def row_logit_frame(entries) -> pd.DataFrame:
    """entries: (eeg_id, row, logits (6,))."""
    table = pd.DataFrame([logits for _, _, logits in entries], columns=list(LOGIT_COLUMNS))
    table.insert(0, "row", [row for _, row, _ in entries])
    table.insert(0, "eeg_id", [eeg_id for eeg_id, _, _ in entries])
    return table


def kl(p, q):
    p, q = np.asarray(p, float), np.asarray(q, float)
    mask = p > 0
    return float((p[mask] * np.log(p[mask] / q[mask])).sum())


def softmax(x):
    e = np.exp(np.asarray(x, float) - np.max(x))
    return e / e.sum()


def test_high_vote_cv_hand_example():
    targets = cv_targets()
    # Kept rows (mean of weight and weight_per_eeg >= 0.3, i.e. row total + mean EEG total >= 16.8):
    # row 0: (20 + 13.5) / 2 / 28 = 0.598 kept; row 1: (7 + 13.5) / 56 = 0.366 kept (its own weight
    # 0.25 is below 0.3: the per-EEG weight keeps it);
    # row 2: (2 + 11) / 56 = 0.232 dropped; row 3: (20 + 11) / 56 = 0.554 kept; row 4: dropped.
    a0, a1 = np.array([2.0, 0, 0, 0, 0, 1]), np.array([0.0, 0, 0, 0, 0, 1])
    b2, b3 = np.array([0.0, 9, 0, 0, 0, 0]), np.array([0.0, 1, 3, 0, 0, 0])
    entries = [(1, 0, a0), (1, 1, a1), (2, 2, b2), (2, 3, b3), (3, 4, np.zeros(6))]
    score = high_vote_cv(targets, row_logit_frame(entries))
    expected_a = kl(np.array([23, 0, 0, 0, 0, 4]) / 27, softmax((a0 + a1) / 2))
    expected_b = kl(np.array([0, 2, 20, 0, 0, 0]) / 22, softmax(b3))  # row 2 dropped
    assert score == pytest.approx((expected_a + expected_b) / 2, rel=1e-12)  # C skipped, EEGs weigh 1

    # Two seeds stacked: the EEG logit averages seeds too.
    seed_2 = [(eeg_id, row, logits + 2 * np.eye(6)[5]) for eeg_id, row, logits in entries]
    stacked = high_vote_cv(targets, row_logit_frame(entries + seed_2))
    expected_a = kl(np.array([23, 0, 0, 0, 0, 4]) / 27, softmax((a0 + a1) / 2 + np.eye(6)[5]))
    expected_b = kl(np.array([0, 2, 20, 0, 0, 0]) / 22, softmax(b3 + np.eye(6)[5]))
    assert stacked == pytest.approx((expected_a + expected_b) / 2, rel=1e-12)


def test_high_vote_cv_rejects_inconsistent_rows():
    targets = cv_targets()
    with pytest.raises(ValueError, match="row 9 is not an index label of targets"):
        high_vote_cv(targets, row_logit_frame([(1, 9, np.zeros(6))]))
    with pytest.raises(ValueError, match="row 2 belongs to another EEG than eeg_id 1"):
        high_vote_cv(targets, row_logit_frame([(1, 2, np.zeros(6))]))
    with pytest.raises(ValueError, match="rows of eeg_id 1 appear different numbers of times"):
        high_vote_cv(targets, row_logit_frame([(1, 0, np.zeros(6)), (1, 0, np.zeros(6)), (1, 1, np.zeros(6))]))
    with pytest.raises(ValueError, match="no row has"):
        high_vote_cv(targets, row_logit_frame([(3, 4, np.zeros(6))]))


def test_pool_eeg_logits_means_entries():
    pooled = pool_eeg_logits(row_logit_frame([(5, 0, np.ones(6)), (4, 1, np.zeros(6)), (5, 2, 3 * np.ones(6))]))
    assert pooled.index.tolist() == [5, 4]
    np.testing.assert_allclose(pooled.to_numpy(), [[2.0] * 6, [0.0] * 6])


def test_class_prior_baseline():
    targets = cv_targets()
    prior = class_prior(targets)
    # Mean of the 5 row distributions.
    np.testing.assert_allclose(prior, np.array([1 + 3 / 7, 1, 1, 1, 0, 4 / 7]) / 5)
    rows = sample_eval_rows(targets)
    smoothed = (prior + 0.01) / (prior + 0.01).sum()  # a prior with no zero class
    score = high_vote_cv(targets, constant_row_logits(rows, smoothed))
    expected = (kl(np.array([23, 0, 0, 0, 0, 4]) / 27, smoothed) + kl(np.array([0, 2, 20, 0, 0, 0]) / 22, smoothed)) / 2
    assert score == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        constant_row_logits(rows, prior)  # grda share is 0: ln 0 is no logit
