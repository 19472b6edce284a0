"""Ensembles chosen on out-of-fold predictions: the runs of several recipes (raw EEG and
spectrogram), combined in one declared space, selected or weighted by the out-of-fold score, and
written as a self-describing JSON file that `recipes.predict --ensemble` and `Ensemble.load` use.

    python -m recipes.ensemble --runs runs/v5_eeg_cutmix runs/spec_resnet34d --method weights \\
        --out ensembles/blend.json

    members = find_members(["runs/v5_eeg_cutmix", "runs/spec_resnet34d"], unit="seed")
    oof = build_out_of_fold(members)          # the rows every member predicts, their targets
    result = choose(oof, "weights")           # combination, steps, nested score, baselines
    write_ensemble("ensembles/blend.json", members, oof, result)
    Blend.load("ensembles/blend.json").predict_test()

Members. A member is one recipe folder's fold models of one seed (unit "seed", the default) or
of all its seeds (unit "recipe": the seeds of a fold combined as the recipe's task combines them,
as `recipes.predict --runs` does). Either way a member predicts every out-of-fold row once, by
the fold model(s) that never saw it; at test time it is all its fold models combined by its
task. Members must predict the same label rows, assigned to the same folds, of the same data
(`check_members`); a spectrogram recipe does so only on the v5 split (`data.fold_scheme=
patient_group`, `tasks.spectrogram`).

Space (`SPACES`: "log_probabilities", the one space). A member's prediction of a row is a
distribution p_m (its own seeds and test-time views combined by its task: v5 logits averaged,
spectrogram probabilities averaged); members are combined as natural-log probabilities,

    ensemble = softmax(sum_m W[m] * log p_m + b)          (per class; W: (members, 6), b: (6,))

with W[m] = w_m for every class, w on the simplex and b = 0 for the weighted means (`mean`,
`grow`, `remove`, `weights`): a weighted geometric mean of the members' distributions. For v5
members log p = log_softmax(logits), so their mean is the reference's logit mean (v5 reference
§7); one member with weight 1 is that member exactly.

Score. The project's high-vote per-EEG CV (`metrics.high_vote_cv`, v5 reference §7) over the
out-of-fold EEGs of all folds pooled (each EEG weighs 1) on the v5 protocol's rows of each fold
(up to 3 per EEG, seed 123, kept when mean(weight, weight_per_eeg) >= 0.3), and beside it the
Kaggle score over every out-of-fold label row. Every method minimises the CV.

Methods (`METHODS`):
- mean: every member, equal weights: today's behaviour, the baseline.
- grow: from the best single member, repeatedly add the member (repeats allowed) that lowers the
  CV most; weights = how often each was added / the total; stop when no addition improves it.
- remove: from every member once, repeatedly drop the member whose removal lowers the CV most;
  stop when no removal improves it (one member stays at least).
- weights: w on the simplex minimising the CV, by SLSQP (`scipy.optimize.minimize`) with the
  analytic gradient. The CV is convex in w (per EEG a log-sum-exp of a linear function of w minus
  a linear term) and the constraints (w >= 0, sum 1) are linear, which SLSQP, a gradient-based
  method, handles directly, so it reaches the global optimum in a few tens of iterations. The
  reference's Nelder-Mead is derivative-free, needs the constraints folded into the objective
  and stalls beyond a few dimensions. The best iterate is kept, so the result is never worse
  than the mean it starts from.
- stack: a second-level model on the members' log-probabilities: W[m, c] >= 0 per member and
  class and a class bias b[c] (6 x members + 6 parameters; W = 1/members, b = 0 is the mean),
  fitted by L-BFGS-B on the CV objective plus an L2 penalty towards the mean (`STACK_L2`).

Optimism. Choosing on the rows that score the choice flatters it. `nested_scores` runs the method
once per fold on the other folds' rows only and scores that fold's rows with what it chose; the
in-sample score minus the nested one is the selection's optimism. For `stack` the nested score
is its cross-validated score (no row scored by a stacker that saw it), the figure to judge it by.

Test-time augmentation (`tta`: task name -> shifts, e.g. {"v5_eeg": (-128, 0, 128)}; units:
`Task.tta_unit`): every model of a member predicts every view, combined with the models by the
member's task. Views other than 0 are predicted out of fold here by the trained models (slow on
a CPU; kept in the run folders, `runs.oof_view_path`); the ensemble file records them and
`Blend` uses them at test time.
"""

import dataclasses
import datetime
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.optimize
from tqdm import tqdm

from hms_keras import constants, runs, sliding_windows
from hms_keras.data.labels import PROB_COLUMNS, PROB_PER_EEG_COLUMNS, sample_eval_rows, vote_targets
from hms_keras.metrics import (
    HIGH_VOTE_MIN_WEIGHT,
    LOGIT_COLUMNS,
    SUBMISSION_EPSILON,
    high_vote_cv,
    softmax,
    submission_frame,
)
from hms_keras.recipe import Recipe
from hms_keras.tasks import TASKS, task_for
from hms_keras.tasks.base import kaggle_score, logits_frame

FORMAT = "hms_keras.ensemble/1"  # the "format" of an ensemble file
SPACES = ("log_probabilities",)  # where members are combined (module docstring)
UNITS = ("seed", "recipe")  # what one member is
STACK_L2 = 0.01  # stack: L2 penalty on (W - 1/members) and b, added to the CV (nats)
TOLERANCE = 1e-6  # grow / remove: a step must lower the CV by more than this (nats)
MAX_STEPS = 100  # grow: additions at most
LOG_FLOOR = 1e-300  # a member's probability below this enters the log space as this


class EnsembleError(ValueError):
    """Members that cannot be ensembled, or an ensemble file that cannot be used; the message
    names the run folders or the file and the difference."""


