"""hms_keras.data.labels: vote targets against hand-computed values, and the eval row sample."""

import numpy as np
import pandas as pd
import pytest

from hms_keras import constants
from hms_keras.data.hms import HmsDataError
from hms_keras.data.labels import (
    PROB_COLUMNS,
    PROB_PER_EEG_COLUMNS,
    first_row_per_spectrogram,
    sample_eval_rows,
    v5_targets,
    vote_probabilities,
    vote_targets,
)


def votes_frame(eeg_ids, votes, index=None) -> pd.DataFrame:
    frame = pd.DataFrame(np.asarray(votes), columns=list(constants.VOTE_COLUMNS), index=index)
    frame.insert(0, "eeg_id", eeg_ids)
    return frame


def test_vote_targets_hand_computed():
    # EEG 7: rows with 3 seizure votes, and 1 seizure + 1 lpd; EEG 9: one row of 14 grda + 14 other.
    train_df = votes_frame(
        [7, 9, 7],
        [[3, 0, 0, 0, 0, 0], [0, 0, 0, 0, 14, 14], [1, 1, 0, 0, 0, 0]],
        index=[10, 20, 30],
    )
    targets = vote_targets(train_df)
    assert targets.index.tolist() == [10, 20, 30]
    np.testing.assert_allclose(
        targets[list(PROB_COLUMNS)].to_numpy(),
        [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0.5, 0.5], [0.5, 0.5, 0, 0, 0, 0]],
    )
    np.testing.assert_allclose(targets["weight"], [3 / 28, 1.0, 2 / 28])
    # EEG 7 pools 4 seizure + 1 lpd votes over 2 rows: (0.8, 0.2), mean total 2.5 votes.
    np.testing.assert_allclose(
        targets[list(PROB_PER_EEG_COLUMNS)].to_numpy(),
        [[0.8, 0.2, 0, 0, 0, 0], [0, 0, 0, 0, 0.5, 0.5], [0.8, 0.2, 0, 0, 0, 0]],
    )
    np.testing.assert_allclose(targets["weight_per_eeg"], [2.5 / 28, 1.0, 2.5 / 28])
    assert "weight" not in train_df.columns  # the input is not modified


def test_vote_probabilities_are_votes_over_their_total():
    rows = votes_frame([7, 9], [[3, 1, 0, 0, 0, 0], [0, 0, 0, 0, 14, 14]], index=[10, 20])
    np.testing.assert_array_equal(vote_probabilities(rows), [[0.75, 0.25, 0, 0, 0, 0], [0, 0, 0, 0, 0.5, 0.5]])
    with pytest.raises(HmsDataError, match=r"validation: row 20 has no positive vote total"):
        vote_probabilities(votes_frame([7, 9], [[3, 1, 0, 0, 0, 0], [0] * 6], index=[10, 20]), "validation")


def test_vote_targets_rejects_rows_without_votes():
    with pytest.raises(HmsDataError, match="train_df: row 1 has no positive vote total"):
        vote_targets(votes_frame([1, 2], [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]))
    with pytest.raises(HmsDataError, match="train_df: missing column.*'other_vote'"):
        vote_targets(votes_frame([1], [[1, 0, 0, 0, 0, 0]]).drop(columns="other_vote"))


def test_v5_targets_put_the_row_in_head_0_and_the_eeg_in_head_1():
    targets = vote_targets(votes_frame([7, 9, 7], [[3, 0, 0, 0, 0, 0], [0, 0, 0, 0, 14, 14], [1, 1, 0, 0, 0, 0]]))
    y = v5_targets(targets)
    assert y.shape == (3, 2, 8) and y.dtype == np.float32
    np.testing.assert_allclose(y[:, 0, :6], targets[list(PROB_COLUMNS)].to_numpy(), rtol=1e-7)
    np.testing.assert_allclose(y[:, 1, :6], targets[list(PROB_PER_EEG_COLUMNS)].to_numpy(), rtol=1e-7)
    np.testing.assert_allclose(y[:, :, 6], targets[["weight", "weight_per_eeg"]].to_numpy(), rtol=1e-7)
    assert not y[:, :, 7].any()  # no threshold yet
    with pytest.raises(HmsDataError, match="targets: missing column.*'weight_per_eeg'"):
        v5_targets(targets.drop(columns="weight_per_eeg"))


def test_first_row_per_spectrogram_keeps_the_first_row_and_its_index_label():
    rows = pd.DataFrame({"spectrogram_id": [5, 3, 5, 3, 8], "offset": [0, 1, 2, 3, 4]}, index=range(10, 15))
    first = first_row_per_spectrogram(rows)
    assert first.index.tolist() == [10, 11, 14] and first["offset"].tolist() == [0, 1, 4]


def test_sample_eval_rows_picks_up_to_three_rows_per_eeg():
    # EEG 1 has 5 rows, EEG 2 has 2 rows; index labels start at 100 to tell labels from positions.
    targets = vote_targets(votes_frame([1, 1, 2, 1, 1, 2, 1], np.ones((7, 6), int), index=range(100, 107)))
    rows = sample_eval_rows(targets)
    assert rows.columns[0] == "row" and rows.index.tolist() == list(range(len(rows)))
    per_eeg = rows.groupby("eeg_id")["row"].apply(list).to_dict()
    assert len(per_eeg[1]) == 3 and set(per_eeg[1]) <= {100, 101, 103, 104, 106}
    assert per_eeg[2] == [102, 105]
    assert rows["row"].is_monotonic_increasing  # original row order
    pd.testing.assert_frame_equal(rows.drop(columns="row"), targets.loc[rows["row"]].reset_index(drop=True))
    pd.testing.assert_frame_equal(rows, sample_eval_rows(targets))  # same seed, same rows


def test_sample_eval_rows_is_uniform_and_seeded():
    # 3,000 EEGs of 4 rows: each row position is drawn with probability 3/4.
    targets = vote_targets(votes_frame(np.repeat(np.arange(3000), 4), np.ones((12000, 6), int)))
    rows = sample_eval_rows(targets, rows_per_eeg=3, seed=123)
    assert len(rows) == 9000
    position_share = np.bincount(rows["row"].to_numpy() % 4, minlength=4) / 3000
    np.testing.assert_allclose(position_share, 0.75, atol=0.03)
    other_seed = sample_eval_rows(targets, rows_per_eeg=3, seed=124)
    assert not np.array_equal(rows["row"].to_numpy(), other_seed["row"].to_numpy())
    assert len(sample_eval_rows(targets, rows_per_eeg=1)) == 3000
