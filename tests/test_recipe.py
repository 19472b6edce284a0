"""Recipes: lookup, overrides with type checking, JSON round trip, the min-vote schedule."""

import pytest

from hms_keras.recipe import Recipe, apply_overrides
from recipes.registry import RECIPES, get_recipe


def test_every_recipe_variant_round_trips_through_json():
    for variants in RECIPES.values():
        for recipe in variants.values():
            assert Recipe.from_json(recipe.to_json()) == recipe


def test_v5_recipe_has_the_reference_values():
    recipe = get_recipe("v5_eeg_cutmix")
    assert (recipe.train.epochs, recipe.train.batch_size) == (24, 32)
    assert (recipe.train.learning_rate, recipe.train.weight_decay, recipe.train.epsilon) == (1e-3, 1e-5, 1e-4)
    assert len(recipe.folds) * len(recipe.seeds) == 15
    schedule = recipe.min_weight_schedule()
    assert schedule[:16] == [0.0] * 16 and schedule[16:] == [0.3] * 8


def test_overrides_convert_types_and_nest():
    recipe = apply_overrides(
        get_recipe("v5_eeg_cutmix:quick"),
        ["train.epochs=3", "folds=0,2", "data.data_dir=/tmp/x", "train.mixed_precision=none", "train.learning_rate=5e-4"],
    )
    assert recipe.train.epochs == 3 and recipe.folds == (0, 2)
    assert recipe.data.data_dir == "/tmp/x" and recipe.train.mixed_precision is None
    assert recipe.train.learning_rate == 5e-4


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("train.epoch=3", "unknown recipe key 'train.epoch'"),
        ("train.epochs=three", "expects int"),
        ("train.epochs", "key=value"),
        ("folds=a,b", "expects"),
    ],
)
def test_bad_overrides_are_rejected_with_the_valid_keys(assignment, message):
    with pytest.raises(ValueError, match=message) as error:
        apply_overrides(get_recipe("v5_eeg_cutmix"), [assignment])
    if "unknown" in message:
        assert "train.epochs (int)" in str(error.value)


def test_unknown_recipe_and_variant():
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("nope")
    with pytest.raises(ValueError, match="no variant"):
        get_recipe("v5_eeg_cutmix:slow")


def test_from_dict_rejects_unknown_keys():
    values = get_recipe("v5_eeg_cutmix").to_dict()
    values["train"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        Recipe.from_dict(values)
