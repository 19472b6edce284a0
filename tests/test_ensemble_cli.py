"""End to end: both recipes (v5 raw EEG and the spectrogram baseline, the latter on the v5 split)
train tiny stand-in models on one small dataset through the real tasks and pipelines;
`recipes.ensemble` chooses a blend of them with test-time views, writes its file and plot, and
`recipes.predict --ensemble` / `Ensemble.load` use it; bad inputs end in one-line errors."""

import dataclasses
import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from hms_keras import constants, models, runs
from hms_keras.data.hms import read_test_csv
from hms_keras.data.synthetic import generate_dataset
from hms_keras.ensembles import Blend, EnsembleError
from hms_keras.inference import Ensemble
from hms_keras.metrics import high_vote_cv
from hms_keras.tasks import task_for
from hms_keras.training import train_recipe
from recipes import ensemble as ensemble_script
from recipes import predict as predict_script
from recipes.registry import get_recipe


def tiny_v5_model(name="tiny_v5_model"):
    """The v5 model's inputs and outputs ({"eeg", "mask"}: (batch, 512, 18) -> (batch, 2, 6) logits),
    a few hundred parameters."""
    eeg = keras.Input((constants.CROP_FRAMES, constants.NUM_BIPOLAR), name="eeg")
    mask = keras.Input((constants.CROP_FRAMES, constants.NUM_BIPOLAR), name="mask")
    x = keras.layers.AveragePooling1D(128)(keras.layers.Concatenate()([eeg * 10.0, mask]))  # (batch, 4, 36)
    logits = keras.layers.Dense(2 * constants.NUM_CLASSES)(keras.layers.Flatten()(x))
    return keras.Model({"eeg": eeg, "mask": mask}, keras.layers.Reshape((2, constants.NUM_CLASSES))(logits), name=name)


