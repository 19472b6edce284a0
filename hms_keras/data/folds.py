"""Cross-validation folds that never put one patient in two folds.

`patient_group_folds`: the v5 recipe's split (spec `v5_eeg_model.md` §3), one fold per eeg_id.
`stratified_spectrogram_folds`: the spectrogram baseline's split (`docs/spectrogram_baseline.md`),
one fold per spectrogram_id.
"""

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from hms_keras.data.hms import HmsDataError, require_columns
from hms_keras.data.labels import first_row_per_spectrogram

# Named fold schemes: "patient_group" = `patient_group_folds` (v5, per eeg_id), "stratified_spectrogram" =
# `stratified_spectrogram_folds` (the spectrogram baseline, per spectrogram_id).
FOLD_SCHEMES = ("patient_group", "stratified_spectrogram")


def _check_enough_patients(units: pd.DataFrame, n_folds: int) -> None:
    n_patients = units["patient_id"].nunique()
    if n_patients < n_folds:
        raise HmsDataError(f"train_df: {n_patients} patient(s) cannot fill {n_folds} patient-grouped folds")


def _assign_folds(splits, n_units: int) -> np.ndarray:
    """Fold number (int64) of each unit, from a scikit-learn splitter's (train, valid) index pairs."""
    folds = np.full(n_units, -1, dtype=np.int64)
    for fold, (_, valid) in enumerate(splits):
        folds[valid] = fold
    return folds


def patient_group_folds(train_df: pd.DataFrame, n_folds: int = 5) -> pd.Series:
    """Fold (0..n_folds-1) of every eeg_id: GroupKFold by patient_id, deterministic (v5 reference §3).

    Fitted on the unique (eeg_id, patient_id) pairs of `train_df` in first-appearance order, so a
    patient weighs by its number of EEGs, not of label rows. Returns an int64 Series named
    "fold", indexed by eeg_id in first-appearance order.
    """
    require_columns(train_df, ("eeg_id", "patient_id"), "train_df")
    eegs = train_df[["eeg_id", "patient_id"]].drop_duplicates()
    if eegs["eeg_id"].duplicated().any():
        eeg_id = eegs["eeg_id"][eegs["eeg_id"].duplicated()].iloc[0]
        raise HmsDataError(f"train_df: eeg_id {eeg_id} appears with more than one patient_id")
    _check_enough_patients(eegs, n_folds)
    splits = GroupKFold(n_splits=n_folds).split(eegs, groups=eegs["patient_id"])
    index = pd.Index(eegs["eeg_id"].to_numpy(), name="eeg_id")
    return pd.Series(_assign_folds(splits, len(eegs)), index=index, name="fold")


def stratified_spectrogram_folds(train_df: pd.DataFrame, n_folds: int = 5, seed: int = 1086) -> pd.Series:
    """Fold of every spectrogram_id for the spectrogram baseline.

    Uses `labels.first_row_per_spectrogram` (the rows the baseline trains on) and
    StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed) with y = expert_consensus and
    groups = patient_id. Returns an int64 Series named "fold", indexed by spectrogram_id in
    first-appearance order.
    """
    require_columns(train_df, ("spectrogram_id", "patient_id", "expert_consensus"), "train_df")
    first_rows = first_row_per_spectrogram(train_df)
    _check_enough_patients(first_rows, n_folds)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits = splitter.split(first_rows, y=first_rows["expert_consensus"], groups=first_rows["patient_id"])
    index = pd.Index(first_rows["spectrogram_id"].to_numpy(), name="spectrogram_id")
    return pd.Series(_assign_folds(splits, len(first_rows)), index=index, name="fold")


def label_row_folds(train_df: pd.DataFrame, scheme: str, n_folds: int = 5) -> np.ndarray:
    """(rows,) int64 fold of every label row of `train_df` under `scheme` (one of FOLD_SCHEMES):
    the fold of its eeg_id ("patient_group") or of its spectrogram_id ("stratified_spectrogram").

    Either way every row of one EEG, and of one spectrogram, lies in one fold (an EEG has one
    spectrogram; a spectrogram spans EEGs of one patient), so a recipe of either task can train on
    either scheme. Raises ValueError for an unknown scheme and HmsDataError when a spectrogram's
    rows fall into different patient-grouped folds (a spectrogram shared by several patients).
    """
    if scheme == "patient_group":
        require_columns(train_df, ("eeg_id", "spectrogram_id"), "train_df")
        folds = train_df["eeg_id"].map(patient_group_folds(train_df, n_folds)).to_numpy(np.int64)  # (rows,)
        spread = pd.Series(folds).groupby(train_df["spectrogram_id"].to_numpy()).nunique()  # (spectrograms,)
        if (spread > 1).any():
            raise HmsDataError(
                f"train_df: spectrogram_id {spread.index[int(np.argmax(spread.to_numpy() > 1))]} has label rows "
                "in several patient-grouped folds (its EEGs belong to different patients)"
            )
        return folds
    if scheme == "stratified_spectrogram":
        return train_df["spectrogram_id"].map(stratified_spectrogram_folds(train_df, n_folds)).to_numpy(np.int64)
    raise ValueError(f"unknown fold scheme {scheme!r}; choose from {list(FOLD_SCHEMES)}")
