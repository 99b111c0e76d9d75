"""Held-out checks: fit each testbed's smaller runs with its paper's method, predict its largest
runs present, and report the prediction error and how often the law's interval covers the truth.

    python -m analysis.backtest --data-root ../shared/data --out backtest/

Hold-outs (the largest runs in the released copies; the papers' own targets are not released):

- ``l2l``: the 4.84e19-FLOP budget. Per corpus, the Kaplan and Chinchilla laws of ``val_loss``
  (mean Huber on log residuals, as the notebooks) predict the held-out runs from (N, D); and, the
  paper's point, train-to-train loss-to-loss laws (E's from the Kaplan fits, OLS in log space)
  predict each held-out run's ``val_loss`` from the paired run's ``val_loss`` on another corpus.
- ``gadre``: the 1.4B runs (M = 20 and the over-trained one). The paper's loss law (its five-run
  fit set, 128-start ``curve_fit``) predicts their C4-eval loss; the error law, fitted on the same
  five runs (its own fit set adds the 1.4B run, held out here), chains to their 17-task error.
- ``ladder``: the 3B runs (fit on the paper's ladder, ``configs/final.json``), and the 1B runs (fit
  on 190M-760M), every run of the held-out size. Step 1 (summed Huber, one L-BFGS-B start) predicts
  the task loss (mean of the last 5 evaluations), step 1 chained into step 2 the accuracy.
- ``chinchilla``: the largest budget (C above 1.7e21, Chinchilla's 3e21 IsoFLOP and beyond);
  Epoch's fit (5 highest losses dropped, summed Huber) on the rest.

Two intervals per prediction, both at ``--level`` (``Law.predict_interval``'s two kinds):

- confidence (``lower``, ``upper``, ``covered``): the uncertainty of the fitted law only, the
  percentiles of ``analysis.bootstrap`` resamples (runs resampled, refitted with the same
  objective), or the delta method where a fit set is too small to resample (Gadre et al.'s five
  points);
- prediction (``lower_pred``, ``upper_pred``, ``covered_pred``): where a new run lands, the same
  parameter uncertainty combined with the run-to-run scatter of the fit's own residuals.

Neither covers a systematic error of the law in extrapolation (a form that bends differently
beyond the fitted budgets): the summary's signed ``mean_rel_error`` against the prediction
interval's half-width shows when that, not scatter, is what the intervals miss. Nothing here is
tuned on the held-out runs. For a chained accuracy (or error) the intervals of the first step are
mapped through the fitted second law, which is monotone (its own uncertainty and scatter are left
out).
Point predictions always come from the paper's own procedure; where that is a scipy routine the
interval comes from ``analysis.fit_law`` refits of the same objective, whose optimum may differ
slightly (``interval`` column says which).
"""

from __future__ import annotations

import sys

from analysis.paths import check_out_folder, exit_if_shadowed

if __name__ == "__main__":  # before the imports below, which a folder ./analysis breaks
    exit_if_shadowed("analysis", code=1)

import argparse
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from analysis import fit_law, huber_log
from analysis.calibrate import (
    Calibrated,
    Predictor,
    calibrated_prediction,
    extrapolation_distance,
    nested_cuts,
    select_predictor,
)
from analysis.law import INTERVAL_KINDS
from analysis.predictors import (
    combine_calibrated,
    law_predictor,
    per_group_fit_predict,
    quiet_fit,
    with_bootstrap,
)
from analysis.reproduce import chinchilla as chinchilla_paper
from analysis.reproduce import gadre as gadre_paper
from analysis.reproduce import l2l_methods, l2l_paper
from analysis.reproduce import ladder as ladder_paper
from analysis.reproduce.chinchilla import DROPPED_HIGHEST
from analysis.reproduce.report import frame_lines, save_figure, write_csv
from analysis.testbeds import (
    TestbedUnavailableError,
    load_chinchilla,
    load_l2l,
    load_ladder,
    wide,
)
from analysis.testbeds.gadre import MODEL_SIZES

