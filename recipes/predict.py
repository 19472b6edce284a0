"""Ensemble a recipe's trained models into submission.csv, or score them out of fold.

    python -m recipes.predict --runs runs/v5_eeg_cutmix_quick --out submission.csv
    python -m recipes.predict --runs runs/v5_eeg_cutmix --data-dir /data/hms --out submission.csv
    python -m recipes.predict --runs runs/v5_eeg_cutmix --oof

Every finished fold_<k>/seed_<s>/model.keras under --runs is loaded (compile=False, so models
trained under any Keras backend work); v5 models are averaged in logit space, spectrogram models
in probability space. The submission has test.csv's eeg_id order and rows that sum to 1.
"""

import argparse
import sys
from pathlib import Path

import hms_keras  # noqa: F401  first: applies hms_keras.runtime's settings while this process has one thread
from hms_keras.data.hms import HmsDataError
from hms_keras.inference import Ensemble, score_out_of_fold
from hms_keras.runs import RunFolderError


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m recipes.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", required=True, help="one recipe's run folder, e.g. runs/v5_eeg_cutmix")
    parser.add_argument("--data-dir", help="Kaggle-layout data folder (default: the data the models trained on)")
    parser.add_argument("--out", default="submission.csv", help="submission file to write (default: submission.csv)")
    parser.add_argument("--oof", action="store_true", help="score the out-of-fold predictions instead of predicting")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return predict(args)
    except (HmsDataError, RunFolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def predict(args) -> int:
    if args.oof:
        scores = score_out_of_fold(args.runs, args.data_dir)
        print("out-of-fold scores (KL divergence, lower is better; prior_* = class-prior baseline)")
        print(scores.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
        return 0
    ensemble = Ensemble.load(args.runs)
    submission = ensemble.predict_test(args.data_dir, batch_size=args.batch_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    submission.to_csv(out, index=False)
    print(f"wrote {out}: {len(submission)} EEGs, ensemble of {len(ensemble.models)} {ensemble.recipe.name} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
