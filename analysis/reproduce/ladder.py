"""Bhagia et al. 2024, "Establishing Task Scaling Laws via Compute-Efficient Model Ladders": the
two-step task laws, fitted as the allenai/OLMo-ladder repository fits them for the paper
(``src/fitting/step1.py``, ``step2.py``, ``src/scaling/utils.py`` and ``fitting_functions.py``,
run set ``src/scripts/paper/configs/final.json``, options ``--moving_avg 5 --skip_perc 0.1``).

Step 1, task loss from (N, D): the 16 runs 190M/370M/760M/1B x 1/2/5/10 xC, one point per run:
y = mean of the task loss (bits per byte) over the run's last 5 evaluations, D =
``throughput/total_tokens`` of the last one, N = the non-embedding count of ``final.json``.
Law L = exp(a - alpha log N) + exp(b - beta log D) + E with A = e^a, B = e^b; objective the SUM of
Huber losses (delta 1e-3) of log(prediction) - log(y); ``scipy.optimize.minimize`` L-BFGS-B with the
analytic gradient, one start [a, b, alpha, beta, E] = [3, 6, 0.1, 0.2, 1], every parameter bounded
below by 0, ``tol=0``, ``ftol=0``, ``gtol=1e-10``, ``maxiter=1e6``.

Step 2, accuracy from task loss: every evaluation of the same 16 runs; per run the first
ceil(10%) dropped, then a trailing moving average of 5 (the first four points average what there
is) on task loss and accuracy (a fraction, ``..._len_norm``); plus the anchor (0, 1.0). Law
Acc = a / (1 + exp(-k (L - L0))) + b by ``scipy.optimize.curve_fit`` (trust region, bounds
([-1, 0, 0, 0], [0, inf, inf, 1])) from (a, L0, k, b) = (chance - 1, 0.9, 3, 1), ``maxfev=5e5``.
The repository retries other starts only when scipy warns that the covariance is not estimable;
that does not happen on this data (the printout says if it does).

Tasks and splits: MMLU test (its four subject groups weighted stem 0.215, humanities 0.335,
social sciences 0.219, other 0.231, both for the loss and the accuracy), HellaSwag val, ARC-Challenge
and ARC-Easy test, PIQA, CSQA and SocialIQA val, OpenBookQA test; chance 0.25 except PIQA 0.5,
SocialIQA 1/3, CSQA 0.2.

References, from the repository's published outputs (``src/scripts/paper/figures/``): the step-1
fitting error (``step1_main.csv`` "Fit Error": mean |relative error| over the 16 points), the
step-1 prediction for the 13B target (N = 13,202,396,160, D = 5,000,088,518,656; ``Pred``) and the
chained prediction of its accuracy (``chained_main.csv`` ``Pred``). Only predictions are used; the
target runs' measured values are not part of this package. This reproduction matches all three to
at least five significant digits. ``ladder_check.csv`` also holds the same two predictions for the
7B-4T target (N = 6,887,575,552, D = 3,945,065,873,408, as the repository's ``predict.py`` usage
lines give them), for which the repository publishes no prediction to compare with.

``ladder_check.csv`` has one row per task and ``method``, each predicted column X with its 90%
prediction interval ``X_lower``, ``X_upper``:

- ``paper``: the paper's method as this reproduction recomputes it (equal to the repository's
  numbers above to at least five significant digits, which the ``*_published`` columns hold
  beside them); ``fit_error`` and the ``*_published`` columns are on these rows only. The interval is that of step 1 refitted by
  ``analysis.fit_law`` (the same law and summed Huber objective) on the same 16 points, with
  ``RESAMPLES`` bootstrap resamples of the runs, combined with the fit's residual scatter
  (``Law.predict_interval(kind="prediction")``), and mapped through the fitted sigmoid for the
  accuracy (decreasing in the loss: the ends swap; step 2's own uncertainty is left out). It
  covers the fit's noise only, not the error of extrapolation (``analysis.backtest``: 50% to
  83% coverage of the 3B runs on several tasks).
- ``calibrated``: the same two steps (``two_step_predictor``) fitted on the same
  16 runs, its point corrected and its interval widened by the error model of nested backtests
  by model size inside them (fit 190M-370M, predict 760M and 1B; fit 190M-760M, predict 1B:
  ``analysis.calibrate``, ``NESTED_MIN_LEVELS`` sizes at least); the targets' scale is their N.
- ``selected``: the step 1 (the paper's, or the over-training form in (C, M)) that those
  nested backtests favour, chosen once for the ladder pooled over every task's task loss and
  chained accuracy (as ``analysis.backtest``), calibrated the same way; ``choice`` names it.

The calibrated error model is multiplicative (log(actual / predicted)), so a wide accuracy
interval can pass 1: its ends are clipped to [0, 1], which changes no coverage.

What a calibrated interval covers: where a run of the target's configuration lands, trained as
the ladder's runs were, if the error keeps growing with the distance of extrapolation as it does
inside the ladder; the 13B target lies 1.2 ladder spans (the 7B 0.9) beyond 1B in log N, further than any
nested backtest reaches (0.8 at most), so the interval extrapolates the error model too.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.optimize import OptimizeWarning, curve_fit, minimize

from analysis import huber_log
from analysis.calibrate import Predictor, calibrated_prediction, nested_cuts, select_predictor
from analysis.fit import single_threaded
from analysis.predictors import law_predictor, per_group_fit_predict, quiet_fit, with_bootstrap
from analysis.reproduce.report import Reproduction, fmt, save_figure, side_by_side, write_csv
from analysis.testbeds import load_ladder, wide
from analysis.testbeds.ladder import MODEL_PARAMS, parse_run

COLUMNS = ("task", "A", "B", "E", "alpha", "beta", "a", "b", "k", "L0")
LADDER_SIZES = ("190M", "370M", "760M", "1B")
LADDER_MULTIPLIERS = (1, 2, 5, 10)
FINAL_RUNS = tuple(f"{s}-{m}xC" for s in LADDER_SIZES for m in LADDER_MULTIPLIERS)
LAST_EVALUATIONS = 5  # --moving_avg 5: step 1 averages the last 5 evaluations
MOVING_AVERAGE = 5
SKIP_FRACTION = 0.1  # --skip_perc 0.1
STEP1_START = (3.0, 6.0, 0.1, 0.2, 1.0)  # [log A, log B, alpha, beta, E]
HUBER_DELTA = 1e-3
TARGET_13B = (13_202_396_160, 5_000_088_518_656)  # N, D of the 13B-5T target (README, predict.py)
TARGET_7B = (6_887_575_552, 3_945_065_873_408)  # N, D of the 7B-4T target (predict.py's usage lines)
METHODS = ("paper", "calibrated", "selected")
LEVEL = 0.9  # of every prediction interval in ladder_check.csv
RESAMPLES, SEED = 100, 0  # bootstrap of the paper rows' interval
PREDICTED = ("pred_13b_task_loss", "pred_13b_accuracy", "pred_7b_task_loss", "pred_7b_accuracy")
CHECK_COLUMNS = (
    "task", "method", "choice", "fit_error", "fit_error_published",
    *(c for name in PREDICTED[:2] for c in (name, f"{name}_lower", f"{name}_upper",
                                            f"{name}_published")),
    *(c for name in PREDICTED[2:] for c in (name, f"{name}_lower", f"{name}_upper")),
)  # fmt: skip
PAPER_CHOICE = "paper's step 1"  # the name of ``two_step_predictor``'s paper procedure


@dataclass(frozen=True)
class Task:
    name: str
    splits: tuple[str, ...]
    chance: float
    weights: tuple[float, ...] = (1.0,)

    @property
    def loss_columns(self) -> list[str]:
        return [f"eval/downstream_bpb/{s}_rc_5shot_bpb" for s in self.splits]

    @property
    def accuracy_columns(self) -> list[str]:
        return [f"eval/downstream/{s}_rc_5shot_len_norm" for s in self.splits]


MMLU_GROUPS = ("stem", "humanities", "social_sciences", "other")
TASKS = (
    Task("mmlu", tuple(f"mmlu_{g}_test" for g in MMLU_GROUPS), 0.25, (0.215, 0.335, 0.219, 0.231)),
    Task("hellaswag", ("hellaswag_val",), 0.25),
    Task("arc_challenge", ("arc_challenge_test",), 0.25),
    Task("arc_easy", ("arc_easy_test",), 0.25),
    Task("piqa", ("piqa_val",), 0.5),
    Task("csqa", ("csqa_val",), 0.2),
    Task("socialiqa", ("socialiqa_val",), 1 / 3),
    Task("openbookqa", ("openbookqa_test",), 0.25),
)
# OLMo-ladder src/scripts/paper/figures/step1_main.csv (Fit Error, Pred) and chained_main.csv (Pred).
PUBLISHED = {
    "mmlu": (0.00459955846280895, 0.7501562439156164, 0.5126799915287485),
    "hellaswag": (0.002564809550553303, 0.6531765996418648, 0.8530359563499285),
    "arc_challenge": (0.004845000187424237, 0.783323889494342, 0.5267099358093748),
    "arc_easy": (0.011775123423672772, 0.5931045976220826, 0.7724156000459201),
    "piqa": (0.003104357884309965, 0.8747948863685431, 0.820804177694882),
    "csqa": (0.010454759586642956, 0.6617282976368006, 0.7760887505172276),
    "socialiqa": (0.005396831679934047, 0.9915736909585439, 0.5994822062474122),
    "openbookqa": (0.00594152057987821, 1.2750065398700043, 0.4486477676972386),
}


# ----------------------------------------------------------------------------- the two laws


def task_loss_law(N, D, theta) -> np.ndarray:
    """Step 1 in the repository's parameters theta = [log A, log B, alpha, beta, E]."""
    a, b, alpha, beta, E = theta
    return np.exp(a - np.log(N) * alpha) + np.exp(b - np.log(D) * beta) + E