# --- combinations ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Combination:
    """softmax(sum_m W[m] * log p_m + b): W (members, 6) float64, b (6,) float64."""

    W: np.ndarray
    b: np.ndarray

    @classmethod
    def from_weights(cls, weights) -> "Combination":
        """A weighted mean: (members,) weights, each used for every class, b = 0."""
        weights = np.asarray(weights, np.float64)  # (members,)
        return cls(np.repeat(weights[:, None], constants.NUM_CLASSES, axis=1), np.zeros(constants.NUM_CLASSES))

    @property
    def weights(self) -> np.ndarray:
        """(members,) the members' weights (the class mean of W; exact for weighted means)."""
        return self.W.mean(axis=1)

    def logits(self, log_probabilities: np.ndarray) -> np.ndarray:
        """(n, 6) ensemble logits of (members, n, 6) member log-probabilities."""
        return np.einsum("mc,mnc->nc", self.W, log_probabilities) + self.b


@dataclasses.dataclass
class Selection:
    """What a method chose: its combination and one record per step (`OutOfFold.record`)."""

    combination: Combination
    steps: list[dict]


# --- out-of-fold data --------------------------------------------------------------------------


def _kl_rows(truth: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """(n,) KL(truth || softmax(logits)) per row, the submission clipped as Kaggle clips it."""
    predicted = np.clip(softmax(logits), SUBMISSION_EPSILON, 1 - SUBMISSION_EPSILON)  # (n, 6)
    positive = truth > 0
    ratio = np.where(positive, truth, 1.0) / predicted  # (n, 6)
    return np.where(positive, truth * np.log(ratio), 0.0).sum(axis=1)


@dataclasses.dataclass
class OutOfFold:
    """The members' out-of-fold predictions of the same label rows, in the log space, with what
    scoring them needs. Rows are in train.csv order; "entries" are the CV protocol's kept rows.

    names: (members,) member names. label_ids, rows, eeg_ids, folds: (rows,) each (`rows` = the
    train.csv index, the row id of `targets`). log_probabilities: (members, rows, 6) float64.
    truth: (rows, 6) each row's vote distribution. targets: `labels.vote_targets` of train.csv.
    entries: (entries,) positions into the rows of the high-vote CV's kept sampled rows;
    entry_eegs: (entries,) their EEG's code; eeg_truth: (eegs, 6) each EEG's pooled vote
    distribution (all its rows); eeg_folds: (eegs,).
    """

    names: list[str]
    label_ids: np.ndarray
    rows: np.ndarray
    eeg_ids: np.ndarray
    folds: np.ndarray
    log_probabilities: np.ndarray
    truth: np.ndarray
    targets: pd.DataFrame
    entries: np.ndarray
    entry_eegs: np.ndarray
    eeg_truth: np.ndarray
    eeg_folds: np.ndarray

    @classmethod
    def from_frames(cls, names: Sequence[str], frames: Sequence[pd.DataFrame], targets: pd.DataFrame) -> "OutOfFold":
        """From one frame per member (index label_id; columns `fold` and `LOGIT_COLUMNS` holding
        log-probabilities), all of the same label rows and folds (`check_members`), and
        `labels.vote_targets` of the train.csv they come from (with a `label_id` column)."""
        position = pd.Series(np.arange(len(targets)), index=targets["label_id"].to_numpy())
        order = np.sort(position.loc[frames[0].index].to_numpy())  # (rows,) train.csv order
        chosen = targets.iloc[order]
        label_ids = chosen["label_id"].to_numpy()
        folds = frames[0].loc[label_ids, "fold"].to_numpy(np.int64)  # (rows,)
        log_probabilities = np.stack([frame.loc[label_ids, list(LOGIT_COLUMNS)].to_numpy(np.float64)
                                      for frame in frames])  # (members, rows, 6)
        # the v5 CV protocol's rows, drawn per fold from the fold's rows in train.csv order
        sampled = [sample_eval_rows(chosen[folds == fold].drop(columns=["row"], errors="ignore"))
                   for fold in np.unique(folds)]
        sampled = pd.concat(sampled, ignore_index=True)
        mean_weight = (sampled["weight"].to_numpy() + sampled["weight_per_eeg"].to_numpy()) / 2  # (sampled,)
        kept = sampled[mean_weight >= HIGH_VOTE_MIN_WEIGHT]
        entries = pd.Series(np.arange(len(chosen)), index=chosen.index).loc[kept["row"]].to_numpy()  # (entries,)
        entry_eegs = pd.factorize(kept["eeg_id"])[0]  # (entries,) EEG codes 0..eegs-1
        first_rows = entries[np.unique(entry_eegs, return_index=True)[1]]  # (eegs,) each EEG's first entry
        return cls(
            names=list(names),
            label_ids=label_ids,
            rows=chosen.index.to_numpy(),
            eeg_ids=chosen["eeg_id"].to_numpy(),
            folds=folds,
            log_probabilities=log_probabilities,
            truth=chosen[list(PROB_COLUMNS)].to_numpy(np.float64),
            targets=targets,
            entries=entries,
            entry_eegs=entry_eegs,
            eeg_truth=chosen.iloc[first_rows][list(PROB_PER_EEG_COLUMNS)].to_numpy(np.float64),
            eeg_folds=folds[first_rows],
        )

    @property
    def fold_ids(self) -> list[int]:
        return sorted(int(fold) for fold in np.unique(self.folds))

    def pool(self, values: np.ndarray) -> np.ndarray:
        """(..., eegs, 6): the mean over each EEG's entries of (..., rows, 6) per-row values."""
        sums = np.zeros((*values.shape[:-2], len(self.eeg_truth), values.shape[-1]))
        np.add.at(sums, (..., self.entry_eegs, slice(None)), values[..., self.entries, :])
        return sums / np.bincount(self.entry_eegs)[:, None]

    @property
    def pooled(self) -> np.ndarray:
        """(members, eegs, 6) each member's log-probabilities pooled per EEG over its entries."""
        if not hasattr(self, "_pooled"):
            self._pooled = self.pool(self.log_probabilities)
        return self._pooled

    def subset(self, folds: Sequence[int]) -> "OutOfFold":
        """The same members on the rows (and EEGs) of `folds` only; each fold keeps its sample."""
        keep = np.isin(self.folds, list(folds))  # (rows,)
        new_position = np.cumsum(keep) - 1  # (rows,)
        kept_entries = keep[self.entries]  # (entries,)
        kept_eegs = np.isin(self.eeg_folds, list(folds))  # (eegs,)
        new_eeg = np.cumsum(kept_eegs) - 1  # (eegs,)
        return dataclasses.replace(
            self,
            label_ids=self.label_ids[keep],
            rows=self.rows[keep],
            eeg_ids=self.eeg_ids[keep],
            folds=self.folds[keep],
            log_probabilities=self.log_probabilities[:, keep],
            truth=self.truth[keep],
            entries=new_position[self.entries[kept_entries]],
            entry_eegs=new_eeg[self.entry_eegs[kept_entries]],
            eeg_truth=self.eeg_truth[kept_eegs],
            eeg_folds=self.eeg_folds[kept_eegs],
        )

    def members(self, keep: Sequence[int]) -> "OutOfFold":
        """The members at positions `keep` only, on the same rows."""
        keep = list(keep)
        return dataclasses.replace(
            self, names=[self.names[m] for m in keep], log_probabilities=self.log_probabilities[keep]
        )

    # --- scores ---------------------------------------------------------------------------------

    def scores_of_logits(self, logits: np.ndarray) -> dict[str, float]:
        """{"cv", "kaggle_all_rows"} of (rows, 6) ensemble logits (any per-row logits)."""
        return {
            "cv": float(_kl_rows(self.eeg_truth, self.pool(logits)).mean()),
            "kaggle_all_rows": float(_kl_rows(self.truth, logits).mean()),
        }

    def scores(self, combination: Combination) -> dict[str, float]:
        """{"cv", "kaggle_all_rows"} of a combination of the members."""
        return self.scores_of_logits(combination.logits(self.log_probabilities))

    def exact_scores(self, logits: np.ndarray) -> dict[str, float]:
        """`scores_of_logits` through the project's own metric functions (`metrics.high_vote_cv`
        on the sampled rows, `kaggle_kl_score` over all rows); slower, the same numbers."""
        row_logits = logits_frame(pd.DataFrame({"eeg_id": self.eeg_ids, "row": self.rows}), logits)
        sampled = self.entries  # the kept rows; high_vote_cv filters the same rows again
        return {
            "cv": high_vote_cv(self.targets, row_logits.iloc[sampled]),
            "kaggle_all_rows": kaggle_score(self.label_ids, self.truth, softmax(logits), "label_id"),
        }

    def cv(self, combination: Combination) -> float:
        """The high-vote CV of a combination (fast: on the pooled member log-probabilities)."""
        logits = np.einsum("mc,mec->ec", combination.W, self.pooled) + combination.b  # (eegs, 6)
        return float(_kl_rows(self.eeg_truth, logits).mean())

    def cv_gradients(self, combination: Combination) -> tuple[float, np.ndarray, np.ndarray]:
        """(CV, dCV/dW (members, 6), dCV/db (6,)): KL(t || softmax(z)) has gradient softmax(z) - t
        in z (the submission clipping, active below 1e-15, is ignored)."""
        logits = np.einsum("mc,mec->ec", combination.W, self.pooled) + combination.b  # (eegs, 6)
        residual = (softmax(logits) - self.eeg_truth) / len(self.eeg_truth)  # (eegs, 6)
        gradient_W = np.einsum("ec,mec->mc", residual, self.pooled)  # (members, 6)
        return float(_kl_rows(self.eeg_truth, logits).mean()), gradient_W, residual.sum(axis=0)

    def record(self, step: int, action: str, combination: Combination, member: str | None = None) -> dict:
        """One step of a method: its number, what it did, the member concerned, the weights and
        the scores after it."""
        weights = combination.weights
        return {
            "step": step,
            "action": action,
            "member": member,
            "members": int((np.abs(combination.W).sum(axis=1) > 1e-9).sum()),
            "weights": [round(float(weight), 6) for weight in weights],
            **self.scores(combination),
        }


# --- methods -----------------------------------------------------------------------------------


def uniform(count: int) -> np.ndarray:
    return np.full(count, 1.0 / count)


def mean_method(oof: OutOfFold) -> Selection:
    """Every member with weight 1 / members."""
    combination = Combination.from_weights(uniform(len(oof.names)))
    return Selection(combination, [oof.record(0, "mean of all", combination)])


def grow_method(oof: OutOfFold, max_steps: int = MAX_STEPS) -> Selection:
    """Forward selection with replacement from the best single member (module docstring)."""
    count = len(oof.names)
    single = [oof.cv(Combination.from_weights(np.eye(count)[m])) for m in range(count)]
    counts = np.eye(count)[int(np.argmin(single))]  # (members,) times each was added
    current = min(single)
    steps = [oof.record(0, "start", Combination.from_weights(counts), oof.names[int(np.argmin(single))])]
    while len(steps) <= max_steps:
        trials = [oof.cv(Combination.from_weights((counts + np.eye(count)[m]) / (counts.sum() + 1)))
                  for m in range(count)]
        best = int(np.argmin(trials))
        if trials[best] >= current - TOLERANCE:
            break
        counts, current = counts + np.eye(count)[best], trials[best]
        steps.append(oof.record(len(steps), "add", Combination.from_weights(counts / counts.sum()), oof.names[best]))
    return Selection(Combination.from_weights(counts / counts.sum()), steps)


def remove_method(oof: OutOfFold) -> Selection:
    """Backward elimination from every member once (module docstring)."""
    count = len(oof.names)
    kept = np.ones(count)  # (members,) 1 = in the ensemble
    current = oof.cv(Combination.from_weights(kept / count))
    steps = [oof.record(0, "start: all", Combination.from_weights(kept / count))]
    while kept.sum() > 1:
        candidates = np.flatnonzero(kept)
        trials = [oof.cv(Combination.from_weights((kept - np.eye(count)[m]) / (kept.sum() - 1))) for m in candidates]
        best = int(np.argmin(trials))
        if trials[best] >= current - TOLERANCE:
            break
        kept, current = kept - np.eye(count)[candidates[best]], trials[best]
        steps.append(
            oof.record(len(steps), "remove", Combination.from_weights(kept / kept.sum()), oof.names[candidates[best]])
        )
    return Selection(Combination.from_weights(kept / kept.sum()), steps)


def weights_method(oof: OutOfFold, max_iterations: int = 200) -> Selection:
    """Simplex weights minimising the CV by SLSQP, from the mean (module docstring)."""
    count = len(oof.names)
    start = uniform(count)
    iterates = [start]

    def objective(weights):
        value, gradient_W, _ = oof.cv_gradients(Combination.from_weights(weights))
        return value, gradient_W.sum(axis=1)  # every class uses the member's one weight

    if count > 1:
        result = scipy.optimize.minimize(
            objective,
            start,
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * count,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
            callback=lambda weights: iterates.append(np.array(weights)),
            options={"maxiter": max_iterations, "ftol": 1e-12},
        )
        if not np.array_equal(result.x, iterates[-1]):
            iterates.append(result.x)
    iterates = [np.clip(weights, 0.0, None) / np.clip(weights, 0.0, None).sum() for weights in iterates]
    steps = [oof.record(0, "start: mean", Combination.from_weights(start))]
    steps += [oof.record(k, "SLSQP iteration", Combination.from_weights(w)) for k, w in enumerate(iterates[1:], 1)]
    best = min(range(len(iterates)), key=lambda k: (steps[k]["cv"], k))
    if best != len(steps) - 1:
        steps.append(oof.record(len(steps), f"best: iteration {best}", Combination.from_weights(iterates[best])))
    return Selection(Combination.from_weights(iterates[best]), steps)


def stack_method(oof: OutOfFold, l2: float = STACK_L2, max_iterations: int = 500) -> Selection:
    """Class-wise member weights W >= 0 and class biases b by L-BFGS-B on the CV plus
    l2 * (|W - 1/members|^2 + |b|^2) (module docstring)."""
    count, classes = len(oof.names), constants.NUM_CLASSES
    centre = np.full((count, classes), 1.0 / count)  # (members, 6) the mean

    def unpack(parameters):
        return Combination(parameters[: count * classes].reshape(count, classes), parameters[count * classes :])

    def objective(parameters):
        combination = unpack(parameters)
        value, gradient_W, gradient_b = oof.cv_gradients(combination)
        value += l2 * (np.sum((combination.W - centre) ** 2) + np.sum(combination.b**2))
        gradient = np.concatenate([(gradient_W + 2 * l2 * (combination.W - centre)).ravel(),
                                   gradient_b + 2 * l2 * combination.b])
        return value, gradient

    start = np.concatenate([centre.ravel(), np.zeros(classes)])
    result = scipy.optimize.minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * (count * classes) + [(None, None)] * classes,
        options={"maxiter": max_iterations},
    )
    fitted = unpack(result.x)
    steps = [oof.record(0, "start: mean", unpack(start)),
             oof.record(1, f"stacker fitted (L-BFGS-B, {result.nit} iterations)", fitted)]
    return Selection(fitted, steps)


