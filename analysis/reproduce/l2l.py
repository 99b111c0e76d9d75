"""Brandfonbrener et al. 2024, "Loss-to-Loss Prediction: Scaling Laws for All Datasets": the
single-dataset scaling fits of the paper's notebooks and its three loss-to-loss settings, from the
released sweep (KempnerInstitute/loss-to-loss-notebooks ``data/sweep.csv``).

1. ``scaling_fits.csv``: for each of the 6 training corpora, each of the 23 loss columns of the
   notebooks' ``opt_params_data.csv`` and both forms, Kaplan L = ((A/N)^(alpha/beta) + B/D)^beta + E
   and Chinchilla L = E + A/N^alpha + B/D^beta, fitted on all the corpus' runs (N = ``params``,
   D = ``tokens``) with the notebooks' objective, the MEAN Huber loss (delta 1e-3) of log residuals,
   by ``analysis.fit_laws`` (all fits of a form at once, each identical to its ``fit_law``). Check: our objective against the notebooks' parameters evaluated with
   the same float64 objective (``scaling_fits_check.csv``). The file's own ``loss`` column was
   computed in float32 (the notebooks use JAX) and differs from the float64 objective of the same
   parameters by up to ~3e-6 relative, so it is shown but not used as the bar.
2. ``train_to_train.csv``: for the 30 ordered pairs of distinct corpora, models paired by equal
   ``tokens`` (equivalently equal N and C), x = ``val_loss`` of the data0 model, y = ``val_loss``
   of the data1 model; E_x, E_y = E of each corpus' Kaplan ``val_loss`` fit (step 1); kappa and K
   by ordinary least squares of log(y - E_y) on log(x - E_x): L_y = K (L_x - E_x)^kappa + E_y.
3. ``train_to_test.csv``: per corpus and each of the 11 downstream test losses (the 12 of
   ``opt_params_data.csv`` without BoolQ, as the sweep's own ``olmo_suite_ce_loss`` averages the
   OLMo tasks without BoolQ), x = ``val_loss``, y = the test loss of the same model; E_x from the
   Kaplan ``val_loss`` fit, E_y from the Kaplan fit of that test loss.
4. ``test_to_test.csv``: per ordered pair of corpora and test loss, x, y = that test loss of the
   paired data0 and data1 models; E's from the Kaplan fits of that test loss on each corpus.
   Columns data, data1, test, kappa, K, E_x, E_y, r_squared: ``data`` (the issue's column) is
   the corpus of the x models and ``data1`` that of the y models, since a test-to-test law
   relates two corpora (the paper's "test losses of two models trained on two separate train
   datasets"); ``data`` and ``data1`` play the roles of ``train_to_train.csv``'s data0 and data1.

5. ``predictions_1e21.csv``: what each of the 276 scaling fits predicts for the paper's largest run on
   its corpus, depth 40 (d = 2560) at C = 1e21 FLOPs, which the released sweep leaves out:
   N = 2 V d + n (12 d^2 + 4 d) + d with V = 32000 (the parameter count of ``sweep.csv``'s
   ``params`` column), D = C / (6 N) as its ``tokens`` are. Columns ``PREDICTION_COLUMNS``: data,
   loss_name, form, method, N, D, C, prediction, lower, upper (the 90% prediction interval),
   choice (the fitting procedure). Three methods (issue 12):

   - ``paper`` (276 rows, one per scaling fit, first and in ``scaling_fits.csv``'s order): the
     paper's prediction, unchanged; its interval is the fitted law's own prediction interval
     (``Law.predict_interval(kind="prediction")``: delta-method parameter uncertainty combined
     with the fit's residual scatter), which knows nothing of the error of extrapolating 20x
     beyond the largest budget.
   - ``calibrated`` (276 rows): the same form and fit (``analysis.backtest.law_predictor``)
     through ``analysis.calibrate.calibrated_prediction``: nested backtests on the corpus' own
     runs (fit on the budgets up to each of the 3rd to 7th, predict the runs above) estimate how
     the error grows with the distance of extrapolation; the point is corrected by the mean
     drift and the interval widened by its spread and growth, at the distance of 1e21 from the
     sweep's budgets (2e17 to 4.84e19).
   - ``selected`` (138 rows, one per corpus and loss column; ``form`` and ``choice`` name the
     procedure): ONE fitting choice for the whole study, among ``analysis.backtest
     .l2l_candidates()`` (Kaplan, Chinchilla, the over-training form in (C, M), each on every
     budget or without the smallest), chosen by ``select_predictor`` on the nested backtests of
     each corpus' ``val_loss`` runs (the study's own loss: the choice is made on it, not per
     column), then calibrated as above for every loss column. The scores of every candidate are
     in ``selection.csv`` (columns choice, mean_abs_log_error, mean_log_error, n, chosen).

   Runs with a missing value of a loss column are left out of that column's calibrated fits.

6. ``--given GIVEN.csv`` (``python -m analysis.reproduce l2l --data DIR --out DIR --given
   GIVEN.csv``): GIVEN.csv has columns ``data,val_loss``, the measured ``val_loss`` of the
   depth-40 1e21-FLOP run on one or more corpora. ``given_predictions.csv`` (columns
   ``GIVEN_COLUMNS``: data, source, method, prediction, lower, upper) predicts the ``val_loss``
   of that run on every other corpus: for each given source, ``paper`` (the train-to-train law of
   ``train_to_train.csv``, fitted on the whole sweep, with its delta-method prediction interval)
   and ``calibrated`` (the same procedure, ``analysis.backtest``'s train-to-train predictor,
   through nested backtests over the paired sweep runs, at the distance of 1e21 from the sweep's
   budgets); and one row per target corpus with ``source`` = ``all``, method ``multi_source``:
   the sources' calibrated predictions combined (weights 1 / spread^2, the variance under the
   correlation of their nested errors, as ``analysis.backtest``'s multi-source rows). With a
   single given source the ``all`` row equals that source's calibrated row. Bad input (missing
   file, wrong columns, unknown corpus, NaN or non-positive ``val_loss``, a corpus given twice,
   every corpus given) stops the run with a one-line error before any fit.

``r_squared`` of the scaling fits is on the loss scale (as the notebooks'); of the loss-to-loss
fits it is the R^2 of the log-log regression. A point with x <= E_x or y <= E_y has no logarithm;
such points are left out and counted (``n_excluded`` in ``loss_to_loss_check.csv``). It happens only
for SciQ, whose Kaplan fits put E above some of the corpus' own SciQ losses (22 of ~10,000 points).

Reference: the paper's appendix tables of kappa and K (FineWeb -> StarCoder: kappa 1.09041,
K 0.62303); with the notebooks' own E's our OLS gives those numbers exactly (printed as
"with notebook E's"); with our refitted E's they agree to the digits printed below.
``figure1.png`` shows the paper's three settings (train-to-train, train-to-test, test-to-test)
with FineWeb (``fineweb-100b``) models on the x axis.
"""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import fit_law, fit_laws, get_form
from analysis.law import Law
from analysis.reproduce.report import (
    Reproduction,
    fmt,
    frame_lines,
    huber_log_objective,
    save_figure,
    side_by_side,
    write_csv,
)
from analysis.testbeds import load_l2l, wide
from analysis.testbeds.l2l import CORPORA, read_opt_params
from analysis.workflows import fit_loss_to_loss, pair_runs