def sigmoid(L, a, L0, k, b) -> np.ndarray:
    """Step 2, Acc = a / (1 + exp(-k (L - L0))) + b, in the repository's argument order."""
    return a / (1 + np.exp(-k * (L - L0))) + b


def fit_task_loss(N, D, y, start=STEP1_START):
    """Summed Huber on log residuals, L-BFGS-B from one start, as ``get_coefficients_huber``."""
    N, D, y = (np.asarray(v, dtype=float) for v in (N, D, y))
    log_y = np.log(y)

    def objective(theta):
        u = np.log(task_loss_law(N, D, theta)) - log_y
        absu = np.abs(u)
        return np.sum(
            np.where(absu < HUBER_DELTA, 0.5 * u**2, HUBER_DELTA * (absu - 0.5 * HUBER_DELTA))
        )

    def gradient(theta):
        a, b, alpha, beta, _ = theta
        n_term = np.exp(a - np.log(N) * alpha)
        d_term = np.exp(b - np.log(D) * beta)
        prediction = n_term + d_term + theta[4]
        u = np.log(prediction) - log_y
        psi = np.where(np.abs(u) < HUBER_DELTA, u, HUBER_DELTA * np.sign(u))
        dpred = np.stack(
            [n_term, d_term, -n_term * np.log(N), -d_term * np.log(D), np.ones_like(N)]
        )
        return (dpred * (psi / prediction)).sum(axis=1)

    result = minimize(
        objective,
        np.array(start, dtype=float),
        jac=gradient,
        bounds=[(0, None)] * 5,
        method="L-BFGS-B",
        tol=0.0,
        options={"ftol": 0.0, "gtol": 1e-10, "maxiter": 1_000_000},
    )
    return result


