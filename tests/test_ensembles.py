"""Ensemble selection on synthetic out-of-fold frames with known answers (no models, no data
folder): the scores match the project's metric functions, one member's ensemble is that member,
each method finds what it should, the nested score exists, and the checks name what differs."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_folds import label_rows  # 40 patients, 1-4 EEGs each, a spectrogram per 2 EEGs

from hms_keras import constants, ensembles, runs
from hms_keras.data.folds import label_row_folds, patient_group_folds, stratified_spectrogram_folds
from hms_keras.data.labels import sample_eval_rows, vote_targets
from hms_keras.data.montage import bipolar_mask, bipolar_signal
from hms_keras.data.preprocess import shift_spectrogram_window
from hms_keras.data.transforms import CROP_SHIFT_RANGE, front_end, highpass_clip
from hms_keras.ensembles import Combination, EnsembleError, Member, OutOfFold
from hms_keras.metrics import LOGIT_COLUMNS, high_vote_cv, log_softmax, softmax
from hms_keras.recipe import Recipe, RecipeError, apply_overrides
from hms_keras.tasks import task_for
from hms_keras.tasks.base import kaggle_score, logits_frame
from recipes.registry import get_recipe

EEGS, ROWS_PER_EEG, FOLDS = 90, 4, 3


def synthetic_targets(seed: int = 0) -> pd.DataFrame:
    """`vote_targets` of a train.csv-like frame: 90 EEGs x 4 label rows, one vote distribution per
    EEG (its rows share it, as overlapping windows do), 14 votes a row (all high-vote)."""
    rng = np.random.default_rng(seed)
    distributions = rng.dirichlet(np.full(constants.NUM_CLASSES, 0.5), size=EEGS)  # (eegs, 6)
    votes = np.floor(distributions * 14) + np.eye(constants.NUM_CLASSES)[distributions.argmax(axis=1)]
    eeg = np.repeat(np.arange(EEGS), ROWS_PER_EEG)  # (rows,)
    train = pd.DataFrame({"eeg_id": 1000 + eeg, "label_id": 50_000 + np.arange(len(eeg))})
    train[list(constants.VOTE_COLUMNS)] = votes[eeg].astype(np.int64)
    return vote_targets(train)


def member_frame(targets: pd.DataFrame, log_probabilities: np.ndarray) -> pd.DataFrame:
    """A member's out-of-fold frame: index label_id, `fold` (EEG number % 3), log-probabilities."""
    frame = pd.DataFrame(log_probabilities, index=targets["label_id"].to_numpy(), columns=list(LOGIT_COLUMNS))
    return frame.assign(fold=(targets["eeg_id"].to_numpy() - 1000) % FOLDS)


@pytest.fixture(scope="module")
def known():
    """Members with a known best answer: "a" and "b" = the log vote distribution plus independent
    noise (a less noisy than b; their mean beats either), "noise" = random logits."""
    targets = synthetic_targets()
    rng = np.random.default_rng(1)
    truth = targets[[f"{name}_prob" for name in constants.CLASSES]].to_numpy()  # (rows, 6)
    members = {
        "a": log_softmax(np.log(truth + 0.02) + rng.normal(0, 0.8, truth.shape)),
        "noise": log_softmax(rng.normal(0, 1.5, truth.shape)),
        "b": log_softmax(np.log(truth + 0.02) + rng.normal(0, 1.0, truth.shape)),
    }
    frames = [member_frame(targets, values) for values in members.values()]
    return OutOfFold.from_frames(list(members), frames, targets), targets


