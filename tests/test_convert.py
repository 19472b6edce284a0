"""`python -m recipes.convert`: one checkpoint to a `.keras` file, and the original's run tree to
run folders that `recipes.predict` ensembles (and that out-of-fold scoring reports as having none)."""

import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from test_fidelity import CHECKPOINT, LOGIT_TOLERANCE, golden_batch

from hms_keras import constants
from hms_keras.data.synthetic import generate_dataset
from hms_keras.runs import finished_runs, has_oof, read_description
from recipes import convert, predict


def test_one_checkpoint_becomes_a_keras_file_with_the_original_logits(tmp_path):
    out = tmp_path / "models" / "model.keras"
    assert convert.main(["--checkpoint", str(CHECKPOINT), "--out", str(out)]) == 0
    batch, expected = golden_batch()
    logits = np.asarray(keras.models.load_model(out, compile=False).predict_on_batch(batch))
    assert np.abs(logits - expected).max() <= LOGIT_TOLERANCE


def test_bad_inputs_end_in_one_line_errors(tmp_path, capsys):
    assert convert.main(["--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "m.keras")]) == 2
    assert convert.main(["--checkpoint", str(CHECKPOINT), "--out", str(tmp_path / "model.h5")]) == 2
    assert convert.main(["--original-runs", str(tmp_path), "--out", str(tmp_path / "runs" / "x")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "missing.pth: checkpoint file not found" in lines[0]
    assert "model.h5: the output model must be a .keras file" in lines[1]
    assert f"{tmp_path}: no original run (fold_<k>/seed_<s>/model/last_model.pth)" in lines[2]


@pytest.fixture(scope="module")
def converted_runs(tmp_path_factory):
    """The golden checkpoint laid out as two runs of the original's tree, converted."""
    original = tmp_path_factory.mktemp("original") / "v5_eeg_24ep_cutmix"
    for fold, seed in ((0, 0), (1, 2)):
        target = original / f"fold_{fold}" / f"seed_{seed}" / "model" / "last_model.pth"
        target.parent.mkdir(parents=True)
        shutil.copy(CHECKPOINT, target)
    data_dir = generate_dataset(tmp_path_factory.mktemp("data") / "hms", n_eegs=12, seed=5, n_test_eegs=3)
    out = tmp_path_factory.mktemp("runs") / "v5_eeg_cutmix_original"
    assert convert.main(["--original-runs", str(original), "--out", str(out), "--data-dir", str(data_dir)]) == 0
    return out, data_dir


def test_the_original_tree_becomes_finished_run_folders(converted_runs):
    out, data_dir = converted_runs
    runs = finished_runs(out)
    assert [(read_description(run)["fold"], read_description(run)["seed"]) for run in runs] == [(0, 0), (1, 2)]
    description = read_description(runs[0])
    assert description["converted_from"].endswith("fold_0/seed_0/model/last_model.pth")
    assert description["recipe"].name == "v5_eeg_cutmix_original"
    assert description["recipe"].data.data_dir == str(data_dir)
    assert not any(has_oof(run) for run in runs)


def test_converted_runs_predict_a_submission(converted_runs, tmp_path):
    out, data_dir = converted_runs
    submission_path = tmp_path / "submission.csv"
    assert predict.main(["--runs", str(out), "--out", str(submission_path)]) == 0
    submission = pd.read_csv(submission_path)
    assert len(submission) == 3
    np.testing.assert_allclose(submission[list(constants.VOTE_COLUMNS)].sum(axis=1), 1.0, rtol=1e-6)


def test_scoring_converted_runs_says_they_have_no_out_of_fold_predictions(converted_runs, capsys):
    out, _ = converted_runs
    assert predict.main(["--runs", str(out), "--oof"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {out}: no finished run has out-of-fold predictions")
    assert "2 of its 2 finished runs have none" in error and "\n" not in error


def test_an_unreadable_test_eeg_is_named_or_filled_with_the_prior(converted_runs, tmp_path, capsys):
    out, data_dir = converted_runs
    copy = shutil.copytree(data_dir, tmp_path / "hms")
    bad = sorted((copy / "test_eegs").glob("*.parquet"))[1]
    bad.write_bytes(b"not parquet")
    submission_path = tmp_path / "submission.csv"
    assert predict.main(["--runs", str(out), "--data-dir", str(copy), "--out", str(submission_path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"1 unreadable test recording(s): {bad} (" in errors[0]  # after progress bars
    assert not submission_path.exists()

    arguments = ["--runs", str(out), "--data-dir", str(copy), "--out", str(submission_path), "--on-bad-eeg", "prior"]
    with pytest.warns(UserWarning, match=str(bad)):
        assert predict.main(arguments) == 0
    assert len(pd.read_csv(submission_path)) == 3
