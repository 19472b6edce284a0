"""Ensemble a recipe's trained models into submission.csv, or score them out of fold.

    python -m recipes.predict --runs runs/v5_eeg_cutmix_quick --out submission.csv
    python -m recipes.predict --runs runs/v5_eeg_cutmix --data-dir /data/hms --out submission.csv
    python -m recipes.predict --runs runs/v5_eeg_cutmix --oof
    python -m recipes.predict --ensemble ensembles/blend.json --out submission.csv

Every finished fold_<k>/seed_<s>/model.keras under --runs is loaded (compile=False, so models
trained under any Keras backend work); v5 models are averaged in logit space, spectrogram models
in probability space. The submission has test.csv's eeg_id order and rows that sum to 1.
--ensemble instead uses an ensemble file written by `recipes.ensemble` (several recipes, their
weights and test-time views); with --oof it scores that ensemble out of fold again.
"""

import argparse
import os
import sys
from pathlib import Path

import hms_keras  # noqa: F401  first: applies hms_keras.runtime's settings while this process has one thread
from hms_keras.ensembles import score_ensemble_file
from hms_keras.inference import Ensemble, score_out_of_fold
from hms_keras.runs import DESCRIPTION_FILE, RunFolderError
from hms_keras.tasks.base import ON_BAD_RECORDING
from recipes import cli


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m recipes.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", help="one recipe's run folder, e.g. runs/v5_eeg_cutmix")
    source.add_argument("--ensemble", help="an ensemble file of recipes.ensemble, e.g. ensembles/blend.json")
    parser.add_argument("--data-dir", help="Kaggle-layout data folder (default: the data the models trained on)")
    parser.add_argument("--out", default="submission.csv", help="submission file to write (default: submission.csv)")
    parser.add_argument("--oof", action="store_true", help="score the out-of-fold predictions instead of predicting")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--on-bad-eeg", choices=ON_BAD_RECORDING, default="error",
        help="a test recording that cannot be read: 'error' names every such file before any model runs "
        "(default); 'prior' predicts the training label distribution for it and lists it in a warning",
    )
    cli.add_debug_option(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return cli.run(predict, parse_args(argv))


def predict(args) -> int:
    check_inputs(args)
    if args.ensemble and args.oof:
        scores = score_ensemble_file(args.ensemble, args.data_dir, batch_size=args.batch_size)
        recorded = scores.pop("recorded") or {}
        print(f"out-of-fold scores of {args.ensemble} (KL divergence, lower is better): "
              + ", ".join(f"{key} {value:.4f} (recorded {recorded.get(key, float('nan')):.4f})"
                          for key, value in scores.items()))
        return 0
    if args.oof:
        scores = score_out_of_fold(args.runs, args.data_dir)
        print("out-of-fold scores (KL divergence, lower is better; prior_* = class-prior baseline)")
        print(scores.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
        return 0
    ensemble = Ensemble.load(args.ensemble or args.runs)
    submission = ensemble.predict_test(args.data_dir, batch_size=args.batch_size, on_bad_recording=args.on_bad_eeg)
    out = Path(args.out)
    write_csv_atomically(submission, out)
    if args.ensemble:
        names = ", ".join(member["name"] for member in ensemble.members)
        print(f"wrote {out}: {len(submission)} EEGs, {args.ensemble} ({len(ensemble.models)} models of {names})")
    else:
        print(f"wrote {out}: {len(submission)} EEGs, ensemble of {len(ensemble.models)} {ensemble.recipe.name} models")
    return 0


def check_inputs(args) -> None:
    """The cheap checks, before any model is loaded or data is read: --batch-size, --out,
    --data-dir, and the run folders (their recipe.json files, one task, the data folder they
    recorded when --data-dir is not given), or the ensemble file and the runs it names."""
    if args.batch_size < 1:
        raise cli.UsageError(f"--batch-size {args.batch_size}: must be at least 1")
    if not args.oof:
        out = Path(args.out)
        folder = next(path for path in (out.absolute().parent, *out.absolute().parents) if path.exists())
        if out.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
            raise cli.UsageError(f"{out}: cannot write a submission file there; check --out")
    needed = "train.csv" if args.oof else "test.csv"
    if args.data_dir is not None:
        cli.check_data_dir(args.data_dir, needed)
    run_dirs, recipes = cli.check_source_runs(args.runs, args.ensemble)
    tasks = sorted({recipe.task for recipe in recipes})
    if len(tasks) > 1 and not args.ensemble:
        raise RunFolderError(f"{args.runs}: holds runs of different tasks {tasks}; give --runs one recipe's folder")
    if args.data_dir is None and recipes[0].data.data_dir is not None:
        recorded = run_dirs[0] / DESCRIPTION_FILE
        cli.check_data_dir(recipes[0].data.data_dir, needed, origin=f"data.data_dir in {recorded} (or pass --data-dir)")


def write_csv_atomically(frame, path: Path) -> None:
    """Write `frame` to `path` as CSV through a temporary file in the same folder, renamed into
    place when complete: a failed or interrupted write leaves no partial file, and an older
    file as it was."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")  # mkstemp's would be private (0600)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(temporary, index=False)
        os.replace(temporary, path)
    except OSError as error:
        raise cli.UsageError(f"{path}: cannot write the submission ({error}); check --out") from error
    finally:
        if temporary.exists():  # not unlink(missing_ok=True): that raises when path.parent is a file
            temporary.unlink()


if __name__ == "__main__":
    sys.exit(main())