METHODS: dict[str, Callable[..., Selection]] = {
    "mean": mean_method,
    "grow": grow_method,
    "remove": remove_method,
    "weights": weights_method,
    "stack": stack_method,
}


def nested_scores(oof: OutOfFold, method: str, **options) -> dict[str, float] | None:
    """Out-of-sample scores of `method`: each fold's rows scored by the combination the method
    chose on the other folds' rows (None with a single fold)."""
    folds = oof.fold_ids
    if len(folds) < 2:
        return None
    logits = np.empty(oof.truth.shape)  # (rows, 6)
    for fold in folds:
        chosen = METHODS[method](oof.subset([other for other in folds if other != fold]), **options).combination
        in_fold = oof.folds == fold
        logits[in_fold] = chosen.logits(oof.log_probabilities[:, in_fold])
    return oof.scores_of_logits(logits)


@dataclasses.dataclass
class Choice:
    """The result of `choose`: the method's selection and the figures it is judged by."""

    method: str
    selection: Selection
    scores: dict  # chosen, nested, mean, best_single (+ member), members: [{name, cv, kaggle_all_rows}]
    options: dict


def choose(oof: OutOfFold, method: str, **options) -> Choice:
    """Run `method` (a key of METHODS) on all out-of-fold rows and gather its scores: the chosen
    combination's (in-sample), the nested (out-of-sample) ones, the mean's and each member's."""
    if method not in METHODS:
        raise EnsembleError(f"unknown method {method!r}; choose from {list(METHODS)}")
    selection = METHODS[method](oof, **options)
    count = len(oof.names)
    single = [{"name": name, **oof.scores(Combination.from_weights(np.eye(count)[m]))}
              for m, name in enumerate(oof.names)]
    best = min(single, key=lambda member: member["cv"])
    scores = {
        "chosen": oof.exact_scores(selection.combination.logits(oof.log_probabilities)),
        "nested": nested_scores(oof, method, **options),
        "mean": oof.scores(Combination.from_weights(uniform(count))),
        "best_single": {"member": best["name"], "cv": best["cv"], "kaggle_all_rows": best["kaggle_all_rows"]},
        "members": single,
    }
    return Choice(method, selection, scores, dict(options))