COLUMNS = (
    "testbed", "setting", "method", "holdout", "run", "dataset", "N", "D", "C", "M", "metric",
    "actual", "predicted", "rel_error", "lower", "upper", "covered", "lower_pred", "upper_pred",
    "covered_pred", "interval", "quantity", "choice", "distance",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "testbed", "setting", "method", "holdout", "n", "mean_rel_error", "mean_abs_rel_error",
    "max_abs_rel_error", "coverage", "mean_rel_width", "coverage_pred", "mean_rel_width_pred",
    "above_pred", "below_pred",
)  # fmt: skip
METHOD_COLUMNS = (
    "testbed", "holdout", "quantity", "method", "n", "mean_abs_rel_error", "mean_rel_error",
    "coverage", "mean_rel_width", "above", "below",
)  # fmt: skip
METHODS = ("paper", "calibrated", "selected", "multi_source")
"""``paper``: the paper's fit and point prediction, with the bootstrap (or delta-method)
prediction interval of ``Law.predict_interval``. ``calibrated``: the same fit, its prediction
corrected and its interval widened by the error model of its own nested backtests
(``analysis.calibrate``). ``selected``: the fitting choice that nested backtests on the fitting
data favour for the whole study (``choice`` names it), calibrated the same way.
``multi_source`` (loss-to-loss): the calibrated translations from every source corpus combined."""
CHINCHILLA_HOLDOUT_C = float(np.sqrt(1e21 * 3e21))  # between the 1e21 and 3e21 IsoFLOP budgets