def test_fast_scores_equal_the_metric_functions(known):
    oof, targets = known
    logits = Combination.from_weights([0.5, 0.2, 0.3]).logits(oof.log_probabilities)  # (rows, 6)
    fast = oof.scores_of_logits(logits)
    assert fast == pytest.approx(oof.exact_scores(logits), abs=1e-10)
    # the CV rows are the v5 protocol's: up to 3 per EEG per fold, seed 123
    fold_0 = targets[(targets["eeg_id"] - 1000) % FOLDS == 0]
    sampled = sample_eval_rows(fold_0)
    in_fold = oof.folds == 0
    frame = logits_frame(pd.DataFrame({"eeg_id": oof.eeg_ids, "row": oof.rows})[in_fold], logits[in_fold])
    assert oof.subset([0]).scores_of_logits(logits[in_fold])["cv"] == pytest.approx(
        high_vote_cv(targets, frame.set_index("row").loc[sampled["row"]].reset_index()[["eeg_id", "row",
                                                                                        *LOGIT_COLUMNS]]),
        abs=1e-10,
    )
    assert oof.cv(Combination.from_weights([0.5, 0.2, 0.3])) == pytest.approx(fast["cv"], abs=1e-12)
    assert len(oof.eeg_truth) == EEGS and len(oof.entries) == EEGS * 3


def test_a_single_members_ensemble_is_that_member(known):
    """v5-style logits enter as log_softmax(logits): the ensemble's CV is high_vote_cv of the
    raw logits and its probabilities are the member's softmax, for every method."""
    oof, targets = known
    logits = np.random.default_rng(2).normal(0, 2, (len(targets), constants.NUM_CLASSES))  # raw "v5" logits
    single = OutOfFold.from_frames(["v5"], [member_frame(targets, log_softmax(logits))], targets)
    raw = logits_frame(targets[["eeg_id"]].rename_axis("row").reset_index(), logits)
    expected_cv = high_vote_cv(targets, raw.iloc[single.entries])
    for method in ensembles.METHODS:
        combination = ensembles.choose(single, method).selection.combination
        if method != "stack":
            np.testing.assert_allclose(softmax(combination.logits(single.log_probabilities)), softmax(logits),
                                       atol=1e-12)
            assert ensembles.choose(single, method).scores["chosen"]["cv"] == pytest.approx(expected_cv, abs=1e-12)
    all_rows = kaggle_score(targets["label_id"], single.truth, softmax(logits), "label_id")
    assert single.scores(Combination.from_weights([1.0]))["kaggle_all_rows"] == pytest.approx(all_rows, abs=1e-12)


def test_grow_starts_from_the_best_member_adds_its_complement_and_never_the_noise(known):
    oof, _ = known
    choice = ensembles.choose(oof, "grow")
    steps = choice.selection.steps
    assert steps[0]["action"] == "start" and steps[0]["member"] == "a" and steps[1]["member"] == "b"
    assert "noise" not in [step["member"] for step in steps]
    assert all(later["cv"] < earlier["cv"] for earlier, later in zip(steps, steps[1:], strict=False))
    weights = choice.selection.combination.weights
    assert weights[1] == 0 and weights[0] >= weights[2] > 0
    assert choice.scores["chosen"]["cv"] < choice.scores["best_single"]["cv"] < choice.scores["mean"]["cv"]


def test_remove_drops_the_noise_first(known):
    oof, _ = known
    steps = ensembles.choose(oof, "remove").selection.steps
    assert steps[0]["members"] == 3 and steps[1]["action"] == "remove" and steps[1]["member"] == "noise"
    assert steps[-1]["cv"] < steps[0]["cv"]


def test_weights_give_the_noise_about_nothing_and_beat_the_mean(known):
    oof, _ = known
    choice = ensembles.choose(oof, "weights")
    weights = choice.selection.combination.weights
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    assert weights[1] < 0.02 and weights[0] > weights[2] > 0.25
    assert choice.scores["chosen"]["cv"] <= min(step["cv"] for step in choice.selection.steps) + 1e-12
    assert choice.scores["chosen"]["cv"] < choice.scores["mean"]["cv"]
    # the optimum: no simplex point on a coarse grid does better
    grid = [np.array([a, b, 1 - a - b]) for a in np.linspace(0, 1, 21) for b in np.linspace(0, 1, 21) if a + b <= 1]
    assert choice.scores["chosen"]["cv"] <= min(oof.cv(Combination.from_weights(w)) for w in grid) + 1e-9


