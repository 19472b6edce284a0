"""Recipes: lookup, overrides with type checking, validation, JSON round trip, the min-vote schedule."""

import dataclasses
import re

import pytest

from hms_keras.models import MODELS
from hms_keras.recipe import Recipe, RecipeError, apply_overrides
from hms_keras.tasks import TASKS
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
        [
            "train.epochs=3",
            "folds=0,2",
            "data.data_dir=/tmp/x",
            "train.mixed_precision=none",
            "train.learning_rate=5e-4",
        ],
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


def test_every_recipe_variant_is_valid():
    for variants in RECIPES.values():
        for recipe in variants.values():
            assert recipe.validate(tasks=TASKS, models=MODELS) is recipe


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"folds": ()}, "folds is empty (give at least one fold)"),
        ({"seeds": (0, 1, 0)}, "seeds lists seed 0 more than once"),
        ({"train.epochs": True}, "train.epochs must be int, got True"),
        ({"train.mixed_precision": "float16"}, "train.mixed_precision must be one of"),
        ({"train.checkpoint": "first", "data.n_folds": 1}, "data.n_folds must be at least 2, got 1; train.checkpoint"),
        ({"name": "../elsewhere"}, "name must be usable as a folder name"),
    ],
)
def test_validate_names_every_offending_key(changes, message):
    recipe = get_recipe("v5_eeg_cutmix:quick")
    for key, value in changes.items():
        section, _, field = key.rpartition(".")
        if section:
            value = dataclasses.replace(getattr(recipe, section), **{field: value})
            field = section
        recipe = dataclasses.replace(recipe, **{field: value})
    with pytest.raises(RecipeError, match=re.escape(message)):
        recipe.validate()
