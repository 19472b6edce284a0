"""Recipes: everything that defines one experiment, as frozen dataclasses.

A recipe is plain data. `recipes/<name>.py` modules build them (with variants such as
`v5_eeg_cutmix:quick`), `--set section.key=value` overrides change them with type checking,
and the resolved recipe is written beside every trained model as `recipe.json`. Only
`hms_keras.training` and the `recipes/` scripts read a Recipe; library functions take plain
arguments.
"""

import contextlib
import dataclasses
import json
import types
import typing
from typing import Any

from hms_keras.data.folds import FOLD_SCHEMES
from hms_keras.data.synthetic import DEFAULT_EMBEDDED_EEGS

SCHEDULES = ("cosine", "one_cycle")
CHECKPOINTS = ("last", "best")
MIXED_PRECISION_POLICIES = (None, "mixed_bfloat16", "mixed_float16")
ALL_DEVICES = "all"  # train.devices: every local device
MAX_SEED = 2**32 - 1  # numpy's global seed, which keras.utils.set_random_seed sets, is 32-bit


class RecipeError(ValueError):
    """A recipe value that cannot work (unknown key, wrong type, out of range); the message names
    the recipe and the key."""


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Where the data comes from and how it is split."""

    data_dir: str | None = None  # Kaggle-layout folder; None = the embedded synthetic dataset
    synthetic_eegs: int = DEFAULT_EMBEDDED_EEGS  # size of the embedded dataset used when data_dir is None
    synthetic_seed: int = 0
    n_folds: int = 5
    # how label rows are split into folds (data.folds.FOLD_SCHEMES): "patient_group" (v5's GroupKFold
    # per eeg_id) or "stratified_spectrogram" (the spectrogram baseline's); None = the task's own.
    # Recipes whose out-of-fold predictions are ensembled together need the same scheme.
    fold_scheme: str | None = None
    worker_count: int = 0  # Grain worker processes; 0 was fastest on 2 cores


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimisation of one fold x seed."""

    epochs: int = 24
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    epsilon: float = 1e-4  # AdamW epsilon with PyTorch semantics (hms_keras.optimizers.TorchAdamW)
    schedule: str = "cosine"  # "cosine" (to 0, per step, no warm-up) or "one_cycle" (from the peak)
    min_weight: float = 0.0  # the loss ignores samples whose row weight (votes/28) is below this ...
    min_weight_from_epoch: int = 0  # ... from this 0-based epoch on
    checkpoint: str = "last"  # "last" epoch, or "best" validation KL
    early_stopping_patience: int | None = None  # epochs without validation improvement
    mixed_precision: str | None = None  # None, "mixed_bfloat16" or "mixed_float16"
    # devices one run trains on, data parallel (hms_keras.devices): a count, or "all" local devices;
    # batch_size is the global batch, split evenly across them (JAX backend only)
    devices: int | str = 1


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One experiment: a task, a model, data, optimisation and the fold x seed grid."""

    name: str
    task: str  # "v5_eeg" (raw EEG windows) or "spectrogram" (Kaggle spectrogram windows)
    model: str  # key of hms_keras.models.MODELS
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)  # keyword arguments of its builder
    data: DataSettings = DataSettings()
    train: TrainSettings = TrainSettings()
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    seeds: tuple[int, ...] = (0, 1, 2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Recipe":
        return _from_dict(cls, values)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls.from_dict(json.loads(text))

    def validate(self, *, tasks=None, models=None) -> "Recipe":
        """This recipe, after checking every value before anything is generated or read.

        tasks, models: the valid task and model names (e.g. `hms_keras.tasks.TASKS`,
        `hms_keras.models.MODELS`); not checked when None. Raises RecipeError naming the recipe
        and every offending key: a value of the wrong type, an empty or repeated fold or seed,
        a fold outside `range(data.n_folds)`, an unknown fold scheme, a negative seed, a
        non-positive batch size, epoch count or learning rate, an unknown schedule, checkpoint or
        mixed-precision policy.
        """
        problems = _type_problems(self, "")
        if not problems:  # the range checks compare values, so they need the right types
            problems = _value_problems(self, tasks, models)
        if problems:
            raise RecipeError(f"recipe {self.name!r}: " + "; ".join(problems))
        return self

    def min_weight_schedule(self) -> list[float]:
        """The loss's min-weight threshold for each epoch (0 = every sample counts)."""
        return [
            self.train.min_weight if epoch >= self.train.min_weight_from_epoch else 0.0
            for epoch in range(self.train.epochs)
        ]