def test_stack_is_cross_validated_and_beats_the_mean_out_of_sample(known):
    oof, _ = known
    choice = ensembles.choose(oof, "stack")
    nested = choice.scores["nested"]
    assert nested["cv"] < choice.scores["mean"]["cv"]
    assert choice.scores["chosen"]["cv"] <= nested["cv"] + 1e-9  # in-sample flatters
    assert (choice.selection.combination.W >= 0).all() and choice.selection.combination.W.shape == (3, 6)


def test_the_nested_score_refits_on_the_other_folds(known):
    oof, _ = known
    nested = ensembles.nested_scores(oof, "weights")
    logits = np.empty(oof.truth.shape)
    for fold in oof.fold_ids:
        chosen = ensembles.weights_method(oof.subset([f for f in oof.fold_ids if f != fold])).combination
        logits[oof.folds == fold] = chosen.logits(oof.log_probabilities[:, oof.folds == fold])
    assert nested == pytest.approx(oof.scores_of_logits(logits))
    assert ensembles.nested_scores(oof.subset([0]), "weights") is None  # one fold: nothing to nest
    assert oof.subset(oof.fold_ids).scores(Combination.from_weights([1, 0, 0])) == pytest.approx(
        oof.scores(Combination.from_weights([1, 0, 0])))


# --- checks ------------------------------------------------------------------------------------


def fake_member(name: str, recipe: Recipe, folds=(0, 1, 2)) -> Member:
    return Member(name=name, recipe_dir=Path("runs") / name, runs=(), recipe=recipe, folds=folds, seeds=(0,))


def test_members_with_other_rows_or_folds_are_refused_with_the_difference(known):
    _, targets = known
    v5 = get_recipe("v5_eeg_cutmix")
    spec = get_recipe("spec_resnet34d")
    frame = member_frame(targets, np.zeros((len(targets), 6)))
    a, b = fake_member("v5", v5), fake_member("spec", spec)
    ensembles._check_rows([a, b], [frame, frame])  # the same rows and folds: fine
    with pytest.raises(EnsembleError, match=r"spec \(runs/spec\) predicts 90 label rows out of fold, v5 \(runs/v5\) "
                                            r"360: 270 of v5's rows are missing.*data.fold_scheme=patient_group"):
        ensembles._check_rows([a, b], [frame, frame.iloc[::4]])
    shifted = frame.assign(fold=(frame["fold"] + 1) % FOLDS)
    with pytest.raises(EnsembleError, match=r"put 360 of 360 label rows into different folds \(e.g. label_id 50000: "
                                            r"fold 1 vs 0\); their fold schemes are 'stratified_spectrogram' and "
                                            r"'patient_group' \(data.fold_scheme\); retrain one with the other's"):
        ensembles._check_rows([a, b], [frame, shifted])
    with pytest.raises(EnsembleError, match="has out-of-fold runs of folds \\[0, 1\\], v5 of \\[0, 1, 2\\]"):
        ensembles._check_rows([a, fake_member("spec", spec, folds=(0, 1))], [frame, frame])


def test_members_of_other_data_or_without_a_space_are_refused():
    v5 = get_recipe("v5_eeg_cutmix")
    other = dataclasses.replace(v5, data=dataclasses.replace(v5.data, synthetic_eegs=77))
    with pytest.raises(EnsembleError, match=r"runs/b was trained on other data than runs/a \(data.synthetic_eegs 77 "
                                            r"vs 600\)"):
        ensembles.check_members([fake_member("a", v5), fake_member("b", other)])
    folds = dataclasses.replace(v5, data=dataclasses.replace(v5.data, n_folds=3))
    with pytest.raises(EnsembleError, match=r"splits the data into 3 folds, runs/a into 5"):
        ensembles.check_members([fake_member("a", v5), fake_member("b", folds)])
    spec = get_recipe("spec_resnet34d")
    with pytest.raises(EnsembleError, match=r"different tasks \['spectrogram', 'v5_eeg'\] need a declared blend space"):
        ensembles.check_members([fake_member("a", v5), fake_member("b", spec)], space=None)
    ensembles.check_members([fake_member("a", v5), fake_member("b", v5)], space=None)  # one task: its own space


