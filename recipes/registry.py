"""The recipe table: `RECIPES` maps a recipe name to its variants; see `recipes.train`."""

from hms_keras.recipe import Recipe, RecipeError
from recipes import spec_resnet34d, v5_eeg_cutmix

RECIPES = {
    "v5_eeg_cutmix": v5_eeg_cutmix.VARIANTS,
    "spec_resnet34d": spec_resnet34d.VARIANTS,
}


def get_recipe(spec: str) -> Recipe:
    """The recipe named `name` or `name:variant` (e.g. `v5_eeg_cutmix:quick`)."""
    name, _, variant = spec.partition(":")
    variant = variant or "default"
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    if variant not in RECIPES[name]:
        raise RecipeError(f"recipe {name!r} has no variant {variant!r}; choose from {sorted(RECIPES[name])}")
    return RECIPES[name][variant]