# --- members -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Member:
    """One ensemble member: the fold models of one recipe folder with `seeds`.

    runs: the fold_<k>/seed_<s> folders, sorted by (fold, seed); recipe: the first run's recipe;
    tta: the test-time augmentation shifts its models predict (0 = unaugmented)."""

    name: str
    recipe_dir: Path
    runs: tuple[Path, ...]
    recipe: Recipe
    folds: tuple[int, ...]
    seeds: tuple[int, ...]
    tta: tuple[int, ...] = (0,)

    @property
    def task(self) -> str:
        return self.recipe.task


def _effective_fold_scheme(recipe: Recipe) -> str:
    """The recipe's fold scheme, or its task's own when it names none."""
    return recipe.data.fold_scheme or TASKS[recipe.task].default_fold_scheme


def find_members(recipe_dirs: Sequence, unit: str = "seed", tta: dict | None = None) -> list[Member]:
    """The members in `recipe_dirs` (recipe folders such as runs/v5_eeg_cutmix): one per seed
    (unit "seed") or one per folder (unit "recipe"), from the finished runs that hold
    out-of-fold predictions. tta: {task name: shifts} for that task's members (default: none).

    Raises EnsembleError for an unknown unit, a task in `tta` no member has, shifts a task cannot
    predict, a seed without a run for every fold of its folder, or two folders given twice;
    RunFolderError for a folder without such runs.
    """
    if unit not in UNITS:
        raise EnsembleError(f"unknown member unit {unit!r}; choose from {list(UNITS)}")
    tta = {task: tuple(shifts) for task, shifts in (tta or {}).items()}
    resolved = [Path(recipe_dir).resolve() for recipe_dir in recipe_dirs]
    repeated = {str(path) for path in resolved if resolved.count(path) > 1}
    if repeated:
        raise EnsembleError(f"recipe folders given more than once: {sorted(repeated)}")
    names = [Path(recipe_dir).name for recipe_dir in recipe_dirs]
    members = []
    for recipe_dir, name in zip(recipe_dirs, names, strict=True):
        label = name if names.count(name) == 1 else str(recipe_dir)
        by_fold = runs.oof_runs_by_fold(recipe_dir)
        described = {run: runs.read_description(run) for paths in by_fold.values() for run in paths}
        unscored = [run for run in runs.finished_runs(recipe_dir) if run not in described]
        if unscored:
            warnings.warn(f"{len(unscored)} finished run(s) without out-of-fold predictions cannot be members: "
                          + ", ".join(str(run) for run in unscored), stacklevel=2)
        tasks = {description["recipe"].task for description in described.values()}
        if len(tasks) > 1:
            raise EnsembleError(f"{recipe_dir}: holds runs of different tasks {sorted(tasks)}")
        groups = {None: list(described)} if unit == "recipe" else {}
        if unit == "seed":
            for run, description in described.items():
                groups.setdefault(description["seed"], []).append(run)
        for seed, group in sorted(groups.items(), key=lambda item: -1 if item[0] is None else item[0]):
            folds = tuple(sorted({described[run]["fold"] for run in group}))
            if folds != tuple(by_fold):
                raise EnsembleError(
                    f"{recipe_dir}: seed {seed} has out-of-fold runs of folds {list(folds)} but the folder has folds "
                    f"{list(by_fold)}; train the missing ones (recipes.train --seeds {seed}) or use unit 'recipe'"
                )
            recipe = described[group[0]]["recipe"]
            members.append(Member(
                name=label if seed is None else f"{label}/seed_{seed}",
                recipe_dir=Path(recipe_dir),
                runs=tuple(sorted(group, key=lambda run: (described[run]["fold"], described[run]["seed"]))),
                recipe=recipe,
                folds=folds,
                seeds=tuple(sorted({described[run]["seed"] for run in group})),
                tta=tta.get(recipe.task, (0,)),
            ))
    unknown = set(tta) - {member.task for member in members}
    if unknown:
        raise EnsembleError(f"test-time augmentation for task(s) {sorted(unknown)}, which no member has "
                            f"(members' tasks: {sorted({member.task for member in members})})")
    for member in members:
        try:
            task_for(member.recipe).check_tta(member.tta)
        except ValueError as error:
            raise EnsembleError(f"{member.name}: {error}") from None
    return members