SCALING_COLUMNS = ("data", "loss_name", "form", "A", "B", "E", "alpha", "beta")
TRAIN_TO_TRAIN_COLUMNS = ("data0", "data1", "kappa", "K", "E_x", "E_y", "r_squared")
TRAIN_TO_TEST_COLUMNS = ("data", "test", "kappa", "K", "E_x", "E_y", "r_squared")
PREDICTION_COLUMNS = ("data", "loss_name", "form", "method", "N", "D", "C", "prediction", "lower",
                      "upper", "choice")  # fmt: skip
SELECTION_COLUMNS = ("choice", "mean_abs_log_error", "mean_log_error", "n", "chosen")
GIVEN_INPUT_COLUMNS = ("data", "val_loss")
GIVEN_COLUMNS = ("data", "source", "method", "prediction", "lower", "upper")
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


def paper_params(n: int) -> int:
    """N at depth n as the sweep counts it (embeddings included); the same formula as
    ``modeling_l2l.paper_param_count``, restated because analysis imports without torch."""
    d = 64 * n
    return 2 * 32000 * d + n * (12 * d * d + 4 * d) + d


def largest_run() -> pd.DataFrame:
    """The target row: the depth-LARGEST_DEPTH run at LARGEST_C (N, D, C, M = D / N)."""
    N = float(paper_params(LARGEST_DEPTH))
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


