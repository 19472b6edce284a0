"""The error boundary and the cheap checks every `recipes.*` command shares.

A user error (bad data, a bad recipe value, a missing or corrupt run folder or model, a
checkpoint that does not fit, runs that cannot be ensembled or a bad ensemble file, a
command-line value that cannot work) ends a command with one line
on stderr and exit status 2, without a traceback:

    error: <file or key>: <problem>[; what to do]

`--debug` (an option of every command) prints the traceback instead. Any other exception is a
bug and keeps its traceback. The `check_*` functions are what a command verifies before it
generates or reads any data, so a typo fails in well under a second.
"""

import sys
import traceback
from pathlib import Path

from hms_keras.convert import CheckpointError
from hms_keras.data.hms import HmsDataError
from hms_keras.ensembles import EnsembleError, read_ensemble
from hms_keras.models import MODELS
from hms_keras.recipe import Recipe, RecipeError
from hms_keras.runs import DESCRIPTION_FILE, RunFolderError, finished_runs, read_description
from hms_keras.tasks import TASKS

USER_ERROR_STATUS = 2


class UsageError(ValueError):
    """A command-line value that cannot work (e.g. an output path that is a folder); the message
    names the option or path."""


USER_ERRORS = (HmsDataError, RunFolderError, CheckpointError, RecipeError, UsageError, EnsembleError)


def add_debug_option(parser) -> None:
    """Add `--debug` to an `argparse` parser (read by `run`)."""
    parser.add_argument("--debug", action="store_true", help="show an error's traceback instead of one line")


def run(command, args) -> int:
    """`command(args)`'s exit status; a user error (`USER_ERRORS`) instead prints `error_line`
    on stderr (or, with `args.debug`, the traceback) and returns 2."""
    try:
        return command(args)
    except USER_ERRORS as error:
        if getattr(args, "debug", False):
            traceback.print_exc()
        else:
            print(error_line(error), file=sys.stderr)
        return USER_ERROR_STATUS


def error_line(error: BaseException) -> str:
    """`error: <message>`, the message's lines joined into one."""
    return "error: " + " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def check_recipe(recipe: Recipe) -> Recipe:
    """`recipe.validate()` against the registered task and model names."""
    return recipe.validate(tasks=TASKS, models=MODELS)


def check_run_recipe(run_dir) -> Recipe:
    """The validated recipe of a finished run folder; RunFolderError naming its `recipe.json`
    when the file is unreadable or the recipe in it cannot work."""
    recipe = read_description(run_dir)["recipe"]
    try:
        return check_recipe(recipe)
    except RecipeError as error:
        raise RunFolderError(f"{Path(run_dir) / DESCRIPTION_FILE}: {error}") from None


def check_source_runs(runs_dir, ensemble_file) -> tuple[list[Path], list[Recipe]]:
    """The run folders a `--runs` / `--ensemble` pair names (every finished run of `runs_dir`, or
    the first run of each member of `ensemble_file`) and their validated recipes; one-line errors
    (RunFolderError, EnsembleError) naming the folder or file otherwise."""
    if ensemble_file:
        run_dirs = [Path(member["runs"][0]) for member in read_ensemble(ensemble_file)["members"]]
    else:
        run_dirs = finished_runs(runs_dir)
    return run_dirs, [check_run_recipe(run_dir) for run_dir in run_dirs]


def check_data_dir(data_dir, *required_files: str, origin: str = "--data-dir") -> Path:
    """`data_dir` (`~` expanded), after checking that it is a folder holding `required_files`
    (e.g. "train.csv"); HmsDataError naming the folder or file otherwise. `origin` says where
    the path came from, for the message."""
    path = Path(data_dir).expanduser()
    hint = f"check {origin}, which must name a Kaggle-layout folder (train.csv, test.csv, train_eegs/, ...)"
    if not path.is_dir():
        raise HmsDataError(f"{path}: HMS data folder not found; {hint}")
    for name in required_files:
        if not (path / name).is_file():
            raise HmsDataError(f"{path / name}: file not found; {hint}")
    return path
