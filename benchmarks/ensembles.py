"""Out-of-fold scores of every ensemble method, with and without test-time augmentation, as the
README's table: the best single member, mean, grow, remove, weights and stack, each in-sample
(chosen and scored on the same rows) and nested (each fold scored by the choice made on the
other folds), so that the gain over the mean and the part of it that is selection optimism show.

    .venv/bin/python benchmarks/ensembles.py --runs runs/v5 runs/spec [--tta v5_eeg=-128,0,128 ...]

Test-time views not yet in the run folders are predicted first (slow on a CPU, kept for the next
call). Prints measurements only; it asserts nothing.
"""

import argparse
import dataclasses
import time

import hms_keras  # noqa: F401  first: hms_keras.runtime's settings
from hms_keras import ensembles
from recipes.ensemble import parse_tta


def rows_of(oof: ensembles.OutOfFold, label: str) -> list[str]:
    """Markdown table rows (label, method, CV in-sample / nested, all rows in-sample / nested)."""
    table = []
    for method in ensembles.METHODS:
        choice = ensembles.choose(oof, method)
        chosen, nested = choice.scores["chosen"], choice.scores["nested"] or choice.scores["chosen"]
        weights = ", ".join(f"{weight:.2f}" for weight in choice.selection.combination.weights)
        if method == "mean":
            best = choice.scores["best_single"]
            table.append(f"| {label} | best single ({best['member']}) | {best['cv']:.4f} | - | "
                         f"{best['kaggle_all_rows']:.4f} | - | - |")
        table.append(f"| {label} | {method} | {chosen['cv']:.4f} | {nested['cv']:.4f} | "
                     f"{chosen['kaggle_all_rows']:.4f} | {nested['kaggle_all_rows']:.4f} | {weights} |")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--unit", choices=ensembles.UNITS, default="seed")
    parser.add_argument("--tta", action="append", default=[], metavar="TASK=SHIFTS")
    args = parser.parse_args()
    started = time.perf_counter()
    members = ensembles.find_members(args.runs, unit=args.unit, tta=parse_tta(args.tta))
    plain = ensembles.build_out_of_fold([dataclasses.replace(member, tta=(0,)) for member in members])
    oofs = [("no TTA", plain)]
    if any(member.tta != (0,) for member in members):
        views = "; ".join(f"{task} {list(shifts)}" for task, shifts in parse_tta(args.tta).items())
        oofs.append((f"TTA {views}", ensembles.build_out_of_fold(members)))
    print(f"members: {', '.join(member.name for member in members)}; {len(plain.label_ids)} out-of-fold label rows, "
          f"folds {plain.fold_ids}, CV on {len(plain.eeg_truth)} EEGs ({len(plain.entries)} high-vote rows)\n")
    print("| views | method | CV in-sample | CV nested | all rows in-sample | all rows nested | weights |")
    print("|---|---|---|---|---|---|---|")
    for label, oof in oofs:
        print("\n".join(rows_of(oof, label)))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