def _data_source(recipe: Recipe) -> dict:
    """What identifies the data a recipe trained on."""
    data = recipe.data
    if data.data_dir is not None:
        return {"data.data_dir": str(Path(data.data_dir).expanduser().resolve())}
    return {"data.data_dir": None, "data.synthetic_eegs": data.synthetic_eegs,
            "data.synthetic_seed": data.synthetic_seed}


def check_members(members: Sequence[Member], space: str | None = "log_probabilities") -> None:
    """Raise EnsembleError unless the members can be ensembled before their predictions are
    read: at least one, a known blend space (required when their tasks differ), the same data
    and fold count."""
    if not members:
        raise EnsembleError("no members to ensemble")
    tasks = sorted({member.task for member in members})
    if space is None and len(tasks) > 1:
        raise EnsembleError(f"members of different tasks {tasks} need a declared blend space; one of {list(SPACES)}")
    if space is not None and space not in SPACES:
        raise EnsembleError(f"unknown blend space {space!r}; choose from {list(SPACES)}")
    first = members[0]
    for member in members[1:]:
        ours, theirs = _data_source(first.recipe), _data_source(member.recipe)
        if ours != theirs:
            differences = ", ".join(f"{key} {theirs.get(key)!r} vs {ours.get(key)!r}"
                                    for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key))
            raise EnsembleError(f"{member.recipe_dir} was trained on other data than {first.recipe_dir} "
                                f"({differences}); members must predict the same label rows")
        if member.recipe.data.n_folds != first.recipe.data.n_folds:
            raise EnsembleError(
                f"{member.recipe_dir} splits the data into {member.recipe.data.n_folds} folds, {first.recipe_dir} into "
                f"{first.recipe.data.n_folds} (data.n_folds); members must share their folds"
            )


