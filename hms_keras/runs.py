"""The run folder: where one trained (or converted) fold x seed model lives, and how it is read.

    <recipe_dir>/fold_<k>/seed_<s>/
        model.keras    the model
        recipe.json    the resolved recipe, fold, seed, backend, versions, scores (or where the
                       weights were converted from)
        history.csv    per-epoch training log                     (trained runs only)
        oof.parquet    out-of-fold logits of the fold's rows      (trained runs only)
        oof_shift<+s>.parquet  the same rows' logits under a test-time augmentation view
                       (written by `hms_keras.ensembles` when first asked for, e.g.
                       `oof_shift+128.parquet`)
        train.log      the run's output (progress, warnings) when its engine logs to a file
                       (`recipes.train --engine ray`); until the run is published it is
                       `seed_<s>.log` beside the folder, appended by every attempt

A run is written into `seed_<s>.partial/` and renamed to `seed_<s>/` when every file is in it,
so a folder without the suffix is complete: it is *finished* when it holds `model.keras` and
`recipe.json`. A run converted from the original PyTorch code has no history and no out-of-fold
predictions; it predicts like any other run and is left out of out-of-fold scores, with a note.

This module is the only place that knows these names; training writes through it, inference and
scoring read through it.
"""

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
import keras
import pandas as pd

from hms_keras.recipe import Recipe

MODEL_FILE = "model.keras"
DESCRIPTION_FILE = "recipe.json"
HISTORY_FILE = "history.csv"
OOF_FILE = "oof.parquet"
REQUIRED_FILES = (MODEL_FILE, DESCRIPTION_FILE)
LOG_FILE = "train.log"
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
LOG_SUFFIX = ".log"


class RunFolderError(ValueError):
    """A missing or malformed run folder; the message names the folder or file."""


def run_dir(recipe_dir, fold: int, seed: int) -> Path:
    """The folder of fold `fold`, seed `seed` under one recipe's folder (e.g. `runs/v5_eeg_cutmix`)."""
    return Path(recipe_dir) / f"fold_{fold}" / f"seed_{seed}"


def partial_dir(run_dir_path: Path) -> Path:
    """`<run>.partial/`, where a run is written until it is complete."""
    return run_dir_path.with_name(run_dir_path.name + PARTIAL_SUFFIX)


def pending_log(run_dir_path: Path) -> Path:
    """`<run>.log`, where a run's output goes until the run is published (`keep_log` then moves it)."""
    return run_dir_path.with_name(run_dir_path.name + LOG_SUFFIX)


def keep_log(run_dir_path: Path) -> None:
    """Move `<run>.log` into the published run folder as `train.log` (nothing when there is none)."""
    log = pending_log(run_dir_path)
    if log.is_file():
        os.replace(log, Path(run_dir_path) / LOG_FILE)


@contextlib.contextmanager
def claim(run_dir_path: Path) -> Iterator[bool]:
    """Hold the lock of one fold x seed run while the block runs; yields False (and holds
    nothing) when another process holds it. The lock (`<run>.lock`, `filelock`) is released when
    the block ends or the process dies, so a killed run never blocks the next launch."""
    run_dir_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(run_dir_path.with_name(run_dir_path.name + LOCK_SUFFIX))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def start_partial(run_dir_path: Path, resume: bool = True) -> Path:
    """The `<run>.partial/` folder to write a run into: kept when it holds an epoch checkpoint
    and `resume` is set, else emptied. Call while holding the run's `claim`."""
    partial = partial_dir(run_dir_path)
    if resume and read_checkpoint(partial) is not None:
        return partial
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(run_dir_path, ignore_errors=True)  # an unfinished folder from an older layout
    partial.mkdir(parents=True)
    return partial


@contextlib.contextmanager
def writing(run_dir_path: Path) -> Iterator[Path]:
    """`start_partial`, for a block that writes the run: when the block fails (an exception,
    Ctrl-C) before its first epoch checkpoint, the `<run>.partial/` folder is removed, so an
    interrupted run leaves nothing behind that cannot be resumed."""
    partial = start_partial(run_dir_path)
    try:
        yield partial
    except BaseException:
        if partial.is_dir() and read_checkpoint(partial) is None:
            shutil.rmtree(partial, ignore_errors=True)
        raise


def publish(partial: Path, run_dir_path: Path) -> Path:
    """Rename a complete `<run>.partial/` to `<run>/` (atomic on one file system), after
    removing its epoch checkpoint."""
    missing = [name for name in REQUIRED_FILES if not (partial / name).is_file()]
    if missing:
        raise RunFolderError(f"{partial}: cannot publish a run without {missing}")
    for path in [partial / CHECKPOINT_STATE, *partial.glob(f"*{CHECKPOINT_WEIGHTS_SUFFIX}")]:
        path.unlink(missing_ok=True)
    os.replace(partial, run_dir_path)
    return run_dir_path


