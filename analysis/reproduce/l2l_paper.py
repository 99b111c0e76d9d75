"""Brandfonbrener et al. 2024, "Loss-to-Loss Prediction": the paper's own method on its released
sweep, as the notebooks fit it: the single-dataset scaling fits (step 1), their predictions of the
paper's largest run, the three loss-to-loss settings (step 2) and Figure 1. What each table holds
and how it compares with the paper is in ``analysis.reproduce.l2l``, which writes them; the
methods beyond the paper's are in ``analysis.reproduce.l2l_methods``.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import fit_laws, get_form
from analysis.law import Law
from analysis.reproduce.report import huber_log_objective
from analysis.sizes import paper_param_count
from analysis.testbeds.l2l import CORPORA
from analysis.workflows import fit_loss_to_loss, pair_runs

SCALING_COLUMNS = ("data", "loss_name", "form", "A", "B", "E", "alpha", "beta")
TRAIN_TO_TRAIN_COLUMNS = ("data0", "data1", "kappa", "K", "E_x", "E_y", "r_squared")
TRAIN_TO_TEST_COLUMNS = ("data", "test", "kappa", "K", "E_x", "E_y", "r_squared")
PREDICTION_COLUMNS = ("data", "loss_name", "form", "method", "N", "D", "C", "prediction", "lower",
                      "upper", "choice")  # fmt: skip
LEVEL = 0.9  # the level of every interval written
TEST_TO_TEST_COLUMNS = ("data", "data1", "test", "kappa", "K", "E_x", "E_y", "r_squared")
FORMS = ("kaplan", "chinchilla")

VAL_LOSS = "val_loss"
# The 11 downstream test losses: the notebooks' 12 single-task ones without BoolQ.
TEST_LOSSES = tuple(
    f"eval/downstream_ce_loss/{task}_test_ce_loss"
    for task in (
        "arc_challenge", "arc_easy", "hellaswag", "mmlu_humanities", "mmlu_other",
        "mmlu_social_sciences", "mmlu_stem", "openbook_qa", "piqa", "sciq", "winogrande",
    )
)  # fmt: skip
# The 23 loss columns of opt_params_data.csv, in its order.
LOSS_NAMES = (
    "eval/c4_val/CrossEntropyLoss",
    *(f"eval/downstream_ce_loss/{t}_test_ce_loss" for t in ("arc_challenge", "arc_easy", "boolq")),
    *TEST_LOSSES[2:7],
    *TEST_LOSSES[7:],
    *(f"eval/{v}_val/CrossEntropyLoss" for v in ("fineweb_100b", "fineweb_1T", "fineweb_edu_100b",
                                                 "proof_pile_2", "slimpajama", "smollm", "starcoder")),
    "olmo_suite_ce_loss",
    "mmlu_suite_ce_loss",
    VAL_LOSS,
)  # fmt: skip
REFERENCE = {("fineweb-100b", "starcoder"): {"kappa": 1.09041, "K": 0.62303}}
FIGURE_X = "fineweb-100b"
FIGURE_TESTS = ("hellaswag", "arc_easy", "piqa", "mmlu_stem")


# ----------------------------------------------------------------------------- step 1: scaling fits


def r_squared(y, prediction) -> float:
    return float(1 - np.sum((y - prediction) ** 2) / np.sum((y - np.mean(y)) ** 2))


def scaling_fits(
    sweep: pd.DataFrame, notebook: pd.DataFrame | None
) -> tuple[pd.DataFrame, dict[tuple[str, str, str], Law]]:
    """The 276 single-dataset fits, in the notebooks' order (corpus, loss column, form). They are
    independent, so each form's fits run together through ``fit_laws`` (one vectorised solve
    per corpus size); each result is identical to its own ``fit_law``. Returns the table and
    the fitted laws keyed by (data, loss_name, form), for their intervals."""
    keys = list(itertools.product(CORPORA, LOSS_NAMES, FORMS))
    columns = {}
    for data in CORPORA:
        runs = sweep[sweep["dataset"] == data]
        columns[data] = {c: runs[c].to_numpy(dtype=float) for c in ("N", "D", *LOSS_NAMES)}
    laws = {}
    for form in FORMS:
        mine = [key for key in keys if key[2] == form]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bound/identifiability notes: kept in law.warnings
            fitted = fit_laws(
                form,
                [{"N": columns[data]["N"], "D": columns[data]["D"]} for data, _, _ in mine],
                [columns[data][loss_name] for data, loss_name, _ in mine],
            )
        laws.update(zip(mine, fitted, strict=True))
    theirs_of = {}
    if notebook is not None:
        for record in notebook.to_dict("records"):
            form = "kaplan" if record["kaplan"] else "chinchilla"
            theirs_of.setdefault((record["data"], record["loss_name"], form), []).append(record)
    rows = []
    for data, loss_name, form in keys:
        law = laws[data, loss_name, form]
        N, D, y = columns[data]["N"], columns[data]["D"], columns[data][loss_name]
        row = {"data": data, "loss_name": loss_name, "form": form, **law.params}
        prediction = get_form(form).predict(law.params, {"N": N, "D": D})
        row["objective"] = huber_log_objective(y, prediction)
        row["r_squared"] = r_squared(y, prediction)
        row["n_points"] = len(y)
        match = theirs_of.get((data, loss_name, form), [])
        if len(match) == 1:
            theirs = match[0]
            at_theirs = get_form(form).predict(theirs, {"N": N, "D": D})
            row["objective_notebook_params"] = huber_log_objective(y, at_theirs)
            row["loss_notebook_float32"] = float(theirs["loss"])
            row["E_notebook"] = float(theirs["E"])
        rows.append(row)
    return pd.DataFrame(rows), laws


# The paper's largest runs, absent from the released sweep: depth 40 at 1e21 FLOPs on each corpus.
LARGEST_DEPTH, LARGEST_C = 40, 1e21


def largest_run() -> pd.DataFrame:
    """The target row: the depth-LARGEST_DEPTH run at LARGEST_C (N, D, C, M = D / N)."""
    N = float(paper_param_count(LARGEST_DEPTH))
    D = LARGEST_C / (6 * N)
    return pd.DataFrame({"N": [N], "D": [D], "C": [LARGEST_C], "M": [D / N]})


def largest_run_predictions(fits: pd.DataFrame, laws: dict) -> pd.DataFrame:
    """Each scaling fit's prediction for its corpus' run at LARGEST_DEPTH and LARGEST_C (method
    ``paper``), with its law's prediction interval at LEVEL (delta method)."""
    target = largest_run().iloc[0]
    N, D = target["N"], target["D"]
    rows = []
    for fit in fits.to_dict("records"):
        key = (fit["data"], fit["loss_name"], fit["form"])
        prediction = get_form(fit["form"]).predict(fit, {"N": np.array([N]), "D": np.array([D])})
        lower, upper = laws[key].predict_interval(LEVEL, kind="prediction", N=np.array([N]),
                                                  D=np.array([D]))  # fmt: skip
        rows.append({"data": fit["data"], "loss_name": fit["loss_name"], "form": fit["form"],
                     "method": "paper", "N": N, "D": D, "C": LARGEST_C,
                     "prediction": float(prediction[0]), "lower": float(lower[0]),
                     "upper": float(upper[0]), "choice": fit["form"]})  # fmt: skip
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- step 2: loss to loss


