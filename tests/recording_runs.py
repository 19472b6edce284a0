"""Run folders of tiny untrained stand-ins for the v5 model, for the whole-recording tests
(test_sliding_windows.py, test_annotate.py): predicting needs a run folder, not a trained model."""

import json
from pathlib import Path

import keras

from hms_keras import constants, runs
from hms_keras.ensembles import FORMAT
from hms_keras.recipe import Recipe
from recipes.registry import get_recipe


def tiny_v5_model(seed: int) -> keras.Model:
    """{"eeg", "mask"}: (B, 512, 18) each -> (B, 2, 6) logits that follow the signal: per-channel
    mean and max of the masked bipolar signal through one random dense layer."""
    eeg, mask = keras.Input((constants.CROP_FRAMES, constants.NUM_BIPOLAR), name="eeg"), \
        keras.Input((constants.CROP_FRAMES, constants.NUM_BIPOLAR), name="mask")
    masked = keras.layers.Multiply()([eeg, mask])  # (B, 512, 18) mV
    features = keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling1D()(masked), keras.layers.GlobalMaxPooling1D()(masked)]
    )  # (B, 36)
    dense = keras.layers.Dense(2 * constants.NUM_CLASSES,
                               kernel_initializer=keras.initializers.RandomNormal(stddev=20.0, seed=seed))
    return keras.Model({"eeg": eeg, "mask": mask}, keras.layers.Reshape((2, constants.NUM_CLASSES))(dense(features)))


def tiny_spectrogram_model(seed: int) -> keras.Model:
    """(B, 400, 300, 1) spectrogram images -> (B, 6) logits through pooling and one random dense layer."""
    image = keras.Input((400, 300, 1), name="spectrogram")
    features = keras.layers.Flatten()(keras.layers.AveragePooling2D((100, 100))(image))  # (B, 12)
    dense = keras.layers.Dense(constants.NUM_CLASSES, kernel_initializer=keras.initializers.RandomNormal(seed=seed))
    return keras.Model(image, dense(features))


def write_tiny_runs(recipe_dir: Path, recipe_name: str = "v5_eeg_cutmix", folds=(0, 1)) -> Path:
    """`recipe_dir`/fold_<k>/seed_0 for each fold: a tiny model of the recipe's task (seed k) saved
    as a finished run of that recipe. Returns recipe_dir."""
    recipe: Recipe = get_recipe(recipe_name)
    build = tiny_v5_model if recipe.task == "v5_eeg" else tiny_spectrogram_model
    for fold in folds:
        run_dir = runs.run_dir(recipe_dir, fold, 0)
        run_dir.mkdir(parents=True)
        build(fold).save(run_dir / runs.MODEL_FILE)
        runs.write_description(run_dir, runs.describe(recipe, fold, 0))
    return recipe_dir


def write_two_member_ensemble(path: Path, recipe_dir: Path) -> Path:
    """An ensemble file (`recipes.ensemble`'s format) of the fold_0 and fold_1 runs of
    `write_tiny_runs` as two members, weights 0.7 and 0.3, the first with the crop-shift views
    (-64, 0, 64)."""
    members = [
        {"name": "fold_0", "task": "v5_eeg", "runs": [str(runs.run_dir(recipe_dir, 0, 0))], "weight": 0.7,
         "tta": [-64, 0, 64]},
        {"name": "fold_1", "task": "v5_eeg", "runs": [str(runs.run_dir(recipe_dir, 1, 0))], "weight": 0.3, "tta": [0]},
    ]
    path.write_text(json.dumps({"format": FORMAT, "method": "weights", "space": "log_probabilities",
                                "members": members}))
    return path
