"""The commands' user errors (`recipes.cli`): exit status 2, one `error: ` line on stderr naming the
file or key, a traceback only with --debug, nothing left behind, and the cheap checks made before
any data is generated or any model loaded. No training: the run folders hold tiny saved models."""

import json
import shutil
import time
from pathlib import Path

import keras
import pytest

from hms_keras import runs
from recipes import convert, predict, train
from recipes.registry import get_recipe


def error_line(capsys) -> str:
    """The stderr of a failed command, asserted to be one `error: ` line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A cache folder of its own, to show that nothing (e.g. the embedded dataset) was generated."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HMS_KERAS_CACHE", str(cache))
    yield cache
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--folds", "7"], ["recipe 'v5_eeg_cutmix': folds 7 out of range for data.n_folds=5 (folds are 0..4)"]),
        (["--folds", "0,0"], ["folds lists fold 0 more than once"]),
        (["--seeds", "-1"], ["seeds -1 out of range"]),
        (["--set", "train.batch_size=0"], ["train.batch_size must be at least 1, got 0"]),
        (["--set", "train.learning_rate=0", "--set", "train.epochs=0"], ["train.epochs must", "train.learning_rate"]),
        (["--set", "train.schedule=linear"], ["train.schedule must be one of ['cosine', 'one_cycle'], got 'linear'"]),
        (["--set", "task=eeg"], ["task must be one of ['spectrogram', 'v5_eeg'], got 'eeg'"]),
        (["--set", "model=resnet"], ["model must be one of", "got 'resnet'"]),
        (["--set", "train.epoch=3"], ["unknown recipe key 'train.epoch'; valid keys: "]),
        (["--set", "train.epochs=three"], ["recipe key 'train.epochs' expects int, got 'three'"]),
        (["--recipe", "nope"], ["unknown recipe 'nope'"]),
        (["--recipe", "v5_eeg_cutmix:slow"], ["recipe 'v5_eeg_cutmix' has no variant 'slow'"]),
        (["--data-dir", "{tmp}/missing"], ["{tmp}/missing: HMS data folder not found; check --data-dir"]),
        (["--data-dir", "{tmp}"], ["{tmp}/train.csv: file not found"]),
    ],
)
def test_train_reports_a_user_error_in_one_line_before_any_work(args, expected, tmp_path, empty_cache, capsys):
    workdir = tmp_path / "runs"
    argv = ["--recipe", "v5_eeg_cutmix", "--workdir", str(workdir)] + [arg.format(tmp=tmp_path) for arg in args]
    started = time.perf_counter()
    assert train.main(argv) == 2
    assert time.perf_counter() - started < 1.0  # before the embedded dataset is generated (~90 s before)
    line = error_line(capsys)
    for text in expected:
        assert text.format(tmp=tmp_path) in line
    assert not workdir.exists()


def test_train_rejects_a_workdir_that_is_a_file(tmp_path, empty_cache, capsys):
    workdir = tmp_path / "runs"
    workdir.write_text("")
    assert train.main(["--recipe", "v5_eeg_cutmix:quick", "--workdir", str(workdir)]) == 2
    assert error_line(capsys) == f"error: {workdir}: not a folder; --workdir names the folder run folders go into"


def test_debug_shows_the_traceback_instead(tmp_path, capsys):
    assert train.main(["--recipe", "nope", "--workdir", str(tmp_path / "runs"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "RecipeError: unknown recipe 'nope'" in err


# --- predict: run folders ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A tiny saved model, and one with a Lambda layer (stored Python code, which safe mode refuses)."""
    folder = tmp_path_factory.mktemp("models")
    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(folder / "tiny.keras")
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(folder / "lambda.keras")
    return folder


def v5_description(**recipe_changes) -> dict:
    """A run's recipe.json contents: the v5 recipe (task v5_eeg), fold 0, seed 0."""
    recipe = get_recipe("v5_eeg_cutmix").to_dict()
    for key, value in recipe_changes.items():
        section, _, field = key.rpartition("__")
        (recipe[section] if section else recipe)[field] = value
    return {"recipe": recipe, "fold": 0, "seed": 0}


def make_run(recipe_dir, model_file, description) -> Path:
    """A finished run folder `<recipe_dir>/fold_0/seed_0` with a copy of `model_file` and
    `description` (a dict, or the text of recipe.json)."""
    run_dir = runs.run_dir(recipe_dir, 0, 0)
    run_dir.mkdir(parents=True)
    shutil.copy(model_file, run_dir / runs.MODEL_FILE)
    text = description if isinstance(description, str) else json.dumps(description)
    (run_dir / runs.DESCRIPTION_FILE).write_text(text)
    return run_dir


def predict_fails(argv, capsys) -> str:
    assert predict.main(argv) == 2
    return error_line(capsys)