def fit_sigmoid(loss, accuracy, chance: float):
    """``curve_fit`` of the sigmoid from (chance - 1, 0.9, 3, 1) within the repository's bounds."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OptimizeWarning)
        params, _ = curve_fit(
            sigmoid,
            np.asarray(loss, dtype=float),
            np.asarray(accuracy, dtype=float),
            p0=[chance - 1.0, 0.9, 3.0, 1.0],
            bounds=([-1.0, 0.0, 0.0, 0.0], [0.0, np.inf, np.inf, 1.0]),
            maxfev=500_000,
        )
    covariance_warning = any(issubclass(w.category, OptimizeWarning) for w in caught)
    return params, covariance_warning


# ----------------------------------------------------------------------------- the data


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """utils.moving_average: mean of the last ``window`` values, of all values for the first few."""
    total = np.cumsum(values, dtype=float)
    count = np.minimum(np.arange(1, len(values) + 1), window)
    total[window:] = total[window:] - total[:-window]
    return total / count


def weighted(frame: pd.DataFrame, columns: list[str], weights) -> np.ndarray:
    return np.average(frame[columns].to_numpy(dtype=float), axis=1, weights=list(weights))


def checkpoints(data) -> pd.DataFrame:
    """Every evaluation of the paper's 16 ladder runs, in training order, with the needed columns."""
    columns = sorted({c for t in TASKS for c in (*t.loss_columns, *t.accuracy_columns)})
    table = load_ladder(data)
    frame = wide(table[table["run"].isin(FINAL_RUNS)], columns)
    missing = sorted(set(FINAL_RUNS) - set(frame["run"]))
    if missing:
        raise ValueError(f"the paper's ladder (configs/final.json) needs runs {missing}")
    return frame