# --- epoch checkpoints inside <run>.partial/ ---------------------------------------------------
# `checkpoint.json` names the weights file of the last complete epoch and holds the training
# state after it; each file is written under a temporary name and renamed, and the state file is
# replaced only after its weights file is complete, so a kill at any moment leaves either the
# previous checkpoint or the new one.

CHECKPOINT_STATE = "checkpoint.json"
CHECKPOINT_WEIGHTS_SUFFIX = ".weights.h5"


def write_checkpoint(partial: Path, epochs_done: int, save_weights: Callable[[Path], None], state: dict) -> None:
    """Record that `epochs_done` epochs are complete: `save_weights(path)` writes the model and
    optimizer variables (`keras.Model.save_weights`), `state` (JSON) the rest of the training
    state (history, callbacks). The previous epoch's weights file is removed afterwards."""
    previous = read_checkpoint(partial)
    weights = partial / f"epoch_{epochs_done}{CHECKPOINT_WEIGHTS_SUFFIX}"
    temporary = weights.with_name(f".tmp_{weights.name}")
    save_weights(temporary)
    os.replace(temporary, weights)
    _write_text_atomically(
        partial / CHECKPOINT_STATE, json.dumps({**state, "epochs_done": epochs_done, "weights": weights.name})
    )
    if previous is not None and previous[0] != weights:
        previous[0].unlink(missing_ok=True)


def read_checkpoint(partial: Path) -> tuple[Path, dict] | None:
    """(weights file, state) of the last complete epoch in `<run>.partial/`, or None."""
    try:
        state = json.loads((partial / CHECKPOINT_STATE).read_text())
        weights = partial / state["weights"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (weights, state) if weights.is_file() else None


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".tmp_{path.name}")
    temporary.write_text(text)
    os.replace(temporary, path)


def is_finished(run_dir_path: Path) -> bool:
    """True for a published run folder (it holds `model.keras` and `recipe.json`)."""
    run_dir_path = Path(run_dir_path)
    return not run_dir_path.name.endswith(PARTIAL_SUFFIX) and all(
        (run_dir_path / name).is_file() for name in REQUIRED_FILES
    )


def finished_runs(recipe_dir) -> list[Path]:
    """The finished `fold_<k>/seed_<s>` folders under one recipe's folder, sorted by (fold, seed).

    Raises RunFolderError when there is none.
    """
    recipe_dir = Path(recipe_dir)
    runs = [path for path in recipe_dir.glob("fold_*/seed_*") if is_finished(path)]
    if not runs:
        problem = "folder not found" if not recipe_dir.is_dir() else "no finished run"
        raise RunFolderError(
            f"{recipe_dir}: {problem} (fold_<k>/seed_<s>/ with {' and '.join(REQUIRED_FILES)}); train one "
            "with `python -m recipes.train --recipe ...` or convert one with `python -m recipes.convert ...`"
        )
    descriptions = {path: read_description(path) for path in runs}
    return sorted(runs, key=lambda path: (descriptions[path]["fold"], descriptions[path]["seed"]))


def describe(recipe: Recipe, fold: int, seed: int) -> dict:
    """The `recipe.json` fields every run shares: recipe, fold, seed, backend and software versions."""
    return {
        "recipe": recipe,
        "fold": fold,
        "seed": seed,
        "keras_backend": keras.backend.backend(),
        "versions": software_versions(),
    }


def write_description(run_dir_path: Path, description: dict) -> None:
    """Write `recipe.json`; `description["recipe"]` may be a Recipe (stored as a dict)."""
    recipe = description["recipe"]
    stored = {**description, "recipe": recipe.to_dict() if isinstance(recipe, Recipe) else recipe}
    (Path(run_dir_path) / DESCRIPTION_FILE).write_text(json.dumps(stored, indent=2))


def read_description(run_dir_path) -> dict:
    """A run's `recipe.json`, with the recipe parsed back into a `Recipe`.

    Raises RunFolderError naming the file when it is missing, not JSON or not a run description.
    """
    path = Path(run_dir_path) / DESCRIPTION_FILE
    try:
        description = json.loads(path.read_text())
        description["recipe"] = Recipe.from_dict(description["recipe"])
        int(description["fold"]), int(description["seed"])
    except FileNotFoundError:
        raise RunFolderError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path}: not valid JSON ({error})") from None
    except (KeyError, TypeError, ValueError) as error:
        raise RunFolderError(f"{path}: not a run description ({type(error).__name__}: {error})") from None
    return description


