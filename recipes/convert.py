"""Convert checkpoints of the original PyTorch v5 code (bilzard/kaggle-hms-public) to Keras.

    python -m recipes.convert --checkpoint last_model.pth --out model.keras
    python -m recipes.convert --original-runs /path/to/v5_eeg_24ep_cutmix --out runs/v5_eeg_cutmix_original
    python -m recipes.predict --runs runs/v5_eeg_cutmix_original --data-dir /path/to/hms --out submission.csv

--checkpoint converts one file (`{"checkpoint": state_dict, ...}` as the original's trainer saves
it, or a bare state_dict) into a `.keras` model. --original-runs converts the original's run tree,
`<dir>/fold_<k>/seed_<s>/model/last_model.pth`, into this package's run folders
`<out>/fold_<k>/seed_<s>/`, which `recipes.predict` ensembles like trained runs (they hold no
out-of-fold predictions, so `--oof` has nothing to score for them). The model is the v5 recipe's;
the converted logits equal the original's within 1e-6 (README, "Fidelity"). Needs torch to read
`.pth` files: pip install "hms_keras[torch]".
"""

import argparse
import os
import sys
from pathlib import Path

import hms_keras  # noqa: F401  first: applies hms_keras.runtime's settings while this process has one thread
from hms_keras.convert import (
    CheckpointError,
    convert_v5_checkpoint,
    find_original_checkpoints,
    write_converted_run,
)
from hms_keras.recipe import apply_overrides
from recipes import cli
from recipes.registry import get_recipe


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m recipes.convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="one original checkpoint (.pth) to convert to --out (a .keras file)")
    source.add_argument("--original-runs", help="the original's experiment folder (fold_<k>/seed_<s>/model/...)")
    parser.add_argument("--out", required=True, help="the .keras file, or the run folder to create (tree mode)")
    parser.add_argument("--data-dir", help="data folder recorded in the runs' recipe (default: embedded dataset)")
    cli.add_debug_option(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return cli.run(convert, parse_args(argv))


def convert(args) -> int:
    out = Path(args.out)
    if args.checkpoint:
        if out.suffix != ".keras":
            raise CheckpointError(f"{out}: the output model must be a .keras file")
        save_atomically(convert_v5_checkpoint(args.checkpoint), out)
        print(f"wrote {out}")
        return 0
    if args.data_dir:
        cli.check_data_dir(args.data_dir)
    overrides = [f"name={out.name}"] + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
    recipe = cli.check_recipe(apply_overrides(get_recipe("v5_eeg_cutmix"), overrides))
    checkpoints = find_original_checkpoints(args.original_runs)
    for (fold, seed), checkpoint in checkpoints.items():
        run_dir = write_converted_run(checkpoint, recipe, fold, seed, out)
        print(f"fold {fold} seed {seed}: {checkpoint} -> {run_dir}")
    print(f"converted {len(checkpoints)} run(s) into {out}; predict with python -m recipes.predict --runs {out}")
    return 0


def save_atomically(model, path: Path) -> None:
    """`model.save(path)` through a temporary `.keras` file in the same folder, renamed into place
    when complete: a failed or interrupted save leaves no partial model."""
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.partial.keras")  # Keras wants the suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise cli.UsageError(f"{path}: cannot write the model ({error}); check --out") from error
    finally:
        if temporary.exists():
            temporary.unlink()


if __name__ == "__main__":
    sys.exit(main())
