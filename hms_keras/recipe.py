"""Recipes: everything that defines one experiment, as frozen dataclasses.

A recipe is plain data. `recipes/<name>.py` modules build them (with variants such as
`v5_eeg_cutmix:quick`), `--set section.key=value` overrides change them with type checking,
and the resolved recipe is written beside every trained model as `recipe.json`. Only
`hms_keras.training` and the `recipes/` scripts read a Recipe; library functions take plain
arguments.
"""

import dataclasses
import json
import types
import typing
from typing import Any

from hms_keras.data.synthetic import DEFAULT_EMBEDDED_EEGS


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Where the data comes from and how it is split."""

    data_dir: str | None = None  # Kaggle-layout folder; None = the embedded synthetic dataset
    synthetic_eegs: int = DEFAULT_EMBEDDED_EEGS  # size of the embedded dataset used when data_dir is None
    synthetic_seed: int = 0
    n_folds: int = 5
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

    def min_weight_schedule(self) -> list[float]:
        """The loss's min-weight threshold for each epoch (0 = every sample counts)."""
        return [
            self.train.min_weight if epoch >= self.train.min_weight_from_epoch else 0.0
            for epoch in range(self.train.epochs)
        ]


def _from_dict(cls, values: dict[str, Any]):
    hints = typing.get_type_hints(cls)
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; valid keys: {sorted(known)}")
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
    Unknown keys and values that do not parse as the field's type raise ValueError listing the
    valid keys.
    """
    keys = override_keys(recipe)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"override {assignment!r} is not of the form key=value")
        if key.startswith(MODEL_ARGS_PREFIX) and len(key) > len(MODEL_ARGS_PREFIX):
            recipe = dataclasses.replace(
                recipe, model_args={**recipe.model_args, key[len(MODEL_ARGS_PREFIX) :]: _parse_json_or_text(text)}
            )
            continue
        if key not in keys:
            valid = ", ".join(f"{name} ({_type_name(hint)})" for name, hint in keys.items())
            raise ValueError(f"unknown recipe key {key!r}; valid keys: {valid}")
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
        if text.lower() in ("none", "null", ""):
            return None
        (hint,) = [arg for arg in args if arg is not type(None)]
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
        raise ValueError(f"recipe key {key!r} expects {_type_name(hint)}, got {text!r}") from None


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