def tiny_spectrogram_model(name="tiny_spectrogram_model"):
    """The spectrogram model's input and output ((batch, 400, 300, 1) -> (batch, 6) logits)."""
    spectrogram = keras.Input((400, 300, 1), name="spectrogram")
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D((100, 100))(spectrogram))  # (batch, 12)
    return keras.Model(spectrogram, keras.layers.Dense(constants.NUM_CLASSES)(x), name=name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """runs/tiny_v5 (2 folds x seeds 0, 1) and runs/tiny_spec (2 folds x seed 0, fold_scheme
    patient_group), one epoch each, on a 30-EEG dataset."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(models.MODELS, "tiny_v5_model", tiny_v5_model)
        patch.setitem(models.MODELS, "tiny_spectrogram_model", tiny_spectrogram_model)
        root = tmp_path_factory.mktemp("ensemble_e2e")
        data_dir = generate_dataset(root / "hms", n_eegs=30, seed=4, n_test_eegs=3)
        v5 = get_recipe("v5_eeg_cutmix:quick")
        v5 = dataclasses.replace(
            v5, name="tiny_v5", model="tiny_v5_model", folds=(0, 1), seeds=(0, 1),
            data=dataclasses.replace(v5.data, data_dir=str(data_dir), n_folds=2),
            train=dataclasses.replace(v5.train, epochs=1, batch_size=4, learning_rate=0.01),
        )
        spec = get_recipe("spec_resnet34d:quick")
        spec = dataclasses.replace(
            spec, name="tiny_spec", model="tiny_spectrogram_model", folds=(0, 1), seeds=(0,),
            data=dataclasses.replace(spec.data, data_dir=str(data_dir), n_folds=2, fold_scheme="patient_group"),
            train=dataclasses.replace(spec.train, epochs=1, batch_size=4, learning_rate=0.01),
        )
        workdir = root / "runs"
        spec_scores = train_recipe(spec, workdir)
        train_recipe(v5, workdir)
        yield {"data_dir": data_dir, "root": root, "v5": workdir / "tiny_v5", "spec": workdir / "tiny_spec",
               "spec_scores": spec_scores, "spec_recipe": spec}


def test_the_spectrogram_recipe_on_the_v5_split_predicts_and_scores_the_v5_rows(trained):
    for fold in (0, 1):
        v5 = pd.read_parquet(runs.run_dir(trained["v5"], fold, 0) / runs.OOF_FILE)
        spec = pd.read_parquet(runs.run_dir(trained["spec"], fold, 0) / runs.OOF_FILE)
        assert sorted(spec["label_id"]) == sorted(v5["label_id"])  # every label row of the fold's EEGs
    scores = trained["spec_scores"]
    assert {"kl", "prior_kl", "cv", "prior_cv", "kaggle_all_rows", "prior_kaggle_all_rows"} <= set(scores.columns)
    assert np.isfinite(scores.drop(columns=["fold", "seeds"]).to_numpy()).all()


def test_ensemble_command_writes_a_self_describing_file_and_plot_used_by_predict(trained, tmp_path, capsys):
    out = tmp_path / "ensembles" / "blend.json"
    status = ensemble_script.main([
        "--runs", str(trained["v5"]), str(trained["spec"]), "--method", "weights", "--out", str(out),
        "--tta", "v5_eeg=-64,0,64", "--tta", "spectrogram=-5,0,5",
    ])
    assert status == 0
    report = capsys.readouterr().out
    assert "tiny_v5/seed_1" in report and "nested" in report and "without test-time views" in report
    description = json.loads(out.read_text())
    assert [member["name"] for member in description["members"]] == ["tiny_v5/seed_0", "tiny_v5/seed_1",
                                                                      "tiny_spec/seed_0"]
    assert description["space"] == "log_probabilities" and description["method"] == "weights"
    assert description["tta"] == {"v5_eeg": [-64, 0, 64], "spectrogram": [-5, 0, 5]}
    assert description["members"][0]["runs"] == ["../../runs/tiny_v5/fold_0/seed_0",
                                                 "../../runs/tiny_v5/fold_1/seed_0"] or \
        all(run.endswith(f"fold_{k}/seed_0") for k, run in enumerate(description["members"][0]["runs"]))
    assert description["rows"]["folds"] == [0, 1] and description["rows"]["fold_scheme"] == "patient_group"
    weights = [member["weight"] for member in description["members"]]
    assert sum(weights) == pytest.approx(1.0, abs=1e-6)
    scores = description["scores"]
    assert scores["chosen"]["cv"] <= scores["mean"]["cv"] + 1e-9
    assert {"nested", "best_single", "chosen_without_tta", "mean_without_tta"} <= set(scores)
    assert len(description["steps"]) >= 1 and out.with_suffix(".png").stat().st_size > 10_000
    assert (runs.run_dir(trained["spec"], 1, 0) / "oof_shift-5.parquet").is_file()  # views kept for next time

    submission_path = tmp_path / "submission.csv"
    assert predict_script.main(["--ensemble", str(out), "--out", str(submission_path)]) == 0
    submission = pd.read_csv(submission_path)
    assert list(submission["eeg_id"]) == list(read_test_csv(trained["data_dir"] / "test.csv")["eeg_id"])
    np.testing.assert_allclose(submission[list(constants.VOTE_COLUMNS)].sum(axis=1), 1.0, rtol=1e-6)
    # the same through the API, and by hand: each member's own prediction, combined in the log space
    blend = Ensemble.load(out)
    assert isinstance(blend, Blend) and len(blend.models) == 6 - 2 * sum(weight == 0 for weight in weights[:2]) - \
        2 * (weights[2] == 0)
    by_hand = np.zeros((len(submission), constants.NUM_CLASSES))
    for member in description["members"]:
        member_runs = [out.parent / run for run in member["runs"]]
        ensemble = Ensemble(member_runs)
        prediction = ensemble.task.predict_test(ensemble.models, tta=tuple(member["tta"]))
        by_hand += member["weight"] * np.log(prediction[list(constants.VOTE_COLUMNS)].to_numpy())
    by_hand = np.exp(by_hand) / np.exp(by_hand).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(submission[list(constants.VOTE_COLUMNS)].to_numpy(), by_hand, atol=1e-6)

    with pytest.raises(EnsembleError, match="members of tasks .* need different recordings"):
        blend.predict_file(trained["data_dir"] / "test_eegs" / f"{submission['eeg_id'].iloc[0]}.parquet")
    assert predict_script.main(["--ensemble", str(out), "--oof"]) == 0
    rescored = capsys.readouterr().out
    assert f"cv {scores['chosen']['cv']:.4f} (recorded {scores['chosen']['cv']:.4f})" in rescored


def test_one_members_ensemble_is_that_recipe_out_of_fold_and_at_test_time(trained, tmp_path):
    out = tmp_path / "v5.json"
    assert ensemble_script.main(["--runs", str(trained["v5"]), "--unit", "recipe", "--method", "mean",
                                 "--out", str(out)]) == 0
    description = json.loads(out.read_text())
    task = task_for(runs.read_description(runs.run_dir(trained["v5"], 0, 0))["recipe"])
    by_fold = runs.oof_runs_by_fold(trained["v5"])
    stacked = pd.concat([runs.read_oof(paths).merge(task._sampled_rows(fold)[["eeg_id", "row"]])
                         for fold, paths in by_fold.items()])  # both seeds' logits, the CV's rows
    assert description["scores"]["chosen"]["cv"] == pytest.approx(high_vote_cv(task.targets, stacked), abs=1e-9)
    blend = Ensemble.load(out)
    ours, theirs = blend.predict_test(), Ensemble.load(trained["v5"]).predict_test()
    pd.testing.assert_frame_equal(ours, theirs, atol=1e-9, rtol=0)
    eeg_id = int(ours["eeg_id"].iloc[0])
    np.testing.assert_allclose(blend.predict_file(trained["data_dir"] / "test_eegs" / f"{eeg_id}.parquet"),
                               ours[list(constants.VOTE_COLUMNS)].to_numpy()[0], atol=1e-5)


def copy_runs(source, target, fold_map):
    """A copy of a recipe folder whose folds are renumbered by fold_map (recipe.json and folder names)."""
    for run in runs.finished_runs(source):
        description = runs.read_description(run)
        fold = fold_map.get(description["fold"], description["fold"])
        copy = runs.run_dir(target, fold, description["seed"])
        shutil.copytree(run, copy)
        runs.write_description(copy, {**description, "fold": fold})


@pytest.mark.filterwarnings("ignore:The least populated class in y")  # the baseline's split of 30 EEGs
def test_runs_that_cannot_be_ensembled_end_in_one_line_errors(trained, tmp_path, capsys):
    swapped, out = tmp_path / "swapped", tmp_path / "e.json"
    copy_runs(trained["spec"], swapped, fold_map={0: 1, 1: 0})
    assert ensemble_script.main(["--runs", str(trained["v5"]), str(swapped), "--out", str(out)]) == 2
    assert "label rows into different folds (e.g. label_id" in capsys.readouterr().err  # renumbered run folders

    own_folds = dataclasses.replace(trained["spec_recipe"], name="tiny_spec_own_folds",
                                    data=dataclasses.replace(trained["spec_recipe"].data, fold_scheme=None))
    train_recipe(own_folds, tmp_path / "runs")  # the baseline's split: the first row of each spectrogram
    assert ensemble_script.main(["--runs", str(trained["v5"]), str(tmp_path / "runs" / "tiny_spec_own_folds"),
                                 "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "error: tiny_spec_own_folds/seed_0 (" in error and "members must predict the same rows" in error
    assert "--set data.fold_scheme=patient_group" in error

    assert ensemble_script.main(["--runs", str(trained["v5"]), "--tta", "v5_eeg=900", "--out", str(out)]) == 2
    assert "moves the 512-frame crop out of the 2048-frame window" in capsys.readouterr().err

    assert ensemble_script.main(["--runs", str(trained["v5"]), "--unit", "recipe", "--out", str(out)]) == 0
    description = json.loads(out.read_text())
    description["members"][0]["runs"][0] = "../nowhere/fold_0/seed_0"
    out.write_text(json.dumps(description))
    capsys.readouterr()
    assert predict_script.main(["--ensemble", str(out), "--out", str(tmp_path / "s.csv")]) == 2
    assert "e.json: member tiny_v5 names the run" in capsys.readouterr().err