def _loss_runs(sweep: pd.DataFrame, data: str, loss_name: str) -> pd.DataFrame:
    """A corpus' runs as a fit table for one loss column (``actual``), without the runs that
    lack it."""
    runs = sweep[(sweep["dataset"] == data) & np.isfinite(sweep[loss_name])]
    return runs.assign(actual=runs[loss_name], M=runs["D"] / runs["N"], loss_name=loss_name)


# ``analysis.backtest.l2l_candidates()``'s procedures, as (form, number of smallest budgets left
# out), in its order: to batch them (``_batched``); checked against the candidates' names.
_CANDIDATE_SPECS = tuple((form, drop) for form in ("kaplan", "chinchilla", "overtrain")
                         for drop in (0, 1))  # fmt: skip


def _batched(form: str, drop_smallest: int, tables: dict, cuts: dict):
    """``analysis.backtest.law_predictor(form, drop_smallest=...)`` with every fit that the
    calibration of ``tables`` will ask for (each table's runs up to each cut and all of them)
    made beforehand in one ``fit_laws`` call per form, each identical to its own ``fit_law``
    (about 30 times faster than one by one). A fit not made beforehand (another row set) falls
    back to the procedure itself, so the results are the procedure's in every case."""
    from analysis.backtest import law_predictor
    from analysis.calibrate import Predictor

    procedure = law_predictor(form, drop_smallest=drop_smallest)
    inputs = get_form(form).inputs
    keys, fit_sets, rows_of = [], [], {}
    for key, table in tables.items():
        for top in [*cuts[key], float(table["C"].max())]:
            fit = table[table["C"] <= top]
            if drop_smallest:
                levels = np.unique(fit["C"])
                if levels.size - drop_smallest < 2:
                    continue  # the procedure refuses: left to it
                kept = fit[fit["C"] > levels[drop_smallest - 1]]
            else:
                kept = fit
            keys.append((*key, float(top)))
            fit_sets.append(kept)
            rows_of[keys[-1]] = fit.index.to_numpy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as law_predictor: notes stay on law.warnings
            laws = fit_laws(form, [{k: f[k].to_numpy(float) for k in inputs} for f in fit_sets],
                            [f["actual"].to_numpy(float) for f in fit_sets])  # fmt: skip
        made = dict(zip(keys, laws, strict=True))
    except (ValueError, RuntimeError, np.linalg.LinAlgError):
        made = {}  # one fit failed the batch: every fit by the procedure itself

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        key = (fit["dataset"].iloc[0], fit["loss_name"].iloc[0], float(fit["C"].max()))
        law = made.get(key)
        if law is None or not np.array_equal(rows_of[key], fit.index.to_numpy()):
            return procedure.fit_predict(fit, target)
        return law.predict(**{k: target[k].to_numpy(float) for k in inputs})

    return Predictor(procedure.name, fit_predict, procedure.n_params)