def _check_rows(members: Sequence[Member], frames: Sequence[pd.DataFrame]) -> None:
    """Raise EnsembleError naming the difference unless every member predicts the same label
    rows out of fold, each row in the same fold."""
    first, reference = members[0], frames[0]
    hint = ("the spectrogram recipe predicts every label row of its EEGs only on the v5 split: "
            "train it with --set data.fold_scheme=patient_group")
    for member, frame in zip(members[1:], frames[1:], strict=True):
        if member.folds != first.folds:
            raise EnsembleError(f"{member.name} has out-of-fold runs of folds {list(member.folds)}, {first.name} of "
                                f"{list(first.folds)}; members must cover the same folds")
        missing, extra = reference.index.difference(frame.index), frame.index.difference(reference.index)
        if len(missing) or len(extra):
            example = f"label_id {missing[0]}" if len(missing) else f"label_id {extra[0]}"
            raise EnsembleError(
                f"{member.name} ({member.recipe_dir}) predicts {len(frame)} label rows out of fold, {first.name} "
                f"({first.recipe_dir}) {len(reference)}: {len(missing)} of {first.name}'s rows are missing and "
                f"{len(extra)} are extra (e.g. {example}); members must predict the same rows ({hint})"
            )
        folds = frame.loc[reference.index, "fold"].to_numpy()
        differ = folds != reference["fold"].to_numpy()
        if differ.any():
            row = int(np.argmax(differ))
            schemes = (_effective_fold_scheme(member.recipe), _effective_fold_scheme(first.recipe))
            why = (f"their fold schemes are {schemes[0]!r} and {schemes[1]!r} (data.fold_scheme); retrain one with the "
                   "other's" if schemes[0] != schemes[1] else
                   f"both use fold scheme {schemes[0]!r}, so their runs' recorded folds disagree (a renamed or copied "
                   "run folder?)")
            raise EnsembleError(
                f"{member.name} ({member.recipe_dir}) and {first.name} ({first.recipe_dir}) put {int(differ.sum())} of "
                f"{len(differ)} label rows into different folds (e.g. label_id {reference.index[row]}: fold "
                f"{folds[row]} vs {reference['fold'].iloc[row]}); {why}"
            )


def _oof_view(run: Path, task, fold: int, shift: int, batch_size: int, model_cache: dict) -> pd.DataFrame:
    """A run's out-of-fold logits under test-time augmentation shift `shift`: read from the run
    folder, or predicted by its model (loaded once into `model_cache`) and kept there."""
    path = runs.oof_view_path(run, shift)
    if path.is_file():
        return pd.read_parquet(path)
    if run not in model_cache:
        model_cache.clear()  # one model in memory at a time
        model_cache[run] = runs.load_model(run)
    frame = task.predict_validation(model_cache[run], fold, batch_size=batch_size, shift=shift)
    runs.write_oof_view(run, shift, frame)
    return frame


def member_log_probabilities(
    member: Member, task, *, batch_size: int = 32, progress: tqdm | None = None
) -> pd.DataFrame:
    """The member's out-of-fold log-probabilities: index label_id, columns `fold` and
    LOGIT_COLUMNS (natural-log probabilities): per fold, the member's runs (seeds) x views
    combined by its task (`Task.log_probabilities`)."""
    by_fold: dict[int, list[pd.DataFrame]] = {}
    model_cache: dict = {}
    for run in member.runs:
        fold = runs.read_description(run)["fold"]
        for shift in member.tta:
            frame = _oof_view(run, task, fold, shift, batch_size, model_cache)
            by_fold.setdefault(fold, []).append(frame.set_index("label_id")[list(LOGIT_COLUMNS)])
            if progress is not None:
                progress.update()
    combined = []
    for fold, frames in by_fold.items():
        label_ids = frames[0].index
        for frame in frames[1:]:
            if not frame.index.sort_values().equals(label_ids.sort_values()):
                raise EnsembleError(f"{member.name}: the runs of fold {fold} predict different label rows")
        logits = np.stack([frame.loc[label_ids].to_numpy(np.float64) for frame in frames])  # (views, rows, 6)
        log_probabilities = task.log_probabilities(logits)  # (rows, 6)
        combined.append(pd.DataFrame(log_probabilities, index=label_ids, columns=list(LOGIT_COLUMNS)).assign(fold=fold))
    return pd.concat(combined)


def build_out_of_fold(
    members: Sequence[Member], data_dir=None, *, batch_size: int = 32, progress: bool = True
) -> OutOfFold:
    """The members' out-of-fold predictions as an OutOfFold, after `check_members` and
    `_check_rows` (EnsembleError naming the difference). Test-time augmentation views not yet in
    the run folders are predicted here by the models (a progress bar counts run x view)."""
    check_members(members)
    tasks = [task_for(member.recipe, data_dir) for member in members]
    to_predict = sum(not runs.oof_view_path(run, shift).is_file() for member in members
                     for run in member.runs for shift in member.tta)
    total = sum(len(member.runs) * len(member.tta) for member in members)
    bar = tqdm(total=total, desc=f"out-of-fold predictions ({to_predict} to predict)", unit="run x view",
               disable=not progress or to_predict == 0)
    with bar:
        frames = [member_log_probabilities(member, task, batch_size=batch_size, progress=bar)
                  for member, task in zip(members, tasks, strict=True)]
    _check_rows(members, frames)
    targets = vote_targets(tasks[0].train_df)
    unknown = frames[0].index.difference(pd.Index(targets["label_id"]))
    if len(unknown):
        raise EnsembleError(f"{members[0].name}: {len(unknown)} out-of-fold label_id(s) are not in "
                            f"{tasks[0].layout.train_csv} (e.g. {unknown[0]}): the runs were trained on other data")
    return OutOfFold.from_frames([member.name for member in members], frames, targets)