def step1_points(frame: pd.DataFrame, task: Task, runs=FINAL_RUNS) -> pd.DataFrame:
    rows = []
    for run in runs:
        group = frame[frame["run"] == run]
        size, _ = parse_run(run)
        loss = weighted(group, task.loss_columns, task.weights)
        rows.append(
            {"run": run, "N": float(MODEL_PARAMS[size]), "D": float(group["D"].iloc[-1]),
             "y": float(np.mean(loss[-LAST_EVALUATIONS:]))}
        )  # fmt: skip
    return pd.DataFrame(rows)


def step2_points(frame: pd.DataFrame, task: Task, runs=FINAL_RUNS) -> tuple[np.ndarray, np.ndarray]:
    losses, accuracies = [], []
    for run in runs:
        group = frame[frame["run"] == run]
        loss = weighted(group, task.loss_columns, task.weights)
        accuracy = weighted(group, task.accuracy_columns, task.weights)
        skip = int(math.ceil(SKIP_FRACTION * len(loss)))
        losses.append(trailing_mean(loss[skip:], MOVING_AVERAGE))
        accuracies.append(trailing_mean(accuracy[skip:], MOVING_AVERAGE))
    # the repository's "helper point": a perfect model (task loss 0) has accuracy 1
    return np.concatenate([*losses, [0.0]]), np.concatenate([*accuracies, [1.0]])


# ----------------------------------------------------------------------------- new methods


def run_table(frame: pd.DataFrame, task: Task) -> pd.DataFrame:
    """Per run: N, D of its last evaluation, mean task loss and accuracy of its last 5."""
    records = []
    for run, group in frame.groupby("run", sort=True):
        size, _ = parse_run(run)
        loss = weighted(group, task.loss_columns, task.weights)
        accuracy = weighted(group, task.accuracy_columns, task.weights)
        n, d = float(MODEL_PARAMS[size]), float(group["D"].iloc[-1])
        records.append({"run": run, "dataset": group["dataset"].iloc[0], "N": n, "D": d,
                        "C": 6 * n * d, "M": d / n,
                        "loss": float(np.mean(loss[-LAST_EVALUATIONS:])),
                        "accuracy": float(np.mean(accuracy[-LAST_EVALUATIONS:]))})  # fmt: skip
    return pd.DataFrame(records)


NESTED_MIN_LEVELS = 2  # the smallest nested fit: the 190M and 370M runs (8 points, 5 parameters)


def two_step_predictor(every: pd.DataFrame, task: Task, accuracy: bool, step1: str = "paper") -> Predictor:
    """The ladder's two steps at a cut (its runs ``fit["run"]``): step 1 the paper's (or the
    over-training form in (C, M), ``step1="overtrain"``), step 2 the paper's sigmoid; predicts
    the task loss or (``accuracy``) the chained accuracy."""

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        runs = tuple(fit["run"])
        if step1 == "paper":
            points = step1_points(every, task, runs=runs)
            theta = fit_task_loss(points["N"], points["D"], points["y"]).x
            loss = task_loss_law(target["N"].to_numpy(), target["D"].to_numpy(),
                                              theta)  # fmt: skip
        else:
            loss = law_predictor("overtrain", objective=huber_log(reduction="sum")).fit_predict(
                fit.assign(actual=fit["loss"]), target)
        if not accuracy:
            return np.asarray(loss, float)
        x, y = step2_points(every, task, runs=runs)
        return sigmoid(np.asarray(loss, float),
                                    *fit_sigmoid(x, y, task.chance)[0])  # fmt: skip

    name = PAPER_CHOICE if step1 == "paper" else "over-training form in (C, M) for step 1"
    return Predictor(name, fit_predict, (5 if step1 == "paper" else 4) + (4 if accuracy else 0))