def fake_run(recipe_dir, fold: int, seed: int, recipe: Recipe):
    """A finished-looking run folder (recipe.json + an empty model.keras): enough for the checks."""
    run = runs.run_dir(recipe_dir, fold, seed)
    run.mkdir(parents=True)
    (run / runs.MODEL_FILE).write_bytes(b"")
    runs.write_description(run, runs.describe(recipe, fold, seed))
    return run


def ensemble_file(tmp_path, members: list[dict], **extra) -> Path:
    path = tmp_path / "ensembles" / "e.json"
    description = {"format": ensembles.FORMAT, "method": "weights", "space": "log_probabilities",
                   "members": members, **extra}
    return ensembles.write_ensemble(path, description)


def test_an_ensemble_file_naming_a_missing_run_mixed_tasks_or_other_data_is_refused(tmp_path):
    v5, spec = get_recipe("v5_eeg_cutmix"), get_recipe("spec_resnet34d")
    fake_run(tmp_path / "runs" / "v5", 0, 0, v5)
    fake_run(tmp_path / "runs" / "spec", 0, 0, spec)
    member_v5 = {"name": "v5/seed_0", "task": "v5_eeg", "runs": ["../runs/v5/fold_0/seed_0"], "weight": 0.5}
    member_spec = {"name": "spec/seed_0", "task": "spectrogram", "runs": ["../runs/spec/fold_0/seed_0"], "weight": 0.5}
    described = ensembles.read_ensemble(ensemble_file(tmp_path, [member_v5, member_spec]))
    assert described["members"][1]["runs"] == [tmp_path / "ensembles" / "../runs/spec/fold_0/seed_0"]

    missing = {**member_v5, "runs": ["../runs/v5/fold_1/seed_0"]}
    with pytest.raises(EnsembleError, match=r"e.json: member v5/seed_0 names the run .*fold_1/seed_0: folder not "
                                            r"found"):
        ensembles.read_ensemble(ensemble_file(tmp_path, [missing]))
    with pytest.raises(EnsembleError, match=r"e.json: members of different tasks \['spectrogram', 'v5_eeg'\] and no "
                                            r"declared blend space"):
        ensembles.read_ensemble(ensemble_file(tmp_path, [member_v5, member_spec], space=None))
    with pytest.raises(EnsembleError, match=r"e.json: unknown blend space 'probabilities'"):
        ensembles.read_ensemble(ensemble_file(tmp_path, [member_v5], space="probabilities"))
    wrong_task = {**member_spec, "task": "v5_eeg"}
    with pytest.raises(EnsembleError, match=r"member spec/seed_0: .* is a 'spectrogram' run, the file says 'v5_eeg'"):
        ensembles.read_ensemble(ensemble_file(tmp_path, [wrong_task]))
    fake_run(tmp_path / "runs" / "v5_other", 0, 0, dataclasses.replace(v5, data=dataclasses.replace(
        v5.data, data_dir=str(tmp_path / "elsewhere"))))
    other = {**member_v5, "name": "other", "runs": ["../runs/v5_other/fold_0/seed_0"]}
    with pytest.raises(EnsembleError, match=r"member other was trained on other data"):
        ensembles.read_ensemble(ensemble_file(tmp_path, [member_v5, other]))
    (tmp_path / "ensembles" / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(EnsembleError, match=r"bad.json: not an ensemble file"):
        ensembles.read_ensemble(tmp_path / "ensembles" / "bad.json")
    with pytest.raises(EnsembleError, match=r"nothing.json: ensemble file not found"):
        ensembles.read_ensemble(tmp_path / "nothing.json")


# --- what members need: a shared fold scheme, test-time views --------------------------------


def test_label_row_folds_name_the_two_schemes_and_keep_eegs_and_spectrograms_whole():
    train_df = label_rows()
    by_eeg = label_row_folds(train_df, "patient_group")
    np.testing.assert_array_equal(by_eeg, train_df["eeg_id"].map(patient_group_folds(train_df)).to_numpy())
    by_spectrogram = label_row_folds(train_df, "stratified_spectrogram")
    np.testing.assert_array_equal(
        by_spectrogram, train_df["spectrogram_id"].map(stratified_spectrogram_folds(train_df)).to_numpy())
    for folds in (by_eeg, by_spectrogram):
        for key in ("eeg_id", "spectrogram_id", "patient_id"):
            assert (pd.Series(folds).groupby(train_df[key].to_numpy()).nunique() == 1).all()
    with pytest.raises(ValueError, match="unknown fold scheme 'random'; choose from"):
        label_row_folds(train_df, "random")


def test_the_fold_scheme_is_a_checked_recipe_key():
    recipe = apply_overrides(get_recipe("spec_resnet34d"), ["data.fold_scheme=patient_group"])
    assert recipe.validate().data.fold_scheme == "patient_group"
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert get_recipe("v5_eeg_cutmix").data.fold_scheme is None  # the task's own: patient_group
    with pytest.raises(RecipeError, match="data.fold_scheme must be one of .*'patient_group'.* got 'by_eeg'"):
        apply_overrides(recipe, ["data.fold_scheme=by_eeg"]).validate()


def test_a_crop_shift_moves_the_v5_crop_inside_the_padded_window():
    rng = np.random.default_rng(0)
    signal = rng.normal(0, 0.05, (constants.PADDED_FRAMES, 19)).astype(np.float32)  # (2048, 19) mV
    cqf = rng.uniform(0, 1, (constants.PADDED_FRAMES, 19)).astype(np.float32)
    whole = highpass_clip(bipolar_signal(signal))  # (2048, 18)
    for shift in (-744, -128, 0, 128, 792):
        inputs = front_end(signal, cqf, crop_shift=shift)
        start = constants.CROP_START + shift
        np.testing.assert_allclose(inputs["eeg"], whole[start : start + constants.CROP_FRAMES], atol=1e-6)
        np.testing.assert_array_equal(inputs["mask"], bipolar_mask(cqf[start : start + constants.CROP_FRAMES]))
    assert CROP_SHIFT_RANGE == (-744, 792)
    with pytest.raises(ValueError, match="crop shift 793 frames moves the 512-frame crop out"):
        front_end(signal, cqf, crop_shift=793)


def test_a_time_shift_moves_the_spectrogram_window_and_reflects_its_edge():
    window = np.arange(400 * 300, dtype=np.float32).reshape(400, 300)
    assert shift_spectrogram_window(window, 0) is window
    later = shift_spectrogram_window(window, 5)  # the view 10 s later
    np.testing.assert_array_equal(later[:, :295], window[:, 5:])
    np.testing.assert_array_equal(later[:, 295:], window[:, [298, 297, 296, 295, 294]])  # mirrored edge
    earlier = shift_spectrogram_window(window, -5)
    np.testing.assert_array_equal(earlier[:, 5:], window[:, :295])
    np.testing.assert_array_equal(earlier[:, :5], window[:, [5, 4, 3, 2, 1]])
    with pytest.raises(ValueError, match=r"\|shift\| must be <= 150"):
        shift_spectrogram_window(window, 151)


def test_tasks_check_their_views_and_combine_models_their_way():
    v5, spec = task_for(get_recipe("v5_eeg_cutmix")), task_for(get_recipe("spec_resnet34d"))
    assert v5.check_tta([-128, 0, 128]) == (-128, 0, 128) and spec.check_tta((0, 8)) == (0, 8)
    with pytest.raises(ValueError, match="crop shift -800 frames"):
        v5.check_tta([-800])
    with pytest.raises(ValueError, match=r"spectrogram time shifts \[200\] rows"):
        spec.check_tta([0, 200])
    with pytest.raises(ValueError, match="must be distinct"):
        v5.check_tta([0, 0])
    logits = np.random.default_rng(0).normal(0, 2, (3, 5, constants.NUM_CLASSES))  # (models, rows, 6)
    np.testing.assert_allclose(np.exp(v5.log_probabilities(logits)), softmax(logits.mean(axis=0)), atol=1e-12)
    np.testing.assert_allclose(np.exp(spec.log_probabilities(logits)), softmax(logits).mean(axis=0), atol=1e-12)
