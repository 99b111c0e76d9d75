"""Gadre et al. 2024, "Language models scale reliably with over-training and on downstream tasks":
the loss law over compute and token multiplier, and the downstream-error law, as the paper's default
configuration fits them (mlfoundations/scaling, ``scaling/shared.py`` ``fit_ds`` and
``scaling/laws.py`` ``curve_fit_powlaw_ours``).

Method, step by step as the repository does it (this is the paper's procedure, so it is implemented
here with scipy rather than with ``analysis.fit_law``):

1. Loss law, per training corpus: the four small models (0.011B, 0.079B, 0.154B, 0.411B) at token
   multiplier M = 20 plus the 0.011B model at M = 320, C4-eval loss (``loss_c4_val``), N = params
   with embeddings. ``scipy.optimize.curve_fit`` (Levenberg-Marquardt, ``maxfev=10000``) of
   L = A N^p + B 6^(p/2) (M N)^p + E from all 128 starts A, B in {1e2, 3e2, 1e3, 3e3},
   p in {-0.1, -0.3}, E in {0, 1, 2, 10}, keeping the smallest sqrt(SSR / (n - 2)) (the first on
   ties). With C = 6 N D and D = M N this is the paper's L = E + (a M^eta + b M^-eta) C^-eta with
   eta = -p / 2, a = A 6^eta, b = B.
2. Error law: the same five runs plus the 1.4B model at M = 20; y = mean top-1 error (1 - accuracy,
   unweighted) over the 17-task subset; ``curve_fit`` of Err = epsilon - k exp(-gamma L) from
   scipy's default start (1, 1, 1), ``maxfev=10000``.
3. ``M_star`` = (b / a)^(1 / (2 eta)), the token multiplier that minimises the fitted loss at fixed
   compute (set dL/dM = 0). It is derived here, not a number the paper tabulates; with every fitted
   run but one at M = 20 the data constrain it weakly.

4. ``gadre_predictions.csv``: what the fitted laws predict for every run of the corpus that neither
   law was fitted on, and for the paper's two extrapolation targets when the data lack them: the
   6.9B model at M = 20 and the 1.4B model at M = 640 (N of the 6.9B model: ``OPEN_LM_7B_PARAMS``).
   The loss comes from the loss law; the error from the error law applied to that predicted loss
   (the paper's chain from (N, M) to error). Where a run is in the data, its observed loss and
   error and the signed relative error (predicted / observed - 1) stand beside the prediction.
   These are the rows with ``method`` = ``paper``: the paper's exact numbers. Each carries the
   90% prediction interval ``loss_predicted_lower``/``_upper`` of the same law refitted by
   ``analysis.fit_law`` (least squares, as ``curve_fit``) on the same five runs: the delta
   method (five points for four parameters cannot be resampled) combined with the fit's
   residual scatter (``Law.predict_interval(kind="prediction")``); ``error_predicted_lower``/
   ``_upper`` are those ends mapped through the fitted error law (increasing in the loss; its
   own uncertainty is left out). It covers the fit's noise only, not the error of
   extrapolation (``analysis.backtest``: 17% coverage of the 1.4B runs' error).

5. Two more methods predict the same targets, each fitted on every run of the corpus smaller
   than the target (N below the target's N), so that every prediction is an extrapolation in
   model size, with the interval of ``analysis.calibrate`` (the error model of nested backtests
   by model size inside those runs, ``NESTED_MIN_LEVELS`` sizes at least; ``choice`` names the
   procedure, ``interval`` the error model):

   - ``calibrated``: the paper's procedure (loss law on the M = 20 runs plus the smallest model at
     M = 320 of the sizes fitted, error law on the same runs, chained) with its calibrated
     interval. Its fit set needs five runs, so it cannot be refitted at the nested cuts below
     four sizes: for the 1.4B targets (fitted on the four small sizes) its calibration is the
     run-to-run scatter only (no nested error, no correction: ``interval`` says "0 nested
     cuts"); for the 6.9B target the cut at 0.411B gives it the 1.4B runs' errors.
   - ``selected``: the candidate of ``fitting_choices`` (the paper's fit set,
     every run with M <= 20, every run) with the smallest nested-backtest error, chosen once for
     the study pooled over every corpus, separately for the loss and for the chained error. The
     choice looks only at runs below the target's size: for the 6.9B target that is every
     released run; for the 1.4B runs, whose observed values the rows report, it is the runs below
     1.4B (as ``analysis.backtest``), so their relative errors stay those of a held-out check.

   The new methods predict a target only when at least ``MIN_FIT_SIZES`` (4) model sizes lie
   below it, as many as the paper's loss law is fitted on: the 1.4B runs and the 6.9B target.
   The runs of the smaller sizes have NaN predictions in these rows: with three sizes or fewer
   the paper's fit set cannot be formed, and a nested backtest of the others would rest on
   fits of two sizes (slow, as the 128-start ``curve_fit`` wanders on 6 points, and telling
   little about a law's extrapolation).

Reference: the paper's Table 6, C4 row (E 1.51, a 141, b 190, eta 0.121, epsilon 0.850, k 2.08,
gamma 0.756). This reproduction matches it to the printed digits.
"""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.optimize import OptimizeWarning, curve_fit