# ----------------------------------------------------------------------------- the reproduction


def fit_task(frame: pd.DataFrame, task: Task) -> dict:
    points = step1_points(frame, task)
    step1 = fit_task_loss(points["N"], points["D"], points["y"])
    theta = step1.x
    fitted = task_loss_law(points["N"], points["D"], theta)
    loss, accuracy = step2_points(frame, task)
    (a, L0, k, b), covariance_warning = fit_sigmoid(loss, accuracy, task.chance)
    target_loss = float(task_loss_law(*TARGET_13B, theta))
    loss_7b = float(task_loss_law(*TARGET_7B, theta))
    return {
        "task": task.name,
        "A": math.exp(theta[0]), "B": math.exp(theta[1]), "alpha": theta[2], "beta": theta[3],
        "E": theta[4], "a": a, "b": b, "k": k, "L0": L0,
        "step1_objective": float(step1.fun), "step1_message": str(step1.message),
        "fit_error": float(np.mean(np.abs((fitted - points["y"]) / points["y"]))),
        "pred_13b_task_loss": target_loss,
        "pred_13b_accuracy": float(sigmoid(target_loss, a, L0, k, b)),
        "pred_7b_task_loss": loss_7b, "pred_7b_accuracy": float(sigmoid(loss_7b, a, L0, k, b)),
        "step2_points": len(loss), "covariance_warning": covariance_warning,
    }  # fmt: skip


def paper_intervals(frame: pd.DataFrame, task: Task, fit: dict, level: float = LEVEL) -> dict:
    """The ``paper`` row's ``X_lower``, ``X_upper``: step 1 refitted by ``analysis.fit_law`` on
    the 16 points (summed Huber), bootstrapped, its prediction interval at the 13B and 7B
    targets; the accuracy's from the loss's ends through the fitted sigmoid (they swap)."""
    points = step1_points(frame, task)
    inputs = {"N": points["N"].to_numpy(float), "D": points["D"].to_numpy(float)}
    y = points["y"].to_numpy(float)
    law = quiet_fit("chinchilla", inputs, y, objective=huber_log(reduction="sum"))
    law, _ = with_bootstrap(law, inputs, y, RESAMPLES, SEED)
    targets = np.array([TARGET_13B, TARGET_7B], dtype=float)
    lower, upper = law.predict_interval(level, kind="prediction", N=targets[:, 0],
                                        D=targets[:, 1])  # fmt: skip
    step2 = (fit["a"], fit["L0"], fit["k"], fit["b"])
    ends = [sigmoid(v, *step2) for v in (lower, upper)]
    row = {}
    for i, size in enumerate(("13b", "7b")):
        row[f"pred_{size}_task_loss_lower"] = lower[i]
        row[f"pred_{size}_task_loss_upper"] = upper[i]
        row[f"pred_{size}_accuracy_lower"] = min(ends[0][i], ends[1][i])
        row[f"pred_{size}_accuracy_upper"] = max(ends[0][i], ends[1][i])
    return row


