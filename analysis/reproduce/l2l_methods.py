"""Brandfonbrener et al.'s sweep predicted beyond the paper's method (items 5 and 6 of
``analysis.reproduce.l2l``): every scaling fit calibrated by nested backtests inside the sweep,
one fitting choice selected for the study, and ``--given``: the depth-40 run's loss on the other
corpora from its measured loss on some, through calibrated train-to-train laws combined.
"""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import fit_law, fit_laws, get_form
from analysis.calibrate import Predictor, calibrated_prediction, nested_cuts, select_predictor
from analysis.predictors import combine_calibrated, law_predictor, quiet_fit
from analysis.reproduce.l2l_paper import (
    FORMS,
    LARGEST_C,
    LARGEST_DEPTH,
    LEVEL,
    LOSS_NAMES,
    VAL_LOSS,
    largest_run,
    loss_to_loss,
    pair_corpora,
)
from analysis.testbeds.l2l import CORPORA

SELECTION_COLUMNS = ("choice", "mean_abs_log_error", "mean_log_error", "n", "chosen")

GIVEN_INPUT_COLUMNS = ("data", "val_loss")

GIVEN_COLUMNS = ("data", "source", "method", "prediction", "lower", "upper")
NESTED_MIN_LEVELS = 3  # the smallest nested fit: the 3 smallest budgets (about 30 runs per corpus)


def fitting_choices() -> list[Predictor]:
    """The fitting choices the loss-to-loss sweep's nested backtests choose among: both of the
    paper's forms and Gadre et al.'s over-training form in (C, M), each on every budget or
    without the smallest one (the fit weighted towards the larger runs)."""
    return [law_predictor(form, drop_smallest=drop) for form in ("kaplan", "chinchilla",
            "overtrain") for drop in (0, 1)]  # fmt: skip


def train_to_train_predictor(sweep: pd.DataFrame, data0: str, data1: str) -> Predictor:
    """The paper's train-to-train procedure on a table of paired runs (``pair_corpora(...,
    as_target=True)``: ``actual`` = the y loss, ``actual_x`` the x loss, ``C`` = the pair's
    budget): the E's from each corpus' Kaplan fit of its runs up to the largest budget of the
    pairs fitted, then OLS in log space."""
    E = {}

    def kaplan_E(corpus: str, top: float) -> float:
        if (corpus, top) not in E:
            runs = sweep[(sweep["dataset"] == corpus) & (sweep["C"] <= top)]
            E[corpus, top] = quiet_fit("kaplan", {"N": runs["N"].to_numpy(), "D":
                                        runs["D"].to_numpy()}, runs["actual"].to_numpy()).params["E"]  # fmt: skip
        return E[corpus, top]

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        top = float(fit["C"].max())
        law = loss_to_loss(fit["actual_x"], fit["actual"], kaplan_E(data0, top),
                           kaplan_E(data1, top))  # fmt: skip
        x = target["actual_x"].to_numpy(float)
        return law["K"] * np.maximum(x - law["E_x"], 0) ** law["kappa"] + law["E_y"]

    return Predictor(f"train-to-train from {data0}", fit_predict, 2)


# ----------------------------------------------------------------------------- calibrated, selected


def _loss_runs(sweep: pd.DataFrame, data: str, loss_name: str) -> pd.DataFrame:
    """A corpus' runs as a fit table for one loss column (``actual``), without the runs that
    lack it."""
    runs = sweep[(sweep["dataset"] == data) & np.isfinite(sweep[loss_name])]
    return runs.assign(actual=runs[loss_name], M=runs["D"] / runs["N"], loss_name=loss_name)


# ``fitting_choices()``'s procedures, as (form, number of smallest budgets left
# out), in its order: to batch them (``_batched``); checked against the candidates' names.
_CANDIDATE_SPECS = tuple((form, drop) for form in ("kaplan", "chinchilla", "overtrain")
                         for drop in (0, 1))  # fmt: skip


def _batched(form: str, drop_smallest: int, tables: dict, cuts: dict):
    """``analysis.predictors.law_predictor(form, drop_smallest=...)`` with every fit that the
    calibration of ``tables`` will ask for (each table's runs up to each cut and all of them)
    made beforehand in one ``fit_laws`` call per form, each identical to its own ``fit_law``
    (about 30 times faster than one by one). A fit not made beforehand (another row set) falls
    back to the procedure itself, so the results are the procedure's in every case."""
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
    target = largest_run()
    base = target.iloc[0].to_dict()

    def row(data, loss_name, form, method, choice, result):
        return {"data": data, "loss_name": loss_name, "form": form, "method": method,
                **{k: base[k] for k in ("N", "D", "C")}, "prediction": float(result.point[0]),
                "lower": float(result.lower[0]), "upper": float(result.upper[0]),
                "choice": choice}  # fmt: skip

    tables = {(data, loss_name): _loss_runs(sweep, data, loss_name)
              for data, loss_name in itertools.product(CORPORA, LOSS_NAMES)}  # fmt: skip
    cuts = {key: nested_cuts(table["C"], NESTED_MIN_LEVELS) for key, table in tables.items()}
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
    candidates = fitting_choices()
    chosen, scores = select_predictor(candidates, groups, "C")
    specs = {law_predictor(form, drop_smallest=drop).name: (form, drop)
             for form, drop in _CANDIDATE_SPECS}  # fmt: skip
    if chosen.name in specs:  # else (fitting_choices changed): the choice as it is, unbatched
        chosen = _batched(*specs[chosen.name], tables, cuts)
    for data, loss_name in tables:
        result = calibrated_prediction(chosen, tables[data, loss_name], target, "C",
                                       cuts[data, loss_name], LEVEL)  # fmt: skip
        rows.append(row(data, loss_name, chosen.name, "selected", chosen.name, result))
    return pd.DataFrame(rows), scores


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
    runs = sweep[np.isfinite(sweep[VAL_LOSS])].assign(actual=lambda f: f[VAL_LOSS])
    measured = dict(zip(given["data"], given["val_loss"], strict=True))
    sources = [c for c in CORPORA if c in measured]
    floor = [c for c in sources if measured[c] <= E[c]]
    if floor:  # (L - E_x)^kappa is 0 there: every law would predict E_y, with no width at all
        raise ValueError("--given: " + "; ".join(
            f"{c} val_loss {measured[c]:g} is at or below {E[c]:.4f}, the irreducible loss E of "
            f"that corpus' Kaplan fit" for c in floor) + ": no run reaches it; check the value")
    base = largest_run().iloc[0].to_dict()
    rows = []
    for data1 in (c for c in CORPORA if c not in measured):
        by_source = {}
        for data0 in sources:
            pairs = pair_corpora(runs, data0, data1, as_target=True)
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
                                           nested_cuts(pairs["C"], NESTED_MIN_LEVELS), LEVEL)  # fmt: skip
            rows.append({"data": data1, "source": data0, "method": "calibrated",
                         "prediction": float(result.point[0]), "lower": float(result.lower[0]),
                         "upper": float(result.upper[0])})  # fmt: skip
            errors = result.errors.assign(run=pairs.loc[result.errors["row"], "run"].to_numpy())
            by_source[data0] = (target.assign(distance=result.distance), result, errors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one source: its note's mean correlation is empty
            _, center, lower, upper, _ = combine_calibrated(by_source, LEVEL)
        rows.append({"data": data1, "source": "all", "method": "multi_source",
                     "prediction": float(center[0]), "lower": float(lower[0]),
                     "upper": float(upper[0])})  # fmt: skip
    return pd.DataFrame(rows, columns=list(GIVEN_COLUMNS))