def has_oof(run_dir_path) -> bool:
    """True when the run holds out-of-fold predictions (converted runs do not)."""
    return (Path(run_dir_path) / OOF_FILE).is_file()


def oof_view_path(run_dir_path, shift: int) -> Path:
    """Where a run keeps its out-of-fold logits under test-time augmentation shift `shift`
    (`oof_shift+128.parquet`); shift 0 is `oof.parquet` itself."""
    return Path(run_dir_path) / (OOF_FILE if shift == 0 else f"oof_shift{shift:+d}.parquet")


def write_oof_view(run_dir_path, shift: int, frame: pd.DataFrame) -> Path:
    """Write a test-time augmentation view's out-of-fold logits into a finished run (a
    temporary file renamed into place, so a reader never sees half a file); returns its path."""
    if shift == 0:
        raise ValueError("shift 0 is the run's own oof.parquet, written by training")
    path = oof_view_path(run_dir_path, shift)
    temporary = path.with_name(f".tmp_{path.name}")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)
    return path


def read_oof(run_dirs) -> pd.DataFrame:
    """The `oof.parquet` frames of `run_dirs` (runs of one fold), stacked, with a `seed` column.

    Raises RunFolderError when a run has none (e.g. a converted run).
    """
    frames = []
    for path in run_dirs:
        if not has_oof(path):
            raise RunFolderError(f"{path}: no out-of-fold predictions ({OOF_FILE}); it was not trained here")
        frame = pd.read_parquet(Path(path) / OOF_FILE)
        frame["seed"] = read_description(path)["seed"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def oof_runs_by_fold(recipe_dir, folds=None) -> dict[int, list[Path]]:
    """The finished runs under `recipe_dir` that hold out-of-fold predictions, by fold (sorted).

    folds: keep only these folds (default: all). Raises RunFolderError when no run qualifies,
    saying how many finished runs lack predictions (converted runs).
    """
    finished = finished_runs(recipe_dir)
    by_fold: dict[int, list[Path]] = {}
    for path in finished:
        fold = read_description(path)["fold"]
        if has_oof(path) and (folds is None or fold in folds):
            by_fold.setdefault(fold, []).append(path)
    if not by_fold:
        without = sum(not has_oof(path) for path in finished)
        raise RunFolderError(
            f"{recipe_dir}: no finished run{'' if folds is None else f' of folds {list(folds)}'} has out-of-fold "
            f"predictions ({OOF_FILE}); {without} of its {len(finished)} finished runs have none (runs converted "
            "from original checkpoints cannot be scored out of fold)"
        )
    return dict(sorted(by_fold.items()))


def software_versions() -> dict:
    """hms_keras, Keras, the backend library and Python versions, and the hms_keras git commit
    (None outside a git checkout), for `recipe.json`."""
    backend = keras.backend.backend()
    versions = {"hms_keras": importlib.metadata.version("hms_keras"), "keras": keras.__version__}
    try:
        versions[backend] = importlib.metadata.version({"jax": "jax", "tensorflow": "tensorflow"}.get(backend, backend))
    except importlib.metadata.PackageNotFoundError:
        pass
    versions["python"] = platform.python_version()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
        versions["git_commit"] = commit.stdout.strip() if commit.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        versions["git_commit"] = None
    return versions


def load_model(run_dir_path) -> keras.Model:
    """The run's `model.keras`, loaded with `compile=False` (a file saved under any Keras backend
    loads under any other) and Keras's `safe_mode` on (no code stored in the file runs).

    Raises RunFolderError naming the file when it is missing, not a complete `.keras` archive
    (e.g. truncated), or holds what Keras cannot rebuild: an unknown layer, unreadable weights,
    or a layer that safe mode refuses (a `Lambda` layer's stored Python code).
    """
    import zipfile  # here, not at the top: this function is the only user

    path = Path(run_dir_path) / MODEL_FILE
    if not path.is_file():
        raise RunFolderError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):  # Keras says "File not found" for a truncated archive
        raise RunFolderError(
            f"{path}: not a complete .keras file (truncated or corrupt); train or convert the run again"
        )
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as error:
        detail = " ".join(str(error).split())
        if "safe_mode" in detail:  # Keras's refusal to deserialize code, e.g. a Lambda layer's function
            raise RunFolderError(
                f"{path}: refused by Keras's safe mode, which runs no code from model files "
                f"({detail.split('. ')[0]}); only models without stored code (such as Lambda layers) load here"
            ) from error
        raise RunFolderError(
            f"{path}: Keras cannot load this model ({type(error).__name__}: {detail}); train or convert the run again"
        ) from error
