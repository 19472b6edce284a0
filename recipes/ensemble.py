"""Choose an ensemble of several recipes' runs on their out-of-fold predictions and write it as
ensembles/<name>.json, with a plot of the score after every step (<name>.png) beside it.

    python -m recipes.ensemble --runs runs/v5_eeg_cutmix runs/spec_resnet34d --method weights --out ensembles/blend.json
    python -m recipes.ensemble --runs runs/v5_eeg_cutmix --method grow --tta v5_eeg=-128,0,128 --out ensembles/v5.json
    python -m recipes.predict --ensemble ensembles/blend.json --out submission.csv

A member is one recipe folder's fold models of one seed (--unit seed) or of all its seeds
(--unit recipe). Members are combined as log-probabilities (a weighted geometric mean of their
distributions; for v5 members the reference's logit mean) and scored by the high-vote per-EEG CV
over every out-of-fold EEG, with the Kaggle score over all out-of-fold rows beside it. Methods:
mean (every member, equal weights: the baseline), grow (from the best single member add the one
that helps most, repeats allowed), remove (from all, drop the one whose removal helps most),
weights (simplex weights by SLSQP), stack (class-wise weights and biases by L-BFGS-B). The nested
score re-chooses on the other folds for each fold, so in-sample minus nested is the selection's
optimism; for stack it is its cross-validated score. Details: hms_keras.ensembles.

Members must predict the same label rows in the same folds; the spectrogram recipe does on the v5
split only: python -m recipes.train --recipe spec_resnet34d --set data.fold_scheme=patient_group.
Test-time augmentation (--tta TASK=SHIFTS, e.g. v5_eeg=-128,0,128 moves the model's 512-frame
crop by 40 Hz frames; spectrogram=-8,0,8 moves the window by 2 s rows) is predicted out of fold by
the trained models here, once (kept in the run folders), and used at test time.
"""

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import hms_keras  # noqa: F401  first: applies hms_keras.runtime's settings while this process has one thread
from hms_keras import ensembles
from recipes import cli


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m recipes.ensemble", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="+", required=True, metavar="RECIPE_DIR",
                        help="recipe run folders, e.g. runs/v5_eeg_cutmix runs/spec_resnet34d")
    parser.add_argument("--method", choices=list(ensembles.METHODS), default="weights",
                        help="how members are chosen and weighted (default: weights)")
    parser.add_argument("--out", help="ensemble file to write (default: ensembles/<method>.json); the plot goes "
                        "beside it as <name>.png")
    parser.add_argument("--unit", choices=ensembles.UNITS, default="seed",
                        help="a member is one seed's fold models (default) or a whole recipe folder")
    parser.add_argument("--tta", action="append", default=[], metavar="TASK=SHIFTS",
                        help="test-time augmentation views of a task's members, e.g. v5_eeg=-128,0,128 (crop shift, "
                        "40 Hz frames) or spectrogram=-8,0,8 (window shift, 2 s rows); repeatable")
    parser.add_argument("--space", choices=ensembles.SPACES, default="log_probabilities",
                        help="where members are combined (default and only: log_probabilities)")
    parser.add_argument("--stack-l2", type=float, default=ensembles.STACK_L2,
                        help=f"stack: L2 penalty towards the mean (default {ensembles.STACK_L2})")
    parser.add_argument("--data-dir", help="Kaggle-layout data folder (default: the data the runs trained on)")
    parser.add_argument("--batch-size", type=int, default=32, help="for test-time augmentation predictions")
    cli.add_debug_option(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return cli.run(ensemble, parse_args(argv))


def parse_tta(assignments) -> dict[str, tuple[int, ...]]:
    """{task: shifts} from `TASK=SHIFTS` strings (shifts comma-separated integers)."""
    tta = {}
    for assignment in assignments:
        task, sep, text = assignment.partition("=")
        try:
            shifts = tuple(int(item) for item in text.split(",") if item.strip())
        except ValueError:
            shifts = ()
        if not sep or not task.strip() or not shifts:
            raise cli.UsageError(f"--tta {assignment!r}: expected TASK=SHIFTS, e.g. v5_eeg=-128,0,128")
        if task.strip() in tta:
            raise cli.UsageError(f"--tta: task {task.strip()!r} given more than once")
        tta[task.strip()] = shifts
    return tta


def check_inputs(args) -> Path:
    """The cheap checks before any prediction is read: --batch-size, --stack-l2, --out, --data-dir;
    returns the ensemble file's path."""
    if args.batch_size < 1:
        raise cli.UsageError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.stack_l2 < 0:
        raise cli.UsageError(f"--stack-l2 {args.stack_l2}: must be at least 0")
    out = Path(args.out or f"ensembles/{args.method}.json")
    if out.suffix != ".json":
        raise cli.UsageError(f"--out {out}: an ensemble file ends in .json")
    folder = next(path for path in (out.absolute().parent, *out.absolute().parents) if path.exists())
    if out.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise cli.UsageError(f"{out}: cannot write an ensemble file there; check --out")
    if args.data_dir is not None:
        cli.check_data_dir(args.data_dir, "train.csv")
    return out


def ensemble(args) -> int:
    out = check_inputs(args)
    tta = parse_tta(args.tta)
    members = ensembles.find_members(args.runs, unit=args.unit, tta=tta)
    for member in members:
        cli.check_run_recipe(member.runs[0])
    ensembles.check_members(members, args.space)
    oof = ensembles.build_out_of_fold(members, args.data_dir, batch_size=args.batch_size)
    options = {"l2": args.stack_l2} if args.method == "stack" else {}
    choice = ensembles.choose(oof, args.method, **options)
    without_tta = None
    if any(member.tta != (0,) for member in members):
        plain = ensembles.build_out_of_fold([dataclasses.replace(member, tta=(0,)) for member in members],
                                            args.data_dir, progress=False)
        combination = choice.selection.combination
        without_tta = {
            "chosen_without_tta": plain.scores(combination),
            "mean_without_tta": plain.scores(ensembles.Combination.from_weights(ensembles.uniform(len(members)))),
        }
    description = ensembles.ensemble_description(members, oof, choice, out, space=args.space, unit=args.unit,
                                                 without_tta=without_tta)
    ensembles.write_ensemble(out, description)
    plot = ensembles.plot_steps(description, out.with_suffix(".png"))
    print_report(description)
    print(f"\nwrote {out} and {plot}")
    return 0


def _score(scores: dict | None) -> str:
    return "-" if not scores else f"{scores['cv']:.4f} (all rows {scores['kaggle_all_rows']:.4f})"


def print_report(description: dict) -> None:
    """The members, the method's steps and the comparison with the mean, as plain tables."""
    import pandas as pd  # the tables only

    rows = description["rows"]
    print(f"\n{len(description['members'])} members, {rows['label_rows']} out-of-fold label rows of {rows['eegs']} "
          f"EEGs in folds {rows['folds']} ({rows['fold_scheme']}); CV on {rows['cv_eegs']} EEGs ({rows['cv_rows']} "
          "high-vote rows); KL divergence in nats, lower is better")
    scores = description["scores"]
    single = {member["name"]: member for member in scores["members"]}
    table = pd.DataFrame([{
        "member": member["name"], "task": member["task"], "seeds": ",".join(map(str, member["seeds"])),
        "tta": ",".join(map(str, member["tta"])), "cv": single[member["name"]]["cv"],
        "kaggle_all_rows": single[member["name"]]["kaggle_all_rows"], "weight": member["weight"],
    } for member in description["members"]])
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    print(f"\n{description['method']}: steps (scores in-sample, on the rows the choice was made on)")
    steps = pd.DataFrame(description["steps"]).drop(columns=["weights"])
    print(steps.fillna("").to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    chosen, nested, mean = scores["chosen"], scores["nested"], scores["mean"]
    print(f"\nmean of all members      {_score(mean)}")
    print(f"best single member       {_score(scores['best_single'])}  {scores['best_single']['member']}")
    print(f"{description['method']:<24} {_score(chosen)}  in-sample, {chosen['cv'] - mean['cv']:+.4f} vs mean")
    if nested:
        print(f"{description['method'] + ', nested':<24} {_score(nested)}  each fold scored by the choice made on "
              f"the other folds, {nested['cv'] - mean['cv']:+.4f} vs mean; optimism {nested['cv'] - chosen['cv']:.4f}")
    if chosen["cv"] > mean["cv"]:
        print(f"note: {description['method']} ended worse than the mean of all members on these rows (a greedy "
              "path can); --method weights is never worse than the mean in-sample")
    if "chosen_without_tta" in scores:
        print(f"without test-time views  {_score(scores['chosen_without_tta'])} (mean "
              f"{_score(scores['mean_without_tta'])})")


if __name__ == "__main__":
    sys.exit(main())