def test_predict_reports_a_missing_runs_folder(tmp_path, capsys):
    line = predict_fails(["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "submission.csv")], capsys)
    assert line.startswith(f"error: {tmp_path / 'missing'}: folder not found")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "description, problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a run description"),
        ('{"recipe": "v5_eeg_cutmix", "fold": 0, "seed": 0}', "not a run description"),
        ({"recipe": {"name": "x"}, "fold": 0, "seed": 0}, "not a run description"),
        (v5_description(train__epochs="three"), "recipe 'v5_eeg_cutmix': train.epochs must be int, got 'three'"),
        (v5_description(task="nope"), "task must be one of ['spectrogram', 'v5_eeg'], got 'nope'"),
        (v5_description(folds=[0, 9]), "folds 9 out of range for data.n_folds=5"),
    ],
)
def test_predict_names_a_bad_recipe_json(description, problem, saved_models, tmp_path, capsys):
    run_dir = make_run(tmp_path / "runs", saved_models / "tiny.keras", description)
    line = predict_fails(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "submission.csv")], capsys)
    assert line.startswith(f"error: {run_dir / runs.DESCRIPTION_FILE}: ") and problem in line
    assert not (tmp_path / "submission.csv").exists()


def test_predict_names_a_truncated_model(saved_models, tmp_path, capsys):
    run_dir = make_run(tmp_path / "runs", saved_models / "tiny.keras", v5_description())
    model = run_dir / runs.MODEL_FILE
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    line = predict_fails(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "submission.csv")], capsys)
    assert line == f"error: {model}: not a complete .keras file (truncated or corrupt); train or convert the run again"
    assert not (tmp_path / "submission.csv").exists()


def test_predict_keeps_safe_mode_and_names_a_model_it_refuses(saved_models, tmp_path, capsys):
    run_dir = make_run(tmp_path / "runs", saved_models / "lambda.keras", v5_description())
    line = predict_fails(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "submission.csv")], capsys)
    assert line.startswith(f"error: {run_dir / runs.MODEL_FILE}: refused by Keras's safe mode")
    assert "Lambda" in line


def test_predict_checks_the_data_folder_before_loading_models(saved_models, tmp_path, capsys):
    run_dir = make_run(tmp_path / "runs", saved_models / "tiny.keras", v5_description())
    (run_dir / runs.MODEL_FILE).write_bytes(b"not a model")  # never reached
    argv = ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "submission.csv")]
    line = predict_fails([*argv, "--data-dir", str(tmp_path / "missing")], capsys)
    assert line.startswith(f"error: {tmp_path / 'missing'}: HMS data folder not found; check --data-dir")
    line = predict_fails([*argv, "--data-dir", str(tmp_path), "--oof"], capsys)
    assert line.startswith(f"error: {tmp_path / 'train.csv'}: file not found")


def test_predict_checks_the_data_folder_a_run_recorded(saved_models, tmp_path, capsys):
    run_dir = make_run(tmp_path / "runs", saved_models / "tiny.keras", v5_description(data__data_dir="/gone/hms"))
    line = predict_fails(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "submission.csv")], capsys)
    assert line.startswith("error: /gone/hms: HMS data folder not found")
    assert f"data.data_dir in {run_dir / runs.DESCRIPTION_FILE} (or pass --data-dir)" in line


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--out", "{tmp}")])
def test_predict_rejects_unusable_options(option, value, saved_models, tmp_path, capsys):
    make_run(tmp_path / "runs", saved_models / "tiny.keras", v5_description())
    argv = ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "submission.csv")]
    line = predict_fails([*argv, option, value.format(tmp=tmp_path)], capsys)
    assert line.startswith(f"error: {value.format(tmp=tmp_path) if option == '--out' else option}")


def test_a_failed_prediction_leaves_no_submission_behind(saved_models, tmp_path, capsys):
    make_run(tmp_path / "runs", saved_models / "tiny.keras", v5_description())
    data_dir = tmp_path / "hms"
    data_dir.mkdir()
    (data_dir / "test.csv").write_text("eeg_id,patient\n1,2\n")  # a column missing
    out = tmp_path / "out" / "submission.csv"
    out.parent.mkdir()
    out.write_text("an earlier submission\n")
    line = predict_fails(["--runs", str(tmp_path / "runs"), "--data-dir", str(data_dir), "--out", str(out)], capsys)
    assert line.startswith(f"error: {data_dir / 'test.csv'}: ")
    assert out.read_text() == "an earlier submission\n"
    assert list(out.parent.iterdir()) == [out]


# --- convert ---------------------------------------------------------------------------------------


def test_convert_leaves_no_model_or_folder_behind(tmp_path, capsys):
    checkpoint = tmp_path / "last_model.pth"
    checkpoint.write_bytes(b"not a checkpoint")
    out = tmp_path / "models" / "model.keras"
    assert convert.main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert error_line(capsys).startswith(f"error: {checkpoint}: not a readable PyTorch checkpoint")
    assert not out.parent.exists()
    argv = ["--original-runs", str(tmp_path), "--out", str(tmp_path / "converted"), "--data-dir", str(tmp_path / "no")]
    assert convert.main(argv) == 2
    assert error_line(capsys).startswith(f"error: {tmp_path / 'no'}: HMS data folder not found")
    assert not (tmp_path / "converted").exists()