from analysis.calibrate import Predictor, calibrated_prediction, nested_cuts, select_predictor
from analysis.fit import single_threaded
from analysis.predictors import quiet_fit
from analysis.reproduce.report import Reproduction, save_figure, side_by_side, write_csv
from analysis.testbeds import load_gadre, wide
from analysis.testbeds.gadre import DATASETS, MODEL_SIZES, SUBSET_17, model_name

COLUMNS = ("dataset", "E", "a", "b", "eta", "epsilon", "k", "gamma", "M_star")
PREDICTION_COLUMNS = ("dataset", "method", "choice", "size", "N", "M", "D", "C", "in_data",
                      "loss_predicted", "loss_predicted_lower", "loss_predicted_upper",
                      "loss_observed", "loss_relative_error", "error_predicted",
                      "error_predicted_lower", "error_predicted_upper", "error_observed",
                      "error_relative_error", "interval")  # fmt: skip
METHODS = ("paper", "calibrated", "selected")
LEVEL = 0.9  # of every prediction interval in gadre_predictions.csv
PAPER_CHOICE = "paper's fit set"  # the name of ``paper_predictor``
MIN_FIT_SIZES = 4  # the new methods predict a target with at least 4 model sizes below it


def open_lm_params(width: int, layers: int, vocab: int = 50432) -> int:
    """Parameters of an open_lm decoder as the released ``params`` count them: per layer 4 d^2
    (attention) + 3 d h (SwiGLU, h = 256 ceil((8 d / 3) / 256), open_lm's rounding), input and
    untied output embeddings, and 2 L + 1 norm weights of width d. For open_lm_1b (2048, 24) this
    is 1,439,795,200, its released ``params`` exactly."""
    hidden = 256 * ((int(8 * width / 3) + 255) // 256)
    return layers * (4 * width**2 + 3 * width * hidden) + 2 * vocab * width + (2 * layers + 1) * width


# The 6.9B runs are not in the released data; open_lm_7b is width 4096, 32 layers.
OPEN_LM_7B_PARAMS = open_lm_params(4096, 32)
# The paper's extrapolation targets (model, N, M): the 6.9B model at M = 20, the 1.4B at M = 640.
TARGETS = (("open_lm_7b", OPEN_LM_7B_PARAMS, 20.0), ("open_lm_1b", open_lm_params(2048, 24), 640.0))
LOSS = "loss_c4_val"
LOSS_MODELS = ("d=96_l=8_h=4", "d=512_l=8_h=4", "d=576_l=24_h=8", "d=1024_l=24_h=8")
SMALLEST, ERROR_MODEL = "d=96_l=8_h=4", "open_lm_1b"
# scaling/laws.py curve_fit_powlaw_ours: the 4 x 4 x 2 x 4 grid of starts (A, B, p, E).
STARTS = tuple(
    itertools.product(
        (1e2, 3e2, 1e3, 3e3), (1e2, 3e2, 1e3, 3e3), (-0.1, -0.3), (0.0, 1.0, 2.0, 10.0)
    )
)
TABLE_6 = {"c4_original": {"E": 1.51, "a": 141, "b": 190, "eta": 0.121, "epsilon": 0.850,
                           "k": 2.08, "gamma": 0.756}}  # fmt: skip


def loss_law(x: np.ndarray, A: float, B: float, p: float, E: float) -> np.ndarray:
    """The repository's parameterisation: L = A N^p + B 6^(p/2) (M N)^p + E, with x = (N, M)."""
    N, M = x
    return A * np.power(N, p) + B * np.power(6, p / 2) * np.power(M * N, p) + E


def error_law(loss: np.ndarray, k: float, gamma: float, epsilon: float) -> np.ndarray:
    """Err = epsilon - k exp(-gamma L), in the argument order of the repository's lambda."""
    return epsilon - k * np.exp(-gamma * loss)


def fit_loss_law(N, M, loss) -> dict[str, float]:
    """128-start ``curve_fit`` of ``loss_law``; the paper's parameters of the best start.
    Deterministic, so a fit of the same points is computed once per process (the nested
    backtests of ``new_method_predictions`` and ``analysis.backtest`` refit the same sets: the
    loss and the chained error, the selection and the calibration); a copy is returned."""
    x = np.array([N, M], dtype=float)
    y = np.asarray(loss, dtype=float)
    key = (x.tobytes(), y.tobytes())
    if key not in _LOSS_FITS:
        if len(_LOSS_FITS) >= 1024:
            _LOSS_FITS.clear()
        _LOSS_FITS[key] = _fit_loss_law(x, y)
    return dict(_LOSS_FITS[key])


_LOSS_FITS: dict[tuple[bytes, bytes], dict[str, float]] = {}


def _fit_loss_law(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    best, best_residual, failed = None, np.inf, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # covariance warnings: parameters only
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow while LM probes far steps
        for start in STARTS:
            try:
                popt, _ = curve_fit(loss_law, x, y, p0=list(start), maxfev=10000)
            except RuntimeError:  # maxfev reached: the repository would stop here; we skip it
                failed += 1
                continue
            residual = np.sqrt(np.sum((y - loss_law(x, *popt)) ** 2) / (y.size - 2))
            if residual < best_residual:
                best, best_residual = popt, residual
    if best is None:
        raise RuntimeError("curve_fit did not converge from any of the 128 starts")
    A, B, p, E = best
    eta = -p / 2
    return {"E": E, "a": A * 6**eta, "b": B, "eta": eta, "residual": best_residual,
            "failed_starts": failed}  # fmt: skip


def fit_error_law(loss, error) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        (k, gamma, epsilon), _ = curve_fit(
            error_law, np.asarray(loss, float), np.asarray(error, float), maxfev=10000
        )
    return {"epsilon": epsilon, "k": k, "gamma": gamma}


def overtrain_loss(params: dict, C, M) -> np.ndarray:
    """The fitted law in the paper's form L = E + (a M^eta + b M^-eta) C^-eta."""
    eta = params["eta"]
    return params["E"] + (params["a"] * M**eta + params["b"] * M**-eta) * C**-eta


def runs_frame(data) -> pd.DataFrame:
    """One row per run: coordinates, model name, C4-eval loss and the 17-task mean error."""
    frame = wide(load_gadre(data))
    frame["model"] = [model_name(run) for run in frame["run"]]
    accuracy = [f"acc_{task}" for task in SUBSET_17]
    missing = [c.removeprefix("acc_") for c in accuracy if c not in frame.columns]
    if missing:
        raise ValueError(f"the evaluations lack tasks of the paper's 17-task subset: {missing}")
    if LOSS not in frame.columns:
        raise ValueError(f"the model records lack the C4-eval loss ({LOSS})")
    frame["error"] = 1.0 - frame[accuracy].mean(axis=1)
    return frame


def fit_points(runs: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs each law is fitted on, in the repository's order (M = 20 by compute, then M = 320)."""
    corpus = runs[runs["dataset"] == dataset]
    at_20 = corpus[corpus["model"].isin(LOSS_MODELS) & (corpus["M"] == 20)].sort_values("C")
    at_320 = corpus[(corpus["model"] == SMALLEST) & (corpus["M"] == 320)]
    big = corpus[(corpus["model"] == ERROR_MODEL) & (corpus["M"] == 20)]
    loss_points = pd.concat([at_20, at_320])
    if len(at_20) != 4 or len(at_320) != 1 or len(big) != 1:
        raise ValueError(
            f"{dataset}: the paper's fit needs the 4 small models at M = 20, the 0.011B model at "
            f"M = 320 and the 1.4B model at M = 20; found {len(at_20)}, {len(at_320)}, {len(big)}"
        )
    return loss_points, pd.concat([loss_points, big])


def fit_dataset(runs: pd.DataFrame, dataset: str) -> dict[str, float]:
    loss_points, error_points = fit_points(runs, dataset)
    params = fit_loss_law(loss_points["N"], loss_points["M"], loss_points[LOSS])
    params.update(fit_error_law(error_points[LOSS], error_points["error"]))
    params["M_star"] = (params["b"] / params["a"]) ** (1 / (2 * params["eta"]))
    return {"dataset": dataset, **params}


def predictions(runs: pd.DataFrame, fit: dict) -> pd.DataFrame:
    """The fitted laws' predictions for every run of ``fit``'s corpus outside both fits, and for
    the paper's TARGETS the data lack, with observed values where the data have them."""
    corpus = runs[runs["dataset"] == fit["dataset"]]
    _, error_points = fit_points(runs, fit["dataset"])
    held_out = corpus[~corpus["run"].isin(error_points["run"])]
    rows = [{"model": r["model"], "N": r["N"], "M": r["M"], "loss_observed": r[LOSS],
             "error_observed": r["error"], "in_data": True} for r in held_out.to_dict("records")]
    for model, N, m in TARGETS:
        if ((held_out["model"] == model) & (held_out["M"] == m)).any():
            continue
        rows.append({"model": model, "N": float(N), "M": m, "loss_observed": np.nan,
                     "error_observed": np.nan, "in_data": False})  # fmt: skip
    table = pd.DataFrame(rows)
    table.insert(0, "dataset", fit["dataset"])
    table["size"] = [MODEL_SIZES[m] for m in table["model"]]
    table["D"] = table["M"] * table["N"]  # the runs' tokens are M N exactly
    table["C"] = 6 * table["N"] * table["D"]
    table["loss_predicted"] = overtrain_loss(fit, table["C"].to_numpy(), table["M"].to_numpy())
    table["error_predicted"] = error_law(table["loss_predicted"].to_numpy(), fit["k"],
                                         fit["gamma"], fit["epsilon"])  # fmt: skip
    lower, upper = paper_loss_interval(runs, fit, table["C"].to_numpy(), table["M"].to_numpy())
    table["loss_predicted_lower"], table["loss_predicted_upper"] = lower, upper
    # the error law is monotone in the loss (increasing for k, gamma > 0): map the ends
    ends = [error_law(v, fit["k"], fit["gamma"], fit["epsilon"]) for v in (lower, upper)]
    table["error_predicted_lower"] = np.minimum(*ends)
    table["error_predicted_upper"] = np.maximum(*ends)
    table["method"], table["choice"] = "paper", PAPER_CHOICE
    table["interval"] = (f"delta method of the refitted loss law and its residual scatter "
                         f"({LEVEL:.0%} prediction), mapped through the error law")  # fmt: skip
    _relative_errors(table)
    return table.sort_values(["in_data", "C", "M"], ascending=[False, True, True])


def _relative_errors(table: pd.DataFrame) -> None:
    for what in ("loss", "error"):
        table[f"{what}_relative_error"] = table[f"{what}_predicted"] / table[f"{what}_observed"] - 1


# ----------------------------------------------------------------------------- new methods

NESTED_MIN_LEVELS = 2  # the smallest nested fit: the 0.011B and 0.079B runs


def paper_predictor(with_error: bool) -> Predictor:
    """The paper's procedure at a cut: loss law on the M = 20 runs plus the smallest model at
    M = 320 (``fit_points``) of the sizes fitted, the error law on the same runs; predicts the
    loss, or (``with_error``) the error chained through it."""

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        smallest = fit["N"].min()
        chosen = fit[(fit["M"] == 20) | ((fit["N"] == smallest) & (fit["M"] == 320))]
        if len(chosen) < 5:  # 4 runs fix the 4 parameters exactly: nothing left to test
            raise ValueError("the paper's fit set needs 5 runs")
        return _fit_and_chain(chosen, target, with_error)

    return Predictor(PAPER_CHOICE, fit_predict, 7 if with_error else 4)


def _fit_and_chain(fit: pd.DataFrame, target: pd.DataFrame, with_error: bool) -> np.ndarray:
    params = fit_loss_law(fit["N"], fit["M"], fit[LOSS])
    loss = overtrain_loss(params, target["C"].to_numpy(), target["M"].to_numpy())
    if not with_error:
        return loss
    error = fit_error_law(fit[LOSS], fit["error"])
    return error_law(loss, error["k"], error["gamma"], error["epsilon"])


def fitting_choices(with_error: bool) -> list[Predictor]:
    """The paper's fit set, or every run of the fitted sizes with M up to 20, or every run
    (all token multipliers): how much of the over-training grid the laws should see."""

    def subset(limit):
        def fit_predict(fit, target):
            return _fit_and_chain(fit[fit["M"] <= limit], target, with_error)
        return fit_predict

    return [paper_predictor(with_error),
            Predictor("every run with M <= 20", subset(20), 7 if with_error else 4),
            Predictor("every run", subset(np.inf), 7 if with_error else 4)]  # fmt: skip




def paper_loss_interval(runs: pd.DataFrame, fit: dict, C, M, level: float = LEVEL):
    """The 90% prediction interval of the paper's loss law at (C, M): the same law refitted by
    ``analysis.fit_law`` (least squares, as ``curve_fit``) on the paper's five runs, the delta
    method combined with its residual scatter (as ``analysis.backtest``)."""
    loss_points, _ = fit_points(runs, fit["dataset"])
    inputs = {"C": loss_points["C"].to_numpy(float), "M": loss_points["M"].to_numpy(float)}
    law = quiet_fit("overtrain", inputs, loss_points[LOSS].to_numpy(float),
                     objective="least_squares")  # fmt: skip
    return law.predict_interval(level, kind="prediction", C=np.asarray(C, float),
                                M=np.asarray(M, float))  # fmt: skip


def new_method_predictions(runs: pd.DataFrame, paper: pd.DataFrame,
                           level: float = LEVEL) -> pd.DataFrame:  # fmt: skip
    """The ``calibrated`` and ``selected`` rows (item 5 of the module's docstring) of the targets
    of ``paper`` (the paper's rows of every corpus): per target size, each corpus' runs below it
    are the fit table; the loss and the chained error are calibrated separately."""
    keep = ["dataset", "size", "N", "M", "D", "C", "in_data", "loss_observed", "error_observed"]
    tables = {m: paper[keep].reset_index(drop=True).assign(method=m) for m in METHODS[1:]}
    notes = {m: {what: [""] * len(paper) for what in ("choice", "interval")} for m in tables}
    base = tables["calibrated"]
    for what, column, with_error in (("loss", LOSS, False), ("error", "error", True)):
        candidates = fitting_choices(with_error)
        for method in tables:
            tables[method][f"{what}_predicted"] = np.nan
            tables[method][f"{what}_predicted_lower"] = np.nan
            tables[method][f"{what}_predicted_upper"] = np.nan
        for horizon in sorted(base["N"].unique()):
            fits = {d: runs[(runs["dataset"] == d) & (runs["N"] < horizon)]
                    for d in base["dataset"].unique()}  # fmt: skip
            fits = {d: f.assign(actual=f[column]) for d, f in fits.items()}
            cuts = {d: nested_cuts(f["N"], NESTED_MIN_LEVELS) for d, f in fits.items()}
            if any(f["N"].nunique() < MIN_FIT_SIZES for f in fits.values()):
                continue  # too few smaller sizes to extrapolate from: NaN rows
            groups = [(f, cuts[d]) for d, f in fits.items()]
            try:  # once for the study at this horizon, pooled over the corpora
                chosen, _ = select_predictor(candidates, groups, "N")
            except ValueError:  # no candidate can be tested on runs this small
                chosen = None
            for method, predictor in (("calibrated", candidates[0]), ("selected", chosen)):
                if predictor is None:
                    continue
                for dataset, fit in fits.items():
                    at = base.index[(base["dataset"] == dataset) & (base["N"] == horizon)]
                    if at.empty:
                        continue
                    try:
                        result = calibrated_prediction(predictor, fit, base.loc[at], "N",
                                                       cuts[dataset], level)  # fmt: skip
                    except (ValueError, RuntimeError, np.linalg.LinAlgError):
                        continue  # too few smaller sizes for this procedure: NaN
                    table = tables[method]
                    table.loc[at, f"{what}_predicted"] = result.point
                    table.loc[at, f"{what}_predicted_lower"] = result.lower
                    table.loc[at, f"{what}_predicted_upper"] = result.upper
                    model = result.model
                    for i in at:
                        notes[method]["choice"][i] += f"{what}: {predictor.name}; "
                        notes[method]["interval"][i] += (
                            f"{what}: calibrated on {model.n_cuts} nested cuts "
                            f"({model.n_errors} errors), bias {model.bias:+.4f} +- "
                            f"{model.bias_spread:.4f}, growth {model.growth:.4f} per span, "
                            f"scatter {model.scatter:.4f}, distance {result.distance[0]:.2f}; ")
    for method, table in tables.items():
        table["choice"] = [c.removesuffix("; ") for c in notes[method]["choice"]]
        table["interval"] = [c.removesuffix("; ") for c in notes[method]["interval"]]
        _relative_errors(table)
    return pd.concat(tables.values(), ignore_index=True)


def figure(runs: pd.DataFrame, fits: pd.DataFrame) -> Figure:
    """The paper's Figure 1 layout per corpus: loss against compute by M, error against loss."""
    fig = Figure(figsize=(12, 7))
    axes = fig.subplots(2, len(fits), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.95, wspace=0.25, hspace=0.3)
    for column, fit in enumerate(fits.to_dict("records")):
        corpus = runs[runs["dataset"] == fit["dataset"]]
        loss_points, error_points = fit_points(runs, fit["dataset"])
        top, bottom = axes[0][column], axes[1][column]
        grid = np.geomspace(corpus["C"].min() / 2, corpus["C"].max() * 2, 100)
        colors = dict(
            zip(sorted(corpus["M"].unique()), _colors(corpus["M"].nunique()), strict=True)
        )
        for m, group in corpus.groupby("M"):
            top.scatter(group["C"], group[LOSS], s=12, color=colors[m], label=f"M={m:g}")
            top.plot(grid, overtrain_loss(fit, grid, m), color=colors[m], lw=0.8)
        top.scatter(loss_points["C"], loss_points[LOSS], s=60, facecolors="none", edgecolors="k",
                    label="fitted on")  # fmt: skip
        top.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="C4 eval loss",
                title=fit["dataset"])  # fmt: skip
        losses = np.linspace(corpus[LOSS].min() * 0.95, corpus[LOSS].max(), 100)
        bottom.scatter(corpus[LOSS], corpus["error"], s=12, color="0.6", label="all runs")
        bottom.scatter(error_points[LOSS], error_points["error"], s=40, color="k",
                       label="fitted on")  # fmt: skip
        bottom.plot(losses, error_law(losses, fit["k"], fit["gamma"], fit["epsilon"]), color="C3")
        bottom.set(xlabel="C4 eval loss", ylabel="17-task mean top-1 error")
    axes[0][0].legend(fontsize=6, ncol=2)
    axes[1][0].legend(fontsize=7)
    return fig


def _with_interval(row: dict, column: str) -> str:
    if not np.isfinite(row[column]):
        return "-"
    return f"{row[column]:.4f} [{row[column + '_lower']:.4f}, {row[column + '_upper']:.4f}]"


def _colors(n: int):
    from matplotlib import colormaps

    return [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]


def reproduce(data: str | os.PathLike | None, out: Path) -> Reproduction:
    with single_threaded():  # tiny problems: BLAS threads only add hand-off latency
        return _reproduce(data, out)


def _reproduce(data: str | os.PathLike | None, out: Path) -> Reproduction:
    result = Reproduction("gadre")
    runs = runs_frame(data)
    present = [d for d in DATASETS if d in set(runs["dataset"])]
    fits = pd.DataFrame([fit_dataset(runs, d) for d in present])
    result.tables["gadre_fits.csv"] = write_csv(fits, out, "gadre_fits.csv", COLUMNS)
    paper = pd.concat([predictions(runs, fit) for fit in fits.to_dict("records")])
    predicted = pd.concat([paper, new_method_predictions(runs, paper)], ignore_index=True)
    result.tables["gadre_predictions.csv"] = write_csv(
        predicted, out, "gadre_predictions.csv", PREDICTION_COLUMNS
    )
    result.figures.append(save_figure(figure(runs, fits), out, "gadre_fits.png"))

    result.say("Gadre et al. 2024: loss law on the 4 small models at M=20 + 0.011B at M=320 "
               "(C4 eval loss, 128-start curve_fit); error law adds 1.4B at M=20 (17-task error)")  # fmt: skip
    for fit in fits.to_dict("records"):
        paper = TABLE_6.get(fit["dataset"], {})
        result.say(
            f"{fit['dataset']}" + ("  (paper: Table 6)" if paper else "  (no paper value given)")
        )
        result.say(*side_by_side((p, fit[p], paper.get(p)) for p in COLUMNS[1:]))
    for fit in fits.to_dict("records"):
        if fit["failed_starts"]:
            result.say(f"note: {fit['dataset']}: {fit['failed_starts']} of 128 starts hit maxfev "
                       "and were skipped (the repository would have raised)")  # fmt: skip
    result.say("predictions (gadre_predictions.csv): loss law, then error law on the predicted "
               f"loss; [{LEVEL:.0%} prediction interval]; calibrated / selected: fitted on the "
               "runs below the target's size, intervals from nested backtests")  # fmt: skip
    targets = {(MODEL_SIZES[model], m) for model, _, m in TARGETS}
    for dataset, group in predicted.groupby("dataset", sort=False):
        for method in METHODS:
            rows = group[(group["method"] == method) & group["in_data"]]
            done = rows[rows["loss_predicted"].notna()]
            result.say(
                f"  {dataset} [{method}]: {len(done)} of {len(rows)} held-out runs in the data "
                "predicted, median |relative error| "
                f"loss {done['loss_relative_error'].abs().median():.1%}, "
                f"error {done['error_relative_error'].abs().median():.1%}"
            )
        for row in group.to_dict("records"):
            if (row["size"], row["M"]) not in targets:
                continue
            seen = (f"observed {row['loss_observed']:.4f} / {row['error_observed']:.4f}"
                    if row["in_data"] else "not in the data")  # fmt: skip
            result.say(
                f"    {row['size']} M={row['M']:g} {row['method']:>10}: loss "
                f"{_with_interval(row, 'loss_predicted')}, error "
                f"{_with_interval(row, 'error_predicted')} ({seen})"
                + ("" if row["method"] == "paper" else f"  [{row['choice']}]")
            )
    selected = predicted[(predicted["method"] == "selected") & (predicted["size"] ==
                         MODEL_SIZES[TARGETS[0][0]])]["choice"].unique()  # fmt: skip
    result.say(f"selected for the {MODEL_SIZES[TARGETS[0][0]]} target (nested backtests on every "
               f"released run, pooled over the corpora): {'; '.join(selected)}")  # fmt: skip
    sizes = ", ".join(f"{MODEL_SIZES[m]}" for m in LOSS_MODELS)
    result.say(f"fitted on {sizes} (M=20), 0.011B (M=320); error law adds 1.4B (M=20). "
               "M_star = (b/a)^(1/(2 eta)) is derived, not a paper number.")  # fmt: skip
    return result