def _type_problems(section, prefix: str) -> list[str]:
    """`<key> must be <type>` for every field of the dataclass `section` whose value has the wrong type."""
    problems = []
    for name, hint in typing.get_type_hints(type(section)).items():
        value, key = getattr(section, name), prefix + name
        if dataclasses.is_dataclass(hint):
            if isinstance(value, hint):
                problems += _type_problems(value, f"{key}.")
            else:
                problems.append(f"{key} must be a {hint.__name__} section, got {value!r}")
        elif not _has_type(value, hint):
            problems.append(f"{key} must be {_type_name(hint)}, got {value!r}")
    return problems


def _has_type(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if origin is tuple:
        return isinstance(value, tuple) and all(_has_type(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if isinstance(value, bool):  # a bool is an int to Python, never to a recipe
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _value_problems(recipe: Recipe, tasks, models) -> list[str]:
    """What is wrong with the values of a well-typed recipe (see `Recipe.validate`)."""
    data, train = recipe.data, recipe.train
    checks = [
        (recipe.name not in ("", ".", "..") and "/" not in recipe.name and "\\" not in recipe.name,
         f"name must be usable as a folder name, got {recipe.name!r}"),
        (tasks is None or recipe.task in tasks, f"task must be one of {sorted(tasks or ())}, got {recipe.task!r}"),
        (models is None or recipe.model in models,
         f"model must be one of {sorted(models or ())}, got {recipe.model!r}"),
        (data.n_folds >= 2, f"data.n_folds must be at least 2, got {data.n_folds}"),
        (data.fold_scheme is None or data.fold_scheme in FOLD_SCHEMES,
         f"data.fold_scheme must be one of {list(FOLD_SCHEMES)} or none, got {data.fold_scheme!r}"),
        (data.synthetic_eegs >= 1, f"data.synthetic_eegs must be at least 1, got {data.synthetic_eegs}"),
        (data.worker_count >= 0, f"data.worker_count must be at least 0, got {data.worker_count}"),
        (train.epochs >= 1, f"train.epochs must be at least 1, got {train.epochs}"),
        (train.batch_size >= 1, f"train.batch_size must be at least 1, got {train.batch_size}"),
        (train.learning_rate > 0, f"train.learning_rate must be positive, got {train.learning_rate}"),
        (train.weight_decay >= 0, f"train.weight_decay must be at least 0, got {train.weight_decay}"),
        (train.epsilon > 0, f"train.epsilon must be positive, got {train.epsilon}"),
        (train.schedule in SCHEDULES, f"train.schedule must be one of {list(SCHEDULES)}, got {train.schedule!r}"),
        (0 <= train.min_weight <= 1, f"train.min_weight must be within 0..1 (votes / 28), got {train.min_weight}"),
        (train.min_weight_from_epoch >= 0,
         f"train.min_weight_from_epoch must be at least 0, got {train.min_weight_from_epoch}"),
        (train.checkpoint in CHECKPOINTS,
         f"train.checkpoint must be one of {list(CHECKPOINTS)}, got {train.checkpoint!r}"),
        (train.early_stopping_patience is None or train.early_stopping_patience >= 1,
         f"train.early_stopping_patience must be at least 1 or none, got {train.early_stopping_patience}"),
        (train.mixed_precision in MIXED_PRECISION_POLICIES,
         f"train.mixed_precision must be one of {list(MIXED_PRECISION_POLICIES)}, got {train.mixed_precision!r}"),
        (train.devices == ALL_DEVICES or (isinstance(train.devices, int) and train.devices >= 1),
         f"train.devices must be a device count of at least 1 or {ALL_DEVICES!r}, got {train.devices!r}"),
    ]
    problems = [message for ok, message in checks if not ok]
    problems += _grid_problems("folds", "fold", recipe.folds)
    problems += _grid_problems("seeds", "seed", recipe.seeds)
    outside = [fold for fold in recipe.folds if not 0 <= fold < data.n_folds]
    if outside and data.n_folds >= 2:
        problems.append(
            f"folds {_listed(outside)} out of range for data.n_folds={data.n_folds} (folds are 0..{data.n_folds - 1})"
        )
    outside = [seed for seed in recipe.seeds if not 0 <= seed <= MAX_SEED]
    if outside:
        problems.append(f"seeds {_listed(outside)} out of range (seeds are 0..{MAX_SEED})")
    return problems


def _grid_problems(key: str, noun: str, values: tuple[int, ...]) -> list[str]:
    if not values:
        return [f"{key} is empty (give at least one {noun})"]
    repeated = sorted({value for value in values if values.count(value) > 1})
    return [f"{key} lists {noun} {_listed(repeated)} more than once"] if repeated else []


def _listed(values) -> str:
    return ",".join(str(value) for value in values)


def _from_dict(cls, values: dict[str, Any]):
    if not isinstance(values, dict):
        raise RecipeError(f"{cls.__name__} must be a JSON object of keys and values, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise RecipeError(f"unknown {cls.__name__} keys {sorted(unknown)}; valid keys: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value)
        elif typing.get_origin(hint) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


MODEL_ARGS_PREFIX = "model_args."


def override_keys(recipe: Recipe) -> dict[str, Any]:
    """Every key `--set` accepts, with its type hint: `train.epochs`, `folds`, ...; any
    `model_args.<name>` is accepted too (a JSON value, or else a string)."""
    keys = {}
    for field, hint in typing.get_type_hints(type(recipe)).items():
        if field == "model_args":
            keys[f"{MODEL_ARGS_PREFIX}<name>"] = "JSON value or string"
        elif dataclasses.is_dataclass(hint):
            for sub, sub_hint in typing.get_type_hints(hint).items():
                keys[f"{field}.{sub}"] = sub_hint
        else:
            keys[field] = hint
    return keys


def apply_overrides(recipe: Recipe, assignments: list[str]) -> Recipe:
    """Apply `key=value` strings (e.g. `train.epochs=3`, `folds=0,1`, `data.data_dir=none`).

    `model_args.<name>=<value>` sets a keyword argument of the model builder (value parsed as
    JSON when it is JSON, e.g. `1.5`, `null`, `"a"`, else kept as a string, e.g. a path).
    Unknown keys and values that do not parse as the field's type raise RecipeError (a
    ValueError) listing the valid keys; `Recipe.validate` checks the values' ranges.
    """
    keys = override_keys(recipe)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep:
            raise RecipeError(f"override {assignment!r} is not of the form key=value")
        if key.startswith(MODEL_ARGS_PREFIX) and len(key) > len(MODEL_ARGS_PREFIX):
            recipe = dataclasses.replace(
                recipe, model_args={**recipe.model_args, key[len(MODEL_ARGS_PREFIX) :]: _parse_json_or_text(text)}
            )
            continue
        if key not in keys:
            valid = ", ".join(f"{name} ({_type_name(hint)})" for name, hint in keys.items())
            raise RecipeError(f"unknown recipe key {key!r}; valid keys: {valid}")
        value = _parse(text.strip(), keys[key], key)
        section, _, field = key.rpartition(".")
        if section:
            updated = dataclasses.replace(getattr(recipe, section), **{field: value})
            recipe = dataclasses.replace(recipe, **{section: updated})
        else:
            recipe = dataclasses.replace(recipe, **{field: value})
    return recipe


def _parse_json_or_text(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse(text: str, hint, key: str):
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        *others, hint = [arg for arg in args if arg is not type(None)]
        for other in others:  # e.g. int | str: "2" is an int, "all" a str
            with contextlib.suppress(RecipeError):
                return _parse(text, other, key)
        args = typing.get_args(hint)
    try:
        if typing.get_origin(hint) is tuple:
            return tuple(args[0](item) for item in text.split(",") if item.strip())
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return hint(text)
    except ValueError:
        raise RecipeError(f"recipe key {key!r} expects {_type_name(hint)}, got {text!r}") from None


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
