"""Train every fold x seed of a recipe, then print the per-fold CV table.

    python -m recipes.train --recipe v5_eeg_cutmix:quick
    python -m recipes.train --recipe v5_eeg_cutmix --data-dir /data/hms --folds 0,1 --seeds 0
    python -m recipes.train --recipe v5_eeg_cutmix --set train.epochs=3 --set train.mixed_precision=mixed_bfloat16
    python -m recipes.train --recipe v5_eeg_cutmix --engine ray                 # the runs as tasks of a local Ray
    python -m recipes.train --recipe v5_eeg_cutmix --engine ray --address HEAD_IP:6379  # ... of a Ray cluster
    python -m recipes.train --recipe v5_eeg_cutmix --set train.devices=all      # one run on every local GPU

Each fold x seed writes runs/<recipe>/fold_<k>/seed_<s>/ (model.keras, recipe.json, history.csv,
oof.parquet); finished folders are skipped, so an interrupted command resumes where it stopped.
Runs another launch is training are skipped, so two launches on one workdir share the grid.
`--engine ray` trains each fold x seed as a Ray task (docs/scaling.md); it needs the `ray` extra.
"""

import argparse
import sys
from pathlib import Path

import hms_keras  # noqa: F401  first: applies hms_keras.runtime's settings while this process has one thread
from hms_keras import ray_grid
from hms_keras.recipe import apply_overrides, override_keys
from hms_keras.training import train_recipe
from recipes import cli
from recipes.registry import RECIPES, get_recipe

ENGINES = ("sequential", "ray")


def parse_args(argv):
    recipe_list = ", ".join(f"{name}[:{'|'.join(variants)}]" for name, variants in RECIPES.items())
    default = get_recipe("v5_eeg_cutmix")
    key_list = "\n".join(f"  {key:32s} {hint}" for key, hint in override_keys(default).items())
    parser = argparse.ArgumentParser(
        prog="python -m recipes.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"recipes: {recipe_list}\n\nkeys for --set:\n{key_list}\n\n"
        "The Keras backend is KERAS_BACKEND (default jax; tensorflow and torch work too).",
    )
    parser.add_argument("--recipe", required=True, help="recipe name, optionally :variant (e.g. v5_eeg_cutmix:quick)")
    parser.add_argument("--data-dir", help="Kaggle-layout data folder (default: the embedded synthetic dataset)")
    parser.add_argument("--folds", help="comma-separated folds to train (default: the recipe's)")
    parser.add_argument("--seeds", help="comma-separated seeds to train (default: the recipe's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value (repeatable), e.g. train.epochs=3")
    parser.add_argument("--workdir", default="runs", help="where run folders go (default: runs)")
    parser.add_argument("--engine", choices=ENGINES, default="sequential",
                        help="sequential: one run after another in this process (default); "
                        "ray: each fold x seed a Ray task, retried when its worker dies")
    parser.add_argument("--address", help="--engine ray: the Ray cluster to join, e.g. HEAD_IP:6379 or auto "
                        "(default: start a local Ray on this machine)")
    parser.add_argument("--ray-cpus-per-task", type=float, default=1, metavar="N",
                        help="--engine ray: CPUs Ray reserves for each run (default 1; each run also takes "
                        "one GPU where the cluster has GPUs)")
    cli.add_debug_option(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return cli.run(train, parse_args(argv))


def train(args) -> int:
    """Check the recipe, data folder and workdir (cheap, before any data is generated), then train."""
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.folds:
        overrides.append(f"folds={args.folds}")
    if args.seeds:
        overrides.append(f"seeds={args.seeds}")
    recipe = cli.check_recipe(apply_overrides(get_recipe(args.recipe), overrides))
    if recipe.data.data_dir is not None:
        cli.check_data_dir(recipe.data.data_dir, "train.csv", origin="--data-dir (data.data_dir)")
    workdir = Path(args.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise cli.UsageError(f"{workdir}: not a folder; --workdir names the folder run folders go into")
    if args.engine == "ray":
        try:
            ray_grid.import_ray()
        except ray_grid.RayMissingError as error:
            raise cli.UsageError(str(error)) from None
        if args.ray_cpus_per_task <= 0:
            raise cli.UsageError(f"--ray-cpus-per-task must be positive, got {args.ray_cpus_per_task:g}")
        scores = ray_grid.train_recipe_on_ray(recipe, workdir, address=args.address,
                                              cpus_per_task=args.ray_cpus_per_task)
    elif args.address:
        raise cli.UsageError("--address names a Ray cluster; it needs --engine ray")
    else:
        scores = train_recipe(recipe, workdir)
    print(f"\n{recipe.name}: out-of-fold scores (KL divergence, lower is better; prior_* = class-prior baseline)")
    print(scores.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