# --- the ensemble file -------------------------------------------------------------------------
#
# ensembles/<name>.json (FORMAT), paths relative to the file's folder:
#   format, name, created, versions
#   method, options, space ("log_probabilities"), unit ("seed" | "recipe"), tta {task: [shifts]}
#   members: [{name, task, recipe, recipe_dir, runs: [fold_<k>/seed_<s> folders], folds, seeds,
#              tta: [shifts], weight (mean of its class weights), class_weights: [6]}]
#   bias: [6]                       b of the combination (zeros except for "stack")
#   rows: {label_rows, eegs, cv_eegs, cv_rows, folds, label_rows_per_fold, fold_scheme, data}
#   steps: [{step, action, member, members, weights: [per member], cv, kaggle_all_rows}]
#   scores: {chosen, nested, mean, best_single, members, [chosen_without_tta, mean_without_tta]}


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to `folder` (POSIX separators), so the file survives moving the project."""
    return Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix()


def ensemble_description(members: Sequence[Member], oof: OutOfFold, choice: Choice, path: Path,
                         *, space: str = "log_probabilities", unit: str = "seed",
                         without_tta: dict | None = None) -> dict:
    """The JSON object of an ensemble file at `path` (module comment above). without_tta: the
    chosen combination's and the mean's scores on the members' unaugmented predictions, when
    the members use test-time augmentation."""
    folder = Path(path).parent
    combination = choice.selection.combination
    scheme = {_effective_fold_scheme(member.recipe) for member in members}
    return {
        "format": FORMAT,
        "name": Path(path).stem,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": runs.software_versions(),
        "method": choice.method,
        "options": choice.options,
        "space": space,
        "unit": unit,
        "tta": {member.task: list(member.tta) for member in members},
        "members": [
            {
                "name": member.name,
                "task": member.task,
                "recipe": member.recipe.name,
                "recipe_dir": _relative(member.recipe_dir, folder),
                "runs": [_relative(run, folder) for run in member.runs],
                "folds": list(member.folds),
                "seeds": list(member.seeds),
                "tta": list(member.tta),
                "weight": round(float(combination.W[m].mean()), 8),
                "class_weights": [round(float(value), 8) for value in combination.W[m]],
            }
            for m, member in enumerate(members)
        ],
        "bias": [round(float(value), 8) for value in combination.b],
        "rows": {
            "label_rows": len(oof.label_ids),
            "eegs": int(pd.unique(oof.eeg_ids).size),
            "cv_eegs": len(oof.eeg_truth),
            "cv_rows": len(oof.entries),
            "folds": oof.fold_ids,
            "label_rows_per_fold": {str(fold): int((oof.folds == fold).sum()) for fold in oof.fold_ids},
            "fold_scheme": sorted(scheme)[0] if len(scheme) == 1 else sorted(scheme),
            "data": _data_source(members[0].recipe),
        },
        "steps": choice.selection.steps,
        "scores": {**choice.scores, **(without_tta or {})},
    }


def write_ensemble(path, description: dict) -> Path:
    """Write an ensemble file (through a temporary file renamed into place: a failed write
    leaves no partial file and an older file as it was); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        temporary.write_text(json.dumps(description, indent=2) + "\n")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def plot_steps(description: dict, path) -> Path:
    """A PNG of the out-of-fold scores after every step of an ensemble file's method (CV and the
    all-rows Kaggle score), with the mean's and the best single member's CV and the nested CV
    as reference lines; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    steps, scores = description["steps"], description["scores"]
    figure, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.5 * len(steps) + 3), 6.5), sharex=True)
    x = [step["step"] for step in steps]
    labels = [f"{step['action']}\n{step['member'] or ''}".strip() for step in steps]
    for axis, key, title in ((axes[0], "cv", "high-vote per-EEG CV"), (axes[1], "kaggle_all_rows", "Kaggle, all rows")):
        axis.plot(x, [step[key] for step in steps], marker="o", label=f"{description['method']} (in-sample)")
        axis.axhline(scores["mean"][key], color="grey", linestyle="--", label=f"mean {scores['mean'][key]:.4f}")
        axis.axhline(scores["best_single"][key], color="tab:red", linestyle=":",
                     label=f"best single {scores['best_single'][key]:.4f}")
        if scores.get("nested"):
            axis.axhline(scores["nested"][key], color="tab:green", linestyle="-.",
                         label=f"nested {scores['nested'][key]:.4f}")
        axis.set_ylabel(f"{title} (nats)")
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    axes[1].set_xticks(x, labels, rotation=60, ha="right", fontsize="x-small")
    axes[1].set_xlabel("step (members in the ensemble: " + ", ".join(str(step["members"]) for step in steps) + ")")
    axes[0].set_title(f"{description['name']}: {description['method']} over {len(description['members'])} members, "
                      f"{description['rows']['cv_eegs']} CV EEGs")
    figure.tight_layout()
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.partial.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)
    return path


def _file_error(path: Path, problem: str) -> EnsembleError:
    return EnsembleError(f"{path}: {problem}")


def read_ensemble(path) -> dict:
    """An ensemble file's JSON object, its paths resolved against the file's folder, after the
    checks that need no model: FORMAT, a known method and space (declared when the members'
    tasks differ), members whose runs are finished run folders of the recorded task, on the same
    data. Raises EnsembleError naming the file and the problem."""
    path = Path(path)
    try:
        description = json.loads(path.read_text())
    except FileNotFoundError:
        raise _file_error(path, "ensemble file not found") from None
    except (OSError, ValueError) as error:
        raise _file_error(path, f"not a readable JSON ensemble file ({error})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise _file_error(path, f"not an ensemble file (its \"format\" must be {FORMAT!r})")
    members = description.get("members")
    if not isinstance(members, list) or not members:
        raise _file_error(path, "lists no members")
    if description.get("method") not in METHODS:
        raise _file_error(path, f"unknown method {description.get('method')!r}; one of {list(METHODS)}")
    tasks = sorted({str(member.get("task")) for member in members})
    space = description.get("space")
    if space is None and len(tasks) > 1:
        raise _file_error(path, f"members of different tasks {tasks} and no declared blend space (\"space\": one of "
                                f"{list(SPACES)})")
    if space is not None and space not in SPACES:
        raise _file_error(path, f"unknown blend space {space!r}; one of {list(SPACES)}")
    folder = path.parent
    recipes = []
    for number, member in enumerate(members):
        name = member.get("name", f"#{number}")
        try:
            member_runs = [folder / run for run in member["runs"]]
            weights = np.asarray(member.get("class_weights") or [member["weight"]] * constants.NUM_CLASSES, np.float64)
            tta = tuple(int(shift) for shift in member.get("tta", [0]))
        except (KeyError, TypeError, ValueError) as error:
            raise _file_error(path, f"member {name}: malformed ({type(error).__name__}: {error})") from None
        if weights.shape != (constants.NUM_CLASSES,) or not np.isfinite(weights).all():
            raise _file_error(path, f"member {name}: weights must be {constants.NUM_CLASSES} finite numbers")
        for run in member_runs:
            if not runs.is_finished(run):
                problem = "folder not found" if not run.is_dir() else "not a finished run (model.keras, recipe.json)"
                raise _file_error(path, f"member {name} names the run {run}: {problem}")
        recipe = runs.read_description(member_runs[0])["recipe"]
        if recipe.task != member.get("task"):
            raise _file_error(path, f"member {name}: {member_runs[0]} is a {recipe.task!r} run, the file says "
                                    f"{member.get('task')!r}")
        member.update(runs=member_runs, class_weights=weights, tta=tta, recipe_object=recipe)
        recipes.append((name, recipe))
    first_name, first = recipes[0]
    for name, recipe in recipes[1:]:
        if _data_source(recipe) != _data_source(first):
            raise _file_error(path, f"member {name} was trained on other data ({_data_source(recipe)}) than "
                                    f"{first_name} ({_data_source(first)})")
    bias = np.asarray(description.get("bias") or np.zeros(constants.NUM_CLASSES), np.float64)
    if bias.shape != (constants.NUM_CLASSES,):
        raise _file_error(path, f"\"bias\" must hold {constants.NUM_CLASSES} numbers")
    description["bias"] = bias
    description["path"] = path
    return description


class Blend:
    """The ensemble an ensemble file describes: its members' models loaded once (members of
    weight 0 are not loaded), each member's prediction combined by its task over its fold models
    and test-time views, the members combined in the file's space with its weights."""

    def __init__(self, path):
        from hms_keras.inference import Ensemble  # inference.Ensemble.load opens ensemble files through here

        self.description = read_ensemble(path)
        self.path = self.description["path"]
        self.members = [member for member in self.description["members"] if np.any(member["class_weights"] != 0)]
        self.ensembles = [Ensemble(member["runs"]) for member in self.members]
        self.W = np.stack([member["class_weights"] for member in self.members])  # (used members, 6)
        self.b = self.description["bias"]  # (6,)

    @classmethod
    def load(cls, path) -> "Blend":
        return cls(path)

    @property
    def models(self) -> list:
        """Every loaded model, all members together."""
        return [model for ensemble in self.ensembles for model in ensemble.models]

    def _combine(self, member_probabilities: Sequence[np.ndarray]) -> np.ndarray:
        """(rows, 6) ensemble probabilities of (rows, 6) probabilities per used member."""
        log_probabilities = np.log(np.maximum(np.stack(member_probabilities), LOG_FLOOR))  # (members, rows, 6)
        return softmax(Combination(self.W, self.b).logits(log_probabilities))

    def predict_test(self, data_dir=None, *, batch_size: int = 32, on_bad_recording: str = "error") -> pd.DataFrame:
        """A submission for `data_dir`'s test.csv (default: the data the members were trained
        on): each member's `Task.predict_test` with its test-time views, combined. Unreadable
        test recordings: as `Ensemble.predict_test` (every member gives their rows the prior)."""
        predictions = []
        for member, ensemble in zip(self.members, self.ensembles, strict=True):
            task = ensemble.task if data_dir is None else task_for(ensemble.recipe, data_dir)
            extra = {} if member["tta"] == (0,) else {"tta": member["tta"]}
            predictions.append(task.predict_test(ensemble.models, batch_size=batch_size,
                                                 on_bad_recording=on_bad_recording, **extra))
        eeg_ids = predictions[0]["eeg_id"].to_numpy()
        for member, prediction in zip(self.members[1:], predictions[1:], strict=True):
            if not np.array_equal(prediction["eeg_id"].to_numpy(), eeg_ids):
                raise _file_error(self.path, f"member {member['name']} predicts other test rows")
        columns = list(constants.VOTE_COLUMNS)
        return submission_frame(eeg_ids, self._combine([prediction[columns].to_numpy() for prediction in predictions]))

    @property
    def task(self):
        """The members' task (one for all): reads and prepares the recordings `predict_file` and
        `predict_recording` take. EnsembleError when members of several tasks need different inputs."""
        tasks = sorted({member["task"] for member in self.members})
        if len(tasks) > 1:
            raise _file_error(self.path, f"members of tasks {tasks} need different recordings; predict_recording "
                                         "and predict_file work for ensembles of one task, predict_test for blends")
        return self.ensembles[0].task

    def window_probabilities(self, prepared, starts_s) -> np.ndarray:
        """(windows, 6) probabilities of windows starting `starts_s` seconds into a prepared
        recording: each member's `Ensemble.window_probabilities` with its test-time views, combined."""
        return self._combine([ensemble.window_probabilities(prepared, starts_s, member["tta"])
                              for member, ensemble in zip(self.members, self.ensembles, strict=True)])

    def predict_file(self, path, offset_seconds: float = 0.0) -> np.ndarray:
        """(6,) probabilities of one input file (ensembles of one task; see `Ensemble.predict_file`)."""
        return sliding_windows.predict_window(self, path, offset_seconds)

    def predict_recording(self, recording, stride_s: float = 10.0, *, batch_size: int = 32,
                          progress: bool = True) -> pd.DataFrame:
        """Sliding-window probabilities over a whole recording (ensembles of one task; see
        `Ensemble.predict_recording`)."""
        return sliding_windows.predict_recording(self, recording, stride_s=stride_s, batch_size=batch_size,
                                                 progress=progress)


def score_ensemble_file(path, data_dir=None, *, batch_size: int = 32) -> dict:
    """The out-of-fold scores of the ensemble an ensemble file describes, computed again from its
    members' run folders (`{"cv", "kaggle_all_rows"}`), beside the ones it recorded
    (`recorded`, or None). Test-time views missing from the run folders are predicted."""
    description = read_ensemble(path)
    members = [
        Member(
            name=member["name"],
            recipe_dir=Path(member["runs"][0]).parent.parent,
            runs=tuple(member["runs"]),
            recipe=member["recipe_object"],
            folds=tuple(sorted({runs.read_description(run)["fold"] for run in member["runs"]})),
            seeds=tuple(sorted({runs.read_description(run)["seed"] for run in member["runs"]})),
            tta=member["tta"],
        )
        for member in description["members"]
    ]
    oof = build_out_of_fold(members, data_dir, batch_size=batch_size)
    combination = Combination(np.stack([member["class_weights"] for member in description["members"]]),
                              description["bias"])
    recorded = (description.get("scores") or {}).get("chosen")
    return {**oof.exact_scores(combination.logits(oof.log_probabilities)), "recorded": recorded}