def loss_to_loss(x, y, E_x: float, E_y: float) -> dict:
    """OLS of log(y - E_y) on log(x - E_x) (``fit_loss_to_loss`` with both E's given) on the
    points that have both logarithms; the R^2 is the log-log line's."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > E_x) & (y > E_y)
    law = fit_loss_to_loss(x[keep], y[keep], E_x=E_x, E_y=E_y)
    return {"kappa": law.params["kappa"], "K": law.params["K"], "E_x": E_x, "E_y": E_y,
            "r_squared": law.metadata["r_squared_log"], "n_points": int(keep.sum()),
            "n_excluded": int((~keep).sum())}  # fmt: skip


def pair_corpora(sweep: pd.DataFrame, data0: str, data1: str, *, as_target: bool = False
                 ) -> pd.DataFrame:  # fmt: skip
    """Models of two corpora with equal ``tokens`` (the sweep's configurations share N and C),
    columns suffixed _x (data0) and _y (data1); ``as_target``: the data1 model's columns
    unsuffixed (run, dataset, N, C, M, ``actual``), the table a train-to-train predictor fits
    and predicts, with the data0 model's loss as ``actual_x``."""
    pairs = pair_runs(sweep[sweep["dataset"] == data0], sweep[sweep["dataset"] == data1], on=["D"])
    if not as_target:
        return pairs
    return pairs.rename(columns={"run_y": "run", "dataset_y": "dataset", "N_y": "N", "C_y": "C",
                                 "M_y": "M", "actual_y": "actual"})  # fmt: skip


def kaplan_E(fits: pd.DataFrame, column: str) -> dict[str, float]:
    kaplan = fits[(fits["form"] == "kaplan") & (fits["loss_name"] == column)]
    return dict(zip(kaplan["data"], kaplan["E"], strict=True))


def all_pairs(sweep: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """``pair_corpora`` for the 30 ordered pairs of corpora, merged once (merges cost more than
    fits)."""
    return {(a, b): pair_corpora(sweep, a, b) for a, b in itertools.permutations(CORPORA, 2)}


def train_to_train(pairs_of: dict, E: dict[str, float]) -> pd.DataFrame:
    rows = []
    for data0, data1 in itertools.permutations(CORPORA, 2):
        pairs = pairs_of[data0, data1]
        fit = loss_to_loss(pairs[f"{VAL_LOSS}_x"], pairs[f"{VAL_LOSS}_y"], E[data0], E[data1])
        rows.append({"data0": data0, "data1": data1, **fit})
    return pd.DataFrame(rows)


def train_to_test(sweep, E_val: dict, E_test: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for data, test in itertools.product(CORPORA, TEST_LOSSES):
        runs = sweep[sweep["dataset"] == data]
        fit = loss_to_loss(runs[VAL_LOSS], runs[test], E_val[data], E_test[test][data])
        rows.append({"data": data, "test": test, **fit})
    return pd.DataFrame(rows)


def test_to_test(pairs_of: dict, E_test: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for data0, data1 in itertools.permutations(CORPORA, 2):
        pairs = pairs_of[data0, data1]
        for test in TEST_LOSSES:
            fit = loss_to_loss(pairs[f"{test}_x"], pairs[f"{test}_y"], E_test[test][data0],
                               E_test[test][data1])  # fmt: skip
            rows.append({"data": data0, "data1": data1, "test": test, **fit})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figure 1


def figure1(
    sweep, pairs_of: dict, t2t: pd.DataFrame, tr2te: pd.DataFrame, te2te: pd.DataFrame
) -> Figure:
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.13, top=0.9, wspace=0.22)
    colors = {d: f"C{i}" for i, d in enumerate(CORPORA)}

    def curve(ax, x, fit, color):
        grid = np.linspace(max(x.min() * 0.97, fit["E_x"] + 1e-3), x.max() * 1.02, 100)
        ax.plot(grid, fit["K"] * (grid - fit["E_x"]) ** fit["kappa"] + fit["E_y"], color=color)

    left, middle, right = axes
    for data1 in CORPORA:
        if data1 == FIGURE_X:
            continue
        pairs = pairs_of[FIGURE_X, data1]
        fit = t2t[(t2t["data0"] == FIGURE_X) & (t2t["data1"] == data1)].iloc[0]
        left.scatter(pairs[f"{VAL_LOSS}_x"], pairs[f"{VAL_LOSS}_y"], s=8, color=colors[data1],
                     label=f"{data1} (kappa {fit['kappa']:.2f})")  # fmt: skip
        curve(left, pairs[f"{VAL_LOSS}_x"], fit, colors[data1])
    left.set(title="train-to-train", xlabel=f"{FIGURE_X} train loss", ylabel="train loss")
    runs = sweep[sweep["dataset"] == FIGURE_X]
    for i, task in enumerate(FIGURE_TESTS):
        test = f"eval/downstream_ce_loss/{task}_test_ce_loss"
        fit = tr2te[(tr2te["data"] == FIGURE_X) & (tr2te["test"] == test)].iloc[0]
        middle.scatter(runs[VAL_LOSS], runs[test], s=8, color=f"C{i}", label=task)
        curve(middle, runs[VAL_LOSS], fit, f"C{i}")
    middle.set(title="train-to-test", xlabel=f"{FIGURE_X} train loss", ylabel="test loss")
    test = f"eval/downstream_ce_loss/{FIGURE_TESTS[0]}_test_ce_loss"
    for data1 in CORPORA:
        if data1 == FIGURE_X:
            continue
        pairs = pairs_of[FIGURE_X, data1]
        fit = te2te[(te2te["data"] == FIGURE_X) & (te2te["data1"] == data1)
                    & (te2te["test"] == test)].iloc[0]  # fmt: skip
        right.scatter(pairs[f"{test}_x"], pairs[f"{test}_y"], s=8, color=colors[data1], label=data1)
        curve(right, pairs[f"{test}_x"], fit, colors[data1])
    right.set(title=f"test-to-test ({FIGURE_TESTS[0]})", xlabel=f"{FIGURE_X} test loss",
              ylabel="test loss")  # fmt: skip
    for ax in axes:
        ax.legend(fontsize=7)
    return fig