def _rows(base: dict, frame: pd.DataFrame, predicted, intervals, interval: str) -> list[dict]:
    """One row per held-out run of the paper's method; ``intervals``: (lower, upper) of the
    confidence interval and (lower, upper) of the prediction interval."""
    actual = frame["actual"].to_numpy(dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    (lower, upper), (lower_pred, upper_pred) = (
        tuple(np.broadcast_to(np.asarray(v, dtype=float), actual.shape) for v in pair)
        for pair in intervals
    )
    rows = []
    for i, record in enumerate(frame.to_dict("records")):
        row = {
            "method": "paper", "choice": "", "distance": record.get("distance", np.nan),
            **base, **{k: record[k] for k in ("run", "dataset", "N", "D", "C", "M")},
            "actual": actual[i], "predicted": predicted[i],
            "rel_error": (predicted[i] - actual[i]) / actual[i],
            "lower": lower[i], "upper": upper[i], "covered": _inside(actual[i], lower[i], upper[i]),
            "lower_pred": lower_pred[i], "upper_pred": upper_pred[i],
            "covered_pred": _inside(actual[i], lower_pred[i], upper_pred[i]),
            "interval": interval,
        }  # fmt: skip
        rows.append({column: row[column] for column in COLUMNS})
    return rows


def _method_rows(base: dict, frame: pd.DataFrame, method: str, choice: str, point, lower, upper,
                 distance, interval: str) -> list[dict]:  # fmt: skip
    """Rows of a new method: one interval, the calibrated prediction interval (``lower_pred``,
    ``upper_pred``); the confidence columns stay empty."""
    nan = np.full(len(frame), np.nan)
    rows = _rows(base, frame, point, ((nan, nan), (lower, upper)), interval)
    for row, d in zip(rows, np.broadcast_to(np.asarray(distance, float), len(rows)), strict=True):
        row.update(method=method, choice=choice, distance=float(d))
    return rows


def _calibrated_rows(base: dict, target: pd.DataFrame, result: Calibrated, method: str,
                     choice: str) -> list[dict]:  # fmt: skip
    model = result.model
    interval = (f"calibrated: {model.n_cuts} nested cuts, {model.n_errors} errors; bias "
                f"{model.bias:+.4f} +- {model.bias_spread:.4f} per span, growth "
                f"{model.growth:.4f} per span, scatter {model.scatter:.4f}")  # fmt: skip
    return _method_rows(base, target, method, choice, result.point, result.lower, result.upper,
                        result.distance, interval)  # fmt: skip


def _inside(value, lower, upper):
    return bool(lower <= value <= upper) if np.isfinite(lower) else None


def _intervals(law, level: float, **inputs):
    """Confidence and prediction intervals of ``law`` at ``inputs``."""
    return tuple(law.predict_interval(level, kind=kind, **inputs) for kind in INTERVAL_KINDS)


def _distance(target: pd.DataFrame, fit: pd.DataFrame, scale: str) -> np.ndarray:
    return extrapolation_distance(target[scale], fit[scale])


# ----------------------------------------------------------------------------- l2l


def backtest_l2l(data, resamples: int, level: float, seed: int) -> list[dict]:
    sweep = wide(load_l2l(data), [l2l_paper.VAL_LOSS])
    sweep["actual"] = sweep[l2l_paper.VAL_LOSS]
    largest = sweep["C"].max()
    train, held = sweep[sweep["C"] < largest], sweep[sweep["C"] == largest]
    holdout = f"C={largest:.3g}"
    corpora = sorted(sweep["dataset"].unique())
    rows, E = [], {}
    single = "val_loss from (N, D)"
    for corpus, form in itertools.product(corpora, l2l_paper.FORMS):
        fit_set = train[train["dataset"] == corpus]
        target = held[held["dataset"] == corpus]
        target = target.assign(distance=_distance(target, fit_set, "C"))
        inputs = {"N": fit_set["N"].to_numpy(), "D": fit_set["D"].to_numpy()}
        law = quiet_fit(form, inputs, fit_set["actual"].to_numpy())
        if form == "kaplan":
            E[corpus] = law.params["E"]
        law, interval = with_bootstrap(law, inputs, fit_set["actual"].to_numpy(), resamples, seed)
        at = {"N": target["N"].to_numpy(), "D": target["D"].to_numpy()}
        base = {"testbed": "l2l", "setting": f"{form} law of val_loss", "holdout": holdout,
                "metric": l2l_paper.VAL_LOSS, "quantity": single}  # fmt: skip
        rows += _rows(base, target, law.predict(**at), _intervals(law, level, **at), interval)
        cuts = nested_cuts(fit_set["C"], l2l_methods.NESTED_MIN_LEVELS)
        result = calibrated_prediction(law_predictor(form), fit_set, target, "C", cuts, level)
        rows += _calibrated_rows(base, target, result, "calibrated", form)
    # one fitting choice for the study, from the nested backtests of every corpus' fit set
    groups = [(train[train["dataset"] == c], nested_cuts(train[train["dataset"] == c]["C"],
                                                         l2l_methods.NESTED_MIN_LEVELS)) for c in corpora]  # fmt: skip
    chosen, _ = select_predictor(l2l_methods.fitting_choices(), groups, "C")
    for corpus, (fit_set, cuts) in zip(corpora, groups, strict=True):
        target = held[held["dataset"] == corpus]
        result = calibrated_prediction(chosen, fit_set, target, "C", cuts, level)
        base = {"testbed": "l2l", "setting": "selected law of val_loss", "holdout": holdout,
                "metric": l2l_paper.VAL_LOSS, "quantity": single}  # fmt: skip
        rows += _calibrated_rows(base, target, result, "selected", chosen.name)
    rows += _l2l_loss_to_loss(sweep, train, largest, E, holdout, resamples, level, seed)
    return rows


def _l2l_loss_to_loss(sweep, train, largest, E, holdout, resamples, level, seed) -> list[dict]:
    rows = []
    quantity = "val_loss from another corpus' val_loss"
    calibrated: dict[str, dict[str, tuple]] = {}
    for data0, data1 in itertools.permutations(sorted(E), 2):
        pairs = l2l_paper.pair_corpora(sweep, data0, data1, as_target=True)
        fit_set, target = pairs[pairs["C"] < largest], pairs[pairs["C"] == largest]
        target = target.assign(distance=_distance(target, fit_set, "C"))
        x, y = fit_set["actual_x"].to_numpy(), fit_set["actual"].to_numpy()
        law = fit_law("loss_to_loss", {"L": x}, y, objective="log_ols",
                      fixed={"E_x": E[data0], "E_y": E[data1]})  # fmt: skip
        law, interval = with_bootstrap(law, {"L": x}, y, resamples, seed)
        at = {"L": target["actual_x"].to_numpy()}
        base = {"testbed": "l2l", "setting": f"train-to-train from {data0}", "holdout": holdout,
                "metric": l2l_paper.VAL_LOSS, "quantity": quantity}  # fmt: skip
        rows += _rows(base, target, law.predict(**at), _intervals(law, level, **at), interval)
        predictor = l2l_methods.train_to_train_predictor(train, data0, data1)
        cuts = nested_cuts(fit_set["C"], l2l_methods.NESTED_MIN_LEVELS)
        result = calibrated_prediction(predictor, fit_set, target, "C", cuts, level)
        rows += _calibrated_rows(base, target, result, "calibrated", predictor.name)
        errors = result.errors.assign(run=fit_set.loc[result.errors["row"], "run"].to_numpy())
        calibrated.setdefault(data1, {})[data0] = (target, result, errors)
    for data1, by_source in calibrated.items():
        rows += multi_source_rows(data1, by_source, holdout, quantity, level)
    return rows


def multi_source_rows(data1: str, by_source: dict, holdout: str, quantity: str,
                       level: float) -> list[dict]:  # fmt: skip
    """Every source's calibrated translation of each held-out run of ``data1`` combined."""
    frame, center, lower, upper, interval = combine_calibrated(by_source, level)
    base = {"testbed": "l2l", "setting": "train-to-train from every other corpus",
            "holdout": holdout, "metric": l2l_paper.VAL_LOSS, "quantity": quantity}  # fmt: skip
    return _method_rows(base, frame, "multi_source", "all sources", center, lower, upper,
                        frame["distance"], interval)  # fmt: skip


# ----------------------------------------------------------------------------- gadre

def backtest_gadre(data, resamples: int, level: float, seed: int) -> list[dict]:
    runs = gadre_paper.runs_frame(data)
    rows = []
    held_size = runs.loc[runs["model"] == gadre_paper.ERROR_MODEL, "N"]
    datasets = [d for d in gadre_paper.DATASETS if d in set(runs["dataset"])]
    holdout = f"{MODEL_SIZES[gadre_paper.ERROR_MODEL]} runs"
    for dataset in datasets:
        loss_points, _ = gadre_paper.fit_points(runs, dataset)
        held = runs[(runs["dataset"] == dataset) & (runs["model"] == gadre_paper.ERROR_MODEL)]
        params = gadre_paper.fit_loss_law(
            loss_points["N"], loss_points["M"], loss_points[gadre_paper.LOSS]
        )
        error = gadre_paper.fit_error_law(loss_points[gadre_paper.LOSS], loss_points["error"])
        predicted_loss = gadre_paper.overtrain_loss(
            params, held["C"].to_numpy(), held["M"].to_numpy()
        )
        # Interval: the same law and objective (least squares) in analysis.fit_law; five points
        # for four parameters cannot be resampled, so the delta method.
        inputs = {"C": loss_points["C"].to_numpy(), "M": loss_points["M"].to_numpy()}
        law = quiet_fit("overtrain", inputs, loss_points[gadre_paper.LOSS].to_numpy(),
                         objective="least_squares")  # fmt: skip
        intervals = _intervals(law, level, C=held["C"].to_numpy(), M=held["M"].to_numpy())
        fit_runs = runs[(runs["dataset"] == dataset) & (runs["N"] < held_size.min())]
        held = held.assign(distance=_distance(held, fit_runs, "N"))
        base = {"testbed": "gadre", "setting": "loss law (paper's 5-run fit set)",
                "holdout": holdout, "metric": gadre_paper.LOSS, "quantity": "C4 loss"}  # fmt: skip
        rows += _rows(base, held.assign(actual=held[gadre_paper.LOSS]), predicted_loss,
                      intervals, "delta")  # fmt: skip
        chained = gadre_paper.error_law(
            predicted_loss, error["k"], error["gamma"], error["epsilon"]
        )
        # the error law is increasing in the loss: map the loss intervals through it
        ends = [[gadre_paper.error_law(v, error["k"], error["gamma"], error["epsilon"])
                 for v in pair] for pair in intervals]  # fmt: skip
        base = {"testbed": "gadre", "setting": "17-task error (loss law chained into error law)",
                "holdout": holdout, "metric": "error_17_task", "quantity": "17-task error"}  # fmt: skip
        rows += _rows(base, held.assign(actual=held["error"]), chained, ends, "delta (loss only)")
    for with_error, column, quantity in ((False, gadre_paper.LOSS, "C4 loss"),
                                         (True, "error", "17-task error")):  # fmt: skip
        fits = {d: runs[(runs["dataset"] == d) & (runs["N"] < held_size.min())]
                .assign(actual=lambda f, column=column: f[column]) for d in datasets}  # fmt: skip
        cuts = {d: nested_cuts(f["N"], gadre_paper.NESTED_MIN_LEVELS) for d, f in fits.items()}
        candidates = gadre_paper.fitting_choices(with_error)
        chosen, _ = select_predictor(candidates, [(fits[d], cuts[d]) for d in datasets], "N")
        for dataset in datasets:
            held = runs[(runs["dataset"] == dataset) & (runs["model"] == gadre_paper.ERROR_MODEL)]
            held = held.assign(actual=held[column])
            setting = ("loss law" if not with_error else "17-task error (chained)")
            base = {"testbed": "gadre", "holdout": holdout, "quantity": quantity,
                    "metric": gadre_paper.LOSS if not with_error else "error_17_task"}  # fmt: skip
            for method, predictor in (("calibrated", candidates[0]), ("selected", chosen)):
                result = calibrated_prediction(predictor, fits[dataset], held, "N", cuts[dataset],
                                               level)  # fmt: skip
                rows += _calibrated_rows({**base, "setting": f"{setting} ({method})"}, held,
                                         result, method, predictor.name)  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- ladder


def backtest_ladder(data, resamples: int, level: float, seed: int) -> list[dict]:
    columns = sorted(
        {c for t in ladder_paper.TASKS for c in (*t.loss_columns, *t.accuracy_columns)}
    )
    every = wide(load_ladder(data), columns)
    rows = []
    for held_size, fit_sizes in (
        ("3B", ladder_paper.LADDER_SIZES),
        ("1B", ladder_paper.LADDER_SIZES[:3]),
    ):
        fit_runs = tuple(f"{s}-{m}xC" for s in fit_sizes for m in ladder_paper.LADDER_MULTIPLIERS)
        held_frame = every[every["run"].str.startswith(f"{held_size}-")]
        if held_frame.empty:
            continue
        fit_frame = every[every["run"].isin(fit_runs)]
        holdout = f"{held_size} runs (fit on {'/'.join(fit_sizes)})"
        for task in ladder_paper.TASKS:
            points = ladder_paper.step1_points(fit_frame, task, runs=fit_runs)
            step1 = ladder_paper.fit_task_loss(points["N"], points["D"], points["y"])
            loss, accuracy = ladder_paper.step2_points(fit_frame, task, runs=fit_runs)
            sigmoid_params, _ = ladder_paper.fit_sigmoid(loss, accuracy, task.chance)
            fit_table = ladder_paper.run_table(fit_frame, task)
            targets = ladder_paper.run_table(held_frame, task)
            targets = targets.assign(distance=_distance(targets, fit_table, "N"))
            predicted = ladder_paper.task_loss_law(targets["N"], targets["D"], step1.x)
            inputs = {"N": points["N"].to_numpy(), "D": points["D"].to_numpy()}
            law = quiet_fit("chinchilla", inputs, points["y"].to_numpy(),
                             objective=huber_log(reduction="sum"))  # fmt: skip
            law, interval = with_bootstrap(law, inputs, points["y"].to_numpy(), resamples, seed)
            at = {"N": targets["N"].to_numpy(), "D": targets["D"].to_numpy()}
            intervals = _intervals(law, level, **at)
            base = {"testbed": "ladder", "setting": f"{task.name} task loss (step 1)",
                    "holdout": holdout, "metric": f"{task.name} bpb", "quantity": "task loss"}  # fmt: skip
            rows += _rows(base, targets.assign(actual=targets["loss"]), predicted, intervals,
                          f"{interval} (fit_law)")  # fmt: skip
            # Accuracy falls as task loss rises (a <= 0, k >= 0): the loss interval's ends map to
            # the accuracy interval's (percentiles commute with a monotone map).
            chained = ladder_paper.sigmoid(predicted, *sigmoid_params)
            ends = [[ladder_paper.sigmoid(v, *sigmoid_params) for v in pair[::-1]]
                    for pair in intervals]  # fmt: skip
            base = {"testbed": "ladder", "setting": f"{task.name} accuracy (chained)",
                    "holdout": holdout, "metric": f"{task.name} accuracy", "quantity": "accuracy"}  # fmt: skip
            rows += _rows(base, targets.assign(actual=targets["accuracy"]), chained, ends,
                          f"{interval} of step 1 (fit_law)")  # fmt: skip
        rows += _ladder_new_methods(every, fit_frame, held_frame, holdout, level)
    return rows


def _ladder_new_methods(every, fit_frame, held_frame, holdout: str, level: float) -> list[dict]:
    """Calibrated and selected rows of every task; the step-1 choice is made once for the
    ladder (pooled over tasks, task loss and accuracy) from nested backtests on ``fit_frame``."""
    tables = {t.name: (ladder_paper.run_table(fit_frame, t), ladder_paper.run_table(held_frame, t))
              for t in ladder_paper.TASKS}  # fmt: skip
    rows, groups, candidates = [], [], {}
    for task in ladder_paper.TASKS:
        fit_table, _ = tables[task.name]
        cuts = nested_cuts(fit_table["N"], ladder_paper.NESTED_MIN_LEVELS)
        for accuracy in (False, True):
            column = "accuracy" if accuracy else "loss"
            groups.append((fit_table.assign(actual=fit_table[column]), cuts))
            candidates[task.name, accuracy] = [
                ladder_paper.two_step_predictor(every, task, accuracy, step1) for step1 in ("paper", "overtrain")
            ]
    # the same choice for every task: score the candidates side by side, pooled
    pooled = [Predictor(name, per_group_fit_predict(candidates, i, groups), 9) for i, name in
              enumerate(p.name for p in next(iter(candidates.values())))]  # fmt: skip
    indexed = [(frame.assign(group=g), cuts) for g, (frame, cuts) in enumerate(groups)]
    chosen, _ = select_predictor(pooled, indexed, "N")
    choice = [p.name for p in pooled].index(chosen.name)
    for task in ladder_paper.TASKS:
        fit_table, targets = tables[task.name]
        cuts = nested_cuts(fit_table["N"], ladder_paper.NESTED_MIN_LEVELS)
        for accuracy in (False, True):
            column, quantity = ("accuracy", "accuracy") if accuracy else ("loss", "task loss")
            fit_set = fit_table.assign(actual=fit_table[column])
            target = targets.assign(actual=targets[column])
            base = {"testbed": "ladder", "holdout": holdout, "quantity": quantity,
                    "metric": f"{task.name} " + ("accuracy" if accuracy else "bpb")}  # fmt: skip
            label = f"{task.name} {'accuracy (chained)' if accuracy else 'task loss (step 1)'}"
            for method, predictor in (("calibrated", candidates[task.name, accuracy][0]),
                                      ("selected", candidates[task.name, accuracy][choice])):  # fmt: skip
                result = calibrated_prediction(predictor, fit_set, target, "N", cuts, level)
                rows += _calibrated_rows({**base, "setting": f"{label} ({method})"}, target,
                                         result, method, predictor.name)  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- chinchilla


def backtest_chinchilla(data, resamples: int, level: float, seed: int) -> list[dict]:
    points = wide(load_chinchilla(data)).assign(actual=lambda f: f["loss"])
    held = points[points["C"] > CHINCHILLA_HOLDOUT_C]
    everything_below = points[points["C"] <= CHINCHILLA_HOLDOUT_C]
    held = held.assign(distance=_distance(held, everything_below, "C"))
    fit_set = everything_below.sort_values("loss", kind="stable").iloc[:-DROPPED_HIGHEST]
    inputs = {"N": fit_set["N"].to_numpy(), "D": fit_set["D"].to_numpy()}
    objective = huber_log(reduction="sum")
    law = quiet_fit("chinchilla", inputs, fit_set["loss"].to_numpy(), objective=objective)
    law, interval = with_bootstrap(law, inputs, fit_set["loss"].to_numpy(), resamples, seed)
    at = {"N": held["N"].to_numpy(), "D": held["D"].to_numpy()}
    base = {"testbed": "chinchilla", "setting": "Chinchilla law (Epoch's fit)",
            "holdout": f"C > {CHINCHILLA_HOLDOUT_C:.3g}", "metric": "loss", "quantity": "loss"}  # fmt: skip
    rows = _rows(base, held, law.predict(**at), _intervals(law, level, **at), interval)
    cuts = [c for c in chinchilla_paper.NESTED_CUTS if c < everything_below["C"].max()]
    candidates = chinchilla_paper.fitting_choices()
    chosen, _ = select_predictor(candidates, [(everything_below, cuts)], "C")
    for method, predictor in (("calibrated", candidates[0]), ("selected", chosen)):
        result = calibrated_prediction(predictor, everything_below, held, "C", cuts, level)
        rows += _calibrated_rows({**base, "setting": f"Chinchilla law ({method})"}, held, result,
                                 method, predictor.name)  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- driver

BACKTESTS: dict[str, Callable[..., list[dict]]] = {
    "l2l": backtest_l2l,
    "gadre": backtest_gadre,
    "ladder": backtest_ladder,
    "chinchilla": backtest_chinchilla,
}


def run_backtest(
    testbeds=tuple(BACKTESTS), data_root: str | os.PathLike | None = None, *,
    resamples: int = 100, level: float = 0.9, seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """One row per held-out run and metric (``COLUMNS``). ``data_root`` holds one folder per
    testbed (``l2l/``, ``gadre/``, ...); ``None`` reads each study's repository."""
    _check_arguments(testbeds, resamples, level)
    rows = []
    for name in tqdm(testbeds, desc="backtest", unit="testbed", disable=None):
        data = None if data_root is None else Path(data_root) / name
        rows += BACKTESTS[name](data, resamples, level, seed)
    return pd.DataFrame(rows, columns=COLUMNS)


def _check_arguments(testbeds, resamples: int, level: float) -> None:
    unknown = sorted(set(testbeds) - set(BACKTESTS))
    if unknown:
        raise ValueError(f"unknown testbed(s) {unknown}; choose from {sorted(BACKTESTS)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 10:
        raise ValueError(f"at least 10 bootstrap resamples are needed, got {resamples}")


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    scale = results["predicted"].abs()
    grouped = results.assign(
        abs_error=results["rel_error"].abs(),
        width=(results["upper"] - results["lower"]) / scale,
        width_pred=(results["upper_pred"] - results["lower_pred"]) / scale,
        covered=results["covered"].astype(float),
        covered_pred=results["covered_pred"].astype(float),
        above_pred=(results["actual"] > results["upper_pred"]).astype(float),
        below_pred=(results["actual"] < results["lower_pred"]).astype(float),
    ).groupby(["testbed", "setting", "method", "holdout"], sort=False)
    return grouped.agg(
        n=("actual", "size"),
        mean_rel_error=("rel_error", "mean"),
        mean_abs_rel_error=("abs_error", "mean"),
        max_abs_rel_error=("abs_error", "max"),
        coverage=("covered", "mean"),
        mean_rel_width=("width", "mean"),
        coverage_pred=("covered_pred", "mean"),
        mean_rel_width_pred=("width_pred", "mean"),
        above_pred=("above_pred", "mean"),
        below_pred=("below_pred", "mean"),
    ).reset_index()


def shortfalls(summary: pd.DataFrame, level: float) -> list[str]:
    """Settings whose prediction intervals hold fewer held-out runs than ``level``, and what the
    misses say: all on one side of the interval means the law itself is off at the held-out
    size (a systematic extrapolation error, which no interval built from the fit's own scatter
    covers); misses on both sides mean the held-out runs scatter more than the fitted ones."""
    lines = []
    for row in summary.itertuples():
        if not row.coverage_pred < level:
            continue
        above, below = round(row.above_pred * row.n), round(row.below_pred * row.n)
        if above + below >= 2 and min(above, below) == 0:
            verdict = (
                "all misses on one side: systematic extrapolation error (the law is "
                + ("too low" if above else "too high")
                + " at the held-out size)"
            )
        elif above + below >= 2:
            verdict = "misses on both sides: more scatter at the held-out size than in the fit"
        else:
            verdict = f"a single miss among {row.n} runs"
        lines.append(
            f"{row.testbed} / {row.setting} [{row.method}] ({row.holdout}): prediction coverage "
            f"{row.coverage_pred:.0%} < {level:.0%} ({above} run(s) above, {below} below); mean "
            f"signed error {row.mean_rel_error:+.2%}; {verdict}"
        )
    return lines


def summarize_methods(results: pd.DataFrame) -> pd.DataFrame:
    """Per study, hold-out, predicted quantity and method, pooled over its settings (forms,
    source corpora, tasks): the mean absolute relative error, and the coverage and mean relative
    width of the prediction intervals (``METHOD_COLUMNS``)."""
    scale = results["predicted"].abs()
    frame = results.assign(
        abs_error=results["rel_error"].abs(),
        width=(results["upper_pred"] - results["lower_pred"]) / scale,
        covered=results["covered_pred"].astype(float),
        above=(results["actual"] > results["upper_pred"]).astype(float),
        below=(results["actual"] < results["lower_pred"]).astype(float),
    )
    order = {m: i for i, m in enumerate(METHODS)}
    summary = frame.groupby(["testbed", "holdout", "quantity", "method"], sort=False).agg(
        n=("actual", "size"), mean_abs_rel_error=("abs_error", "mean"),
        mean_rel_error=("rel_error", "mean"), coverage=("covered", "mean"),
        mean_rel_width=("width", "mean"), above=("above", "mean"), below=("below", "mean"),
    ).reset_index()  # fmt: skip
    summary["_order"] = summary["method"].map(order)
    return summary.sort_values(["testbed", "holdout", "quantity", "_order"], kind="stable")[
        list(METHOD_COLUMNS)].reset_index(drop=True)  # fmt: skip


def figure(results: pd.DataFrame, testbed: str) -> Figure:
    """Predicted against observed, one panel per method, with the 90% prediction intervals; the
    axes are relative (predicted / observed - 1) so that losses and accuracies share them."""
    mine = results[results["testbed"] == testbed]
    methods = [m for m in METHODS if (mine["method"] == m).any()]
    fig = Figure(figsize=(4.2 * len(methods), 4))
    axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.14, top=0.86, wspace=0.08)
    quantities = list(dict.fromkeys(mine["quantity"]))
    for ax, method in zip(axes, methods, strict=True):
        rows = mine[mine["method"] == method]
        for i, quantity in enumerate(quantities):
            q = rows[rows["quantity"] == quantity]
            if q.empty:
                continue
            y = q["predicted"] / q["actual"] - 1
            low = y - (q["lower_pred"] / q["actual"] - 1)
            high = (q["upper_pred"] / q["actual"] - 1) - y
            ax.errorbar(q["actual"], y, yerr=[low.clip(lower=0), high.clip(lower=0)], fmt="o",
                        ms=3, lw=0.6, alpha=0.7, color=f"C{i}", label=quantity)  # fmt: skip
        ax.axhline(0, color="k", lw=0.8)
        covered = rows["covered_pred"].astype(float).mean()
        ax.set(title=f"{method}: MAE {rows['rel_error'].abs().mean():.2%}, "
                     f"coverage {covered:.0%}", xlabel="observed", xscale="log")  # fmt: skip
    axes[0].set_ylabel("predicted / observed - 1 (bars: 90% interval)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{testbed}: held-out runs, predicted against observed")
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.backtest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--testbeds", nargs="+", default=list(BACKTESTS), choices=list(BACKTESTS))
    parser.add_argument("--data-root", default=None,
                        help="folder with l2l/, gadre/, ladder/, chinchilla/ (default: download)")  # fmt: skip
    parser.add_argument("--out", default="backtest", help="output folder (default: backtest)")
    parser.add_argument("--resamples", type=int, default=100, help="bootstrap resamples")
    parser.add_argument("--level", type=float, default=0.9, help="interval level")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    made = False
    try:
        _check_arguments(args.testbeds, args.resamples, args.level)
        check_out_folder(out)
        made = not out.exists()
        out.mkdir(parents=True, exist_ok=True)  # before the fits: --out may be unwritable
        results = run_backtest(args.testbeds, args.data_root, resamples=args.resamples,
                               level=args.level, seed=args.seed)  # fmt: skip
    except (OSError, ValueError, TestbedUnavailableError) as error:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves no empty --out folder behind
        if isinstance(error, TestbedUnavailableError):
            print(f"error: {error}\n(here: --data-root FOLDER, the folder holding l2l/, gadre/, "
                  "ladder/ and chinchilla/)", file=sys.stderr)  # fmt: skip
        else:
            print(f"error: {error}", file=sys.stderr)
        return 1
    write_csv(results, out, "backtest.csv", COLUMNS)
    summary = write_csv(summarize(results), out, "backtest_summary.csv", SUMMARY_COLUMNS)
    methods = write_csv(summarize_methods(results), out, "backtest_methods.csv", METHOD_COLUMNS)
    figures = [save_figure(figure(results, testbed), out, f"backtest_{testbed}.png").name
               for testbed in dict.fromkeys(results["testbed"])]  # fmt: skip
    print(f"held-out prediction error and {args.level:.0%} interval coverage: coverage / "
          "mean_rel_width of the confidence interval (the law's parameter uncertainty), "
          "coverage_pred / mean_rel_width_pred of the prediction interval (plus the run-to-run "
          "scatter of the fit's residuals)")  # fmt: skip
    print("\n".join(frame_lines(summary, digits=3)))
    print("per method, pooled over each quantity's settings (prediction intervals):")
    print("\n".join(frame_lines(methods, digits=3)))
    notes = shortfalls(summary[summary["method"] == "paper"], args.level)
    if notes:
        print(f"below nominal {args.level:.0%} (prediction interval):")
        print("\n".join(f"  {line}" for line in notes))
    print(
        f"wrote backtest.csv, backtest_summary.csv, backtest_methods.csv, {', '.join(figures)} "
        f"to {out} in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