def new_method_checks(frame: pd.DataFrame,
                      level: float = LEVEL) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """The ``calibrated`` and ``selected`` rows of every task (the module's docstring), and the
    selection's scores (one row per candidate step 1: mean |log error| of the nested backtests,
    pooled over the tasks' task loss and chained accuracy)."""
    targets = pd.DataFrame({"run": ["13B-5T", "7B-4T"], "N": [float(v) for v in
                            (TARGET_13B[0], TARGET_7B[0])], "D": [float(v) for v in
                            (TARGET_13B[1], TARGET_7B[1])]})  # fmt: skip
    targets = targets.assign(C=6 * targets["N"] * targets["D"], M=targets["D"] / targets["N"])
    tables, groups, candidates = {}, [], {}
    for task in TASKS:
        fit_table = run_table(frame, task)
        cuts = nested_cuts(fit_table["N"], NESTED_MIN_LEVELS)
        tables[task.name] = (fit_table, cuts)
        for accuracy in (False, True):
            groups.append((fit_table.assign(actual=fit_table["accuracy" if accuracy else "loss"]),
                           cuts))  # fmt: skip
            candidates[task.name, accuracy] = [
                two_step_predictor(frame, task, accuracy, step1) for step1 in ("paper", "overtrain")
            ]
    # one step 1 for the whole ladder: every candidate scored on every (task, quantity), pooled
    names = [p.name for p in candidates[TASKS[0].name, False]]
    pooled = [Predictor(name, per_group_fit_predict(candidates, i, groups), 9) for i, name in enumerate(names)]
    indexed = [(table.assign(group=g), cuts) for g, (table, cuts) in enumerate(groups)]
    chosen, scores = select_predictor(pooled, indexed, "N")
    choice = names.index(chosen.name)
    rows = []
    for method, index in (("calibrated", 0), ("selected", choice)):
        for task in TASKS:
            fit_table, cuts = tables[task.name]
            row = {"task": task.name, "method": method, "choice": names[index]}
            for accuracy, what in ((False, "task_loss"), (True, "accuracy")):
                fit_set = fit_table.assign(actual=fit_table["accuracy" if accuracy else "loss"])
                result = calibrated_prediction(candidates[task.name, accuracy][index], fit_set,
                                               targets, "N", cuts, level)  # fmt: skip
                lower, upper = result.lower, result.upper
                if accuracy:  # the error model is multiplicative: keep its ends in [0, 1]
                    lower = np.minimum(np.maximum(lower, 0.0), result.point)
                    upper = np.maximum(np.minimum(upper, 1.0), result.point)
                for i, size in enumerate(("13b", "7b")):
                    row[f"pred_{size}_{what}"] = result.point[i]
                    row[f"pred_{size}_{what}_lower"] = lower[i]
                    row[f"pred_{size}_{what}_upper"] = upper[i]
            rows.append(row)
    return pd.DataFrame(rows), scores


