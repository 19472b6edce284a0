"""hms_keras.data.folds: patients never straddle folds, each id gets one fold, splits are reproducible."""

import numpy as np
import pandas as pd
import pytest

from hms_keras import constants
from hms_keras.data.folds import patient_group_folds, stratified_spectrogram_folds
from hms_keras.data.hms import HmsDataError


def label_rows(n_patients: int = 40, seed: int = 0) -> pd.DataFrame:
    """Label rows of 1-4 EEGs per patient, 1-5 rows per EEG, one spectrogram per 2 EEGs of a patient."""
    rng = np.random.default_rng(seed)
    rows = []
    eeg_id = 1000
    for patient in rng.permutation(n_patients):
        for k in range(rng.integers(1, 5)):
            eeg_id += 1
            consensus = constants.CONSENSUS_NAMES[rng.integers(0, 6)]
            rows += [(eeg_id, 5000 + 10 * patient + k // 2, patient, consensus)] * rng.integers(1, 6)
    return pd.DataFrame(rows, columns=["eeg_id", "spectrogram_id", "patient_id", "expert_consensus"])


def assert_patients_in_one_fold(train_df, folds, key):
    fold_of_row = train_df[key].map(folds)
    assert fold_of_row.notna().all()
    assert (fold_of_row.groupby(train_df["patient_id"]).nunique() == 1).all()


def test_patient_group_folds_properties():
    train_df = label_rows()
    folds = patient_group_folds(train_df)
    assert folds.index.name == "eeg_id" and folds.index.is_unique
    assert folds.index.tolist() == pd.unique(train_df["eeg_id"]).tolist()
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4] and folds.dtype == np.int64
    assert_patients_in_one_fold(train_df, folds, "eeg_id")
    pd.testing.assert_series_equal(folds, patient_group_folds(train_df.copy()))
    sizes = folds.value_counts()
    assert sizes.max() - sizes.min() <= 4  # GroupKFold balances EEG counts; a patient has <= 4 EEGs


def test_patient_group_folds_weighs_patients_by_eegs_not_rows():
    # Patient 1: one EEG with 10 label rows; patient 2: two EEGs with one row each. Fitted on
    # unique (eeg_id, patient_id) pairs, patient 2 is the larger group and takes fold 0.
    train_df = pd.DataFrame({"eeg_id": [1] * 10 + [2, 3], "patient_id": [1] * 10 + [2, 2]})
    folds = patient_group_folds(train_df, n_folds=2)
    assert folds.to_dict() == {1: 1, 2: 0, 3: 0}


def test_patient_group_folds_errors():
    with pytest.raises(HmsDataError, match="eeg_id 1 appears with more than one patient_id"):
        patient_group_folds(pd.DataFrame({"eeg_id": [1, 1, 2, 3], "patient_id": [1, 2, 3, 4]}), n_folds=2)
    with pytest.raises(HmsDataError, match="3 patient\\(s\\) cannot fill 5"):
        patient_group_folds(pd.DataFrame({"eeg_id": [1, 2, 3], "patient_id": [1, 2, 3]}))
    with pytest.raises(HmsDataError, match="missing column.*'patient_id'"):
        patient_group_folds(pd.DataFrame({"eeg_id": [1], "patient": [1]}))


def test_stratified_spectrogram_folds_properties():
    train_df = label_rows(n_patients=60)
    folds = stratified_spectrogram_folds(train_df)
    assert folds.index.name == "spectrogram_id" and folds.index.is_unique
    assert folds.index.tolist() == pd.unique(train_df["spectrogram_id"]).tolist()
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]
    assert_patients_in_one_fold(train_df, folds, "spectrogram_id")
    pd.testing.assert_series_equal(folds, stratified_spectrogram_folds(train_df))
    assert not folds.equals(stratified_spectrogram_folds(train_df, seed=7))