def calibrated_predictions(sweep: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``calibrated`` rows (each form of each scaling fit) and the ``selected`` rows (the
    study's one fitting choice, per corpus and loss column) of ``predictions_1e21.csv``, and the
    selection's scores (``SELECTION_COLUMNS``). The choice is made on the nested backtests of
    every corpus' ``val_loss`` runs (the study's own loss), once, then applied to every column."""
    from analysis.backtest import L2L_MIN_LEVELS, l2l_candidates, law_predictor
    from analysis.calibrate import calibrated_prediction, nested_cuts, select_predictor

    target = largest_run()
    base = target.iloc[0].to_dict()

    def row(data, loss_name, form, method, choice, result):
        return {"data": data, "loss_name": loss_name, "form": form, "method": method,
                **{k: base[k] for k in ("N", "D", "C")}, "prediction": float(result.point[0]),
                "lower": float(result.lower[0]), "upper": float(result.upper[0]),
                "choice": choice}  # fmt: skip

    tables = {(data, loss_name): _loss_runs(sweep, data, loss_name)
              for data, loss_name in itertools.product(CORPORA, LOSS_NAMES)}  # fmt: skip
    cuts = {key: nested_cuts(table["C"], L2L_MIN_LEVELS) for key, table in tables.items()}
    calibrated = {}
    for form in FORMS:
        predictor = _batched(form, 0, tables, cuts)
        for data, loss_name in tables:
            result = calibrated_prediction(predictor, tables[data, loss_name], target, "C",
                                           cuts[data, loss_name], LEVEL)  # fmt: skip
            calibrated[data, loss_name, form] = row(data, loss_name, form, "calibrated", form,
                                                    result)  # fmt: skip
    rows = [calibrated[key] for key in itertools.product(CORPORA, LOSS_NAMES, FORMS)]
    groups = [(tables[data, VAL_LOSS], cuts[data, VAL_LOSS]) for data in CORPORA]
    candidates = l2l_candidates()
    chosen, scores = select_predictor(candidates, groups, "C")
    specs = {law_predictor(form, drop_smallest=drop).name: (form, drop)
             for form, drop in _CANDIDATE_SPECS}  # fmt: skip
    if chosen.name in specs:  # else (l2l_candidates changed): the choice as it is, unbatched
        chosen = _batched(*specs[chosen.name], tables, cuts)
    for data, loss_name in tables:
        result = calibrated_prediction(chosen, tables[data, loss_name], target, "C",
                                       cuts[data, loss_name], LEVEL)  # fmt: skip
        rows.append(row(data, loss_name, chosen.name, "selected", chosen.name, result))
    return pd.DataFrame(rows), scores


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


def paired(sweep: pd.DataFrame, data0: str, data1: str) -> pd.DataFrame:
    """Models of two corpora with equal ``tokens`` (the sweep's configurations share N and C),
    columns suffixed _x (data0) and _y (data1)."""
    return pair_runs(sweep[sweep["dataset"] == data0], sweep[sweep["dataset"] == data1], on=["D"])


def kaplan_E(fits: pd.DataFrame, column: str) -> dict[str, float]:
    kaplan = fits[(fits["form"] == "kaplan") & (fits["loss_name"] == column)]
    return dict(zip(kaplan["data"], kaplan["E"], strict=True))


def all_pairs(sweep: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """``paired`` for the 30 ordered pairs of corpora, merged once (merges cost more than fits)."""
    return {(a, b): paired(sweep, a, b) for a, b in itertools.permutations(CORPORA, 2)}


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


# ----------------------------------------------------------------------------- --given


def read_given(given: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """GIVEN.csv (or its frame) checked: columns exactly ``data,val_loss``, known corpora, each at
    most once and not all of them, finite positive losses. Any problem is a ValueError (or
    FileNotFoundError) with a one-line message, raised before any fit."""
    if isinstance(given, pd.DataFrame):
        frame, name = given, "the given table"
    else:
        name = f"--given {given}"
        if not Path(given).is_file():
            raise FileNotFoundError(f"{name}: no such file")
        try:
            frame = pd.read_csv(given)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
            raise ValueError(f"{name}: not a CSV file with columns data,val_loss "
                             f"({str(error).splitlines()[0]})") from None  # fmt: skip
    columns = [str(c).strip() for c in frame.columns]
    if sorted(columns) != sorted(GIVEN_INPUT_COLUMNS):
        raise ValueError(f"{name}: expected the columns {','.join(GIVEN_INPUT_COLUMNS)}, got "
                         f"{','.join(columns) or 'none'}")  # fmt: skip
    frame = frame.set_axis(columns, axis=1)[list(GIVEN_INPUT_COLUMNS)]
    if frame.empty:
        raise ValueError(f"{name}: no rows (give the val_loss of at least one corpus)")
    data = frame["data"].astype(str).str.strip()
    unknown = sorted(set(data) - set(CORPORA))
    if unknown:
        raise ValueError(f"{name}: unknown corpus {', '.join(map(repr, unknown))}; the known "
                         f"corpora are {', '.join(CORPORA)}")  # fmt: skip
    twice = sorted(data[data.duplicated()].unique())
    if twice:
        raise ValueError(f"{name}: corpus given more than once: {', '.join(twice)}")
    loss = pd.to_numeric(frame["val_loss"], errors="coerce")
    bad = data[~(np.isfinite(loss) & (loss > 0))]
    if len(bad):
        raise ValueError(f"{name}: val_loss must be a finite positive number; not so for "
                         f"{', '.join(bad)}")  # fmt: skip
    if set(data) == set(CORPORA):
        raise ValueError(f"{name}: every corpus is given; nothing left to predict")
    return pd.DataFrame({"data": data.to_numpy(), "val_loss": loss.to_numpy(float)})


GIVEN_RUN = f"depth{LARGEST_DEPTH}-C{LARGEST_C:.0e}"


def given_predictions(
    sweep: pd.DataFrame, given: pd.DataFrame, E: dict[str, float]
) -> pd.DataFrame:
    """``given_predictions.csv`` (``GIVEN_COLUMNS``) from a checked ``read_given`` table: per
    target corpus (not given), per given source the ``paper`` and ``calibrated`` train-to-train
    predictions of the target's ``val_loss``, then the ``all`` / ``multi_source`` row. ``E``:
    each corpus' Kaplan ``val_loss`` E (step 1), as ``train_to_train``."""
    from analysis.backtest import (
        L2L_MIN_LEVELS,
        multi_source_rows,
        paired_runs,
        train_to_train_predictor,
    )
    from analysis.calibrate import calibrated_prediction, nested_cuts

    runs = sweep[np.isfinite(sweep[VAL_LOSS])].assign(actual=lambda f: f[VAL_LOSS])
    measured = dict(zip(given["data"], given["val_loss"], strict=True))
    sources = [c for c in CORPORA if c in measured]
    base = largest_run().iloc[0].to_dict()
    rows = []
    for data1 in (c for c in CORPORA if c not in measured):
        by_source = {}
        for data0 in sources:
            pairs = paired_runs(runs, data0, data1)
            x, y = pairs["actual_x"].to_numpy(float), pairs["actual"].to_numpy(float)
            keep = (x > E[data0]) & (y > E[data1])  # as ``loss_to_loss``: points with logarithms
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                law = fit_law("loss_to_loss", {"L": x[keep]}, y[keep], objective="log_ols",
                              fixed={"E_x": E[data0], "E_y": E[data1]})  # fmt: skip
            at = np.array([measured[data0]])
            lower, upper = law.predict_interval(LEVEL, kind="prediction", L=at)
            rows.append({"data": data1, "source": data0, "method": "paper",
                         "prediction": float(law.predict(L=at)[0]), "lower": float(lower[0]),
                         "upper": float(upper[0])})  # fmt: skip
            target = pd.DataFrame({"run": [GIVEN_RUN], "dataset": [data1], "N": [base["N"]],
                                   "D": [base["D"]], "C": [base["C"]], "M": [base["M"]],
                                   "actual": [np.nan], "actual_x": at})  # fmt: skip
            predictor = train_to_train_predictor(runs, data0, data1)
            result = calibrated_prediction(predictor, pairs, target, "C",
                                           nested_cuts(pairs["C"], L2L_MIN_LEVELS), LEVEL)  # fmt: skip
            rows.append({"data": data1, "source": data0, "method": "calibrated",
                         "prediction": float(result.point[0]), "lower": float(result.lower[0]),
                         "upper": float(result.upper[0])})  # fmt: skip
            errors = result.errors.assign(run=pairs.loc[result.errors["row"], "run"].to_numpy())
            by_source[data0] = (target.assign(distance=result.distance), result, errors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one source: its note's mean correlation is empty
            (combined,) = multi_source_rows(data1, by_source, f"C={LARGEST_C:.0e}", VAL_LOSS,
                                             LEVEL)  # fmt: skip
        rows.append({"data": data1, "source": "all", "method": "multi_source",
                     "prediction": combined["predicted"], "lower": combined["lower_pred"],
                     "upper": combined["upper_pred"]})  # fmt: skip
    return pd.DataFrame(rows, columns=list(GIVEN_COLUMNS))


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


# ----------------------------------------------------------------------------- the reproduction


def reproduce(
    data: str | os.PathLike | None, out: Path, given: str | os.PathLike | pd.DataFrame | None = None
) -> Reproduction:
    """The reproduction; with ``given`` (GIVEN.csv or its frame, checked first, before any fit)
    also ``given_predictions.csv``."""
    given = None if given is None else read_given(given)
    out = Path(out)
    result = Reproduction("l2l")
    sweep = wide(load_l2l(data), sorted(set(LOSS_NAMES)))
    try:
        notebook = read_opt_params(data)
    except FileNotFoundError:
        notebook = None
    fits, laws = scaling_fits(sweep, notebook)
    result.tables["scaling_fits.csv"] = write_csv(fits, out, "scaling_fits.csv", SCALING_COLUMNS)
    check_columns = [c for c in fits.columns if c not in ("A", "B", "alpha", "beta")]
    result.tables["scaling_fits_check.csv"] = write_csv(
        fits, out, "scaling_fits_check.csv", check_columns
    )

    calibrated, selection = calibrated_predictions(sweep)
    largest = pd.concat([largest_run_predictions(fits, laws), calibrated], ignore_index=True)
    result.tables["predictions_1e21.csv"] = write_csv(
        largest, out, "predictions_1e21.csv", PREDICTION_COLUMNS
    )
    result.tables["selection.csv"] = write_csv(selection, out, "selection.csv", SELECTION_COLUMNS)

    E_val = kaplan_E(fits, VAL_LOSS)
    E_test = {test: kaplan_E(fits, test) for test in TEST_LOSSES}
    pairs_of = all_pairs(sweep)
    t2t = train_to_train(pairs_of, E_val)
    tr2te = train_to_test(sweep, E_val, E_test)
    te2te = test_to_test(pairs_of, E_test)
    for name, frame, columns in (
        ("train_to_train.csv", t2t, TRAIN_TO_TRAIN_COLUMNS),
        ("train_to_test.csv", tr2te, TRAIN_TO_TEST_COLUMNS),
        ("test_to_test.csv", te2te, TEST_TO_TEST_COLUMNS),
    ):
        result.tables[name] = write_csv(frame, out, name, columns)
    check = pd.concat(
        [t2t.assign(setting="train_to_train"), tr2te.assign(setting="train_to_test"),
         te2te.assign(setting="test_to_test")], ignore_index=True,
    )  # fmt: skip
    check_columns = ["setting", "data", "data0", "data1", "test", "n_points", "n_excluded"]
    result.tables["loss_to_loss_check.csv"] = write_csv(
        check, out, "loss_to_loss_check.csv", check_columns
    )
    excluded = int(check["n_excluded"].sum())
    result.figures.append(
        save_figure(figure1(sweep, pairs_of, t2t, tr2te, te2te), out, "figure1.png")
    )

    result.say("Brandfonbrener et al. 2024 (loss-to-loss): 6 corpora x 23 losses x 2 forms, "
               "mean Huber(1e-3) on log residuals; loss-to-loss by OLS in log space")  # fmt: skip
    if "objective_notebook_params" in fits:
        ratio = fits["objective"] / fits["objective_notebook_params"] - 1
        result.say(
            f"scaling fits: objective at or below the notebooks' parameters (same float64 "
            f"objective) in {int((ratio <= 1e-9).sum())} of {len(fits)} fits; median relative "
            f"difference {np.median(ratio):+.2e}, worst {ratio.max():+.2e}, best {ratio.min():+.2e}"
        )
    for (data0, data1), paper in REFERENCE.items():
        ours = t2t[(t2t["data0"] == data0) & (t2t["data1"] == data1)].iloc[0]
        rows = [(f"kappa ({data0} -> {data1})", ours["kappa"], paper["kappa"]),
                (f"K ({data0} -> {data1})", ours["K"], paper["K"])]  # fmt: skip
        if notebook is not None:
            E_nb = notebook[(notebook["loss_name"] == VAL_LOSS) & notebook["kaplan"]]
            E_nb = dict(zip(E_nb["data"], E_nb["E"], strict=True))
            pairs = pairs_of[data0, data1]
            nb = loss_to_loss(pairs[f"{VAL_LOSS}_x"], pairs[f"{VAL_LOSS}_y"], E_nb[data0],
                              E_nb[data1])  # fmt: skip
            rows += [("kappa, with notebook E's", nb["kappa"], paper["kappa"]),
                     ("K, with notebook E's", nb["K"], paper["K"])]  # fmt: skip
        result.say("reference: the paper's appendix table of train-to-train kappa and K")
        result.say(*side_by_side(rows))
    table = t2t.pivot(index="data0", columns="data1", values="kappa")
    result.say("train-to-train kappa (rows: x corpus, columns: y corpus):", *frame_lines(
        table.reset_index(), digits=4))  # fmt: skip
    result.say(
        f"train-to-test: kappa {fmt(tr2te['kappa'].min())} to {fmt(tr2te['kappa'].max())}, "
        f"median R^2 {tr2te['r_squared'].median():.4f}; test-to-test: kappa "
        f"{fmt(te2te['kappa'].min())} to {fmt(te2te['kappa'].max())}, median R^2 "
        f"{te2te['r_squared'].median():.4f}; points without a logarithm (x <= E_x or y <= E_y) "
        f"left out: {excluded}"
    )
    own = largest[largest["loss_name"] == VAL_LOSS]
    chosen = selection.loc[selection["chosen"], "choice"].iloc[0]
    result.say(
        f"fitting choice for the study (nested backtests of each corpus' val_loss runs, "
        f"mean |log error| {selection.loc[selection['chosen'], 'mean_abs_log_error'].iloc[0]:.4f}): "
        f"{chosen}"
    )
    label = [m if m == "selected" else f"{m} {f}" for m, f in zip(own["method"], own["form"],
                                                                  strict=True)]  # fmt: skip
    table = own.assign(method=label).assign(
        interval=lambda f: [f"{p:.4f} [{lo:.4f}, {hi:.4f}]" for p, lo, hi in
                            zip(f["prediction"], f["lower"], f["upper"], strict=True)],
    ).pivot(index="data", columns="method", values="interval")  # fmt: skip
    result.say(f"predicted val_loss of the depth-{LARGEST_DEPTH} run at C = {LARGEST_C:.0e} "
               f"(N = {paper_params(LARGEST_DEPTH):.4g}; not in the released sweep), "
               f"{LEVEL:.0%} prediction intervals:", *frame_lines(table.reset_index()))  # fmt: skip
    if given is not None:
        predicted = given_predictions(sweep, given, E_val)
        result.tables["given_predictions.csv"] = write_csv(
            predicted, out, "given_predictions.csv", GIVEN_COLUMNS
        )
        combined = predicted[predicted["method"] == "multi_source"]
        result.say(
            f"val_loss at C = {LARGEST_C:.0e} from the given run(s) on "
            f"{', '.join(given['data'])} (train-to-train; all: the calibrated sources combined):",
            *(f"  {r.data}: {r.prediction:.4f} [{r.lower:.4f}, {r.upper:.4f}]"
              for r in combined.itertuples()),
        )  # fmt: skip
    return result