def figure(frame: pd.DataFrame, fits: pd.DataFrame) -> Figure:
    """Step 1 (task loss against tokens, one curve per size) and step 2 (accuracy against task
    loss), one column per task, as the repository's step1_main.png and step2_main.png."""
    fig = Figure(figsize=(3 * len(TASKS), 6))
    axes = fig.subplots(2, len(TASKS), squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.09, top=0.95, wspace=0.3, hspace=0.3)
    colors = dict(zip(LADDER_SIZES, ("darkred", "darkorange", "darkgreen", "teal"), strict=True))
    for column, (task, fit) in enumerate(zip(TASKS, fits.to_dict("records"), strict=True)):
        theta = [math.log(fit["A"]), math.log(fit["B"]), fit["alpha"], fit["beta"], fit["E"]]
        points = step1_points(frame, task)
        top, bottom = axes[0][column], axes[1][column]
        grid = np.geomspace(points["D"].min() * 0.8, points["D"].max() * 1.5, 100)
        for size in LADDER_SIZES:
            mine = points[points["run"].str.startswith(f"{size}-")]
            top.scatter(mine["D"], mine["y"], color=colors[size], s=20, label=size)
            top.plot(grid, task_loss_law(mine["N"].iloc[0], grid, theta), color=colors[size],
                     ls="--", lw=1)  # fmt: skip
        top.set(xscale="log", title=task.name, xlabel="tokens D")
        loss, accuracy = step2_points(frame, task)
        bottom.scatter(loss[:-1], accuracy[:-1], s=2, color="0.5")
        curve = np.linspace(0.9 * loss[:-1].min(), loss[:-1].max(), 100)
        bottom.plot(curve, sigmoid(curve, fit["a"], fit["L0"], fit["k"], fit["b"]), color="C3")
        bottom.set(xlabel="task loss (bits per byte)")
    axes[0][0].set_ylabel("task loss (bits per byte)")
    axes[1][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    return fig


def reproduce(data: str | os.PathLike | None, out: Path) -> Reproduction:
    with single_threaded():  # tiny problems: BLAS threads only add hand-off latency
        return _reproduce(data, out)


def _reproduce(data: str | os.PathLike | None, out: Path) -> Reproduction:
    result = Reproduction("ladder")
    frame = checkpoints(data)
    fits = pd.DataFrame([fit_task(frame, task) for task in TASKS])
    result.tables["ladder_fits.csv"] = write_csv(fits, out, "ladder_fits.csv", COLUMNS)
    paper = fits[["task", "fit_error", *PREDICTED]].assign(method="paper", choice=PAPER_CHOICE)
    for i, name in enumerate(("fit_error", "pred_13b_task_loss", "pred_13b_accuracy")):
        paper[f"{name}_published"] = paper["task"].map(lambda t, i=i: PUBLISHED[t][i])
    # the 7B-4T target has no published prediction to check against: ours only
    records = zip(TASKS, fits.to_dict("records"), strict=True)
    intervals = pd.DataFrame([paper_intervals(frame, task, fit) for task, fit in records])
    paper = pd.concat([paper.reset_index(drop=True), intervals], axis=1)
    new, scores = new_method_checks(frame)
    checks = pd.concat([paper, new], ignore_index=True)
    result.tables["ladder_check.csv"] = write_csv(checks, out, "ladder_check.csv", CHECK_COLUMNS)
    result.figures.append(save_figure(figure(frame, fits), out, "ladder_fits.png"))

    result.say(
        "Bhagia et al. 2024 (OLMo ladder), configs/final.json: 16 runs 190M-1B x 1/2/5/10xC; "
        "reference: the repository's published outputs (src/scripts/paper/figures/step1_main.csv "
        "Fit Error and Pred, chained_main.csv Pred)"
    )
    for fit in fits.to_dict("records"):
        paper = PUBLISHED[fit["task"]]
        result.say(
            f"{fit['task']}: L = {fmt(fit['A'])}/N^{fit['alpha']:.4f} + {fmt(fit['B'])}/D^"
            f"{fit['beta']:.4f} + {fit['E']:.4f};  Acc = {fit['a']:.4f}/(1+exp(-{fit['k']:.4f}"
            f"(L-{fit['L0']:.4f}))) + {fit['b']:.4f}"
        )
        result.say(
            *side_by_side(
                [
                    ("step-1 fitting error", fit["fit_error"], paper[0]),
                    ("13B task loss (step 1)", fit["pred_13b_task_loss"], paper[1]),
                    ("13B accuracy (chained)", fit["pred_13b_accuracy"], paper[2]),
                    ("7B task loss (step 1)", fit["pred_7b_task_loss"], None),
                    ("7B accuracy (chained)", fit["pred_7b_accuracy"], None),
                ],
                headers=("", "ours", "OLMo-ladder"),
            )
        )
        for row in checks[checks["task"] == fit["task"]].to_dict("records"):
            result.say(
                f"  {row['method']:>10}  13B task loss {_with_interval(row, 'pred_13b_task_loss')}"
                f", accuracy {_with_interval(row, 'pred_13b_accuracy')};  7B task loss "
                f"{_with_interval(row, 'pred_7b_task_loss')}, accuracy "
                f"{_with_interval(row, 'pred_7b_accuracy')}"
            )
        if fit["covariance_warning"]:
            result.say(
                "  note: curve_fit warned (covariance); the repository would retry other starts"
            )
        message = fit["step1_message"].strip().rstrip(":")
        if message == "ABNORMAL":  # scipy >= 1.15 gives no detail; it is the line search
            message = "ABNORMAL (the line search found no decrease)"
        if fit["E"] == 0.0 or "ABNORMAL" in message:
            result.say(f"  note: L-BFGS-B (the repository's one start, kept as is) stopped with "
                       f"E = {fit['E']:.3g}: {message}")
    result.say(
        f"ladder_check.csv: {LEVEL:.0%} prediction intervals [lower, upper]; paper: bootstrap of "
        "step 1 (fit_law refit) and scatter, fit noise only; calibrated: the paper's two steps, "
        "interval from nested backtests by model size; selected: "
        + "; ".join(f"{r['choice']}{' (chosen)' if r['chosen'] else ''}, nested mean |log "
                    f"error| {r['mean_abs_log_error']:.4f}" for r in scores.to_dict("records"))
    )
    return result


def _with_interval(row: dict, column: str) -> str:
    return f"{row[column]:.4f} [{row[column + '_lower']:.4f}, {row[column + '_upper']:.4f}]"
