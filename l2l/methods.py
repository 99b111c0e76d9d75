"""The prediction methods beyond the papers', for any study: the study's own smaller runs decide
how far to trust, and how to correct, each law's extrapolation.

For each predicted quantity (``l2l.quantities.Quantity``: a corpus' own loss, a translation between
two corpora, a test loss) the study's grid is cut at each of its budgets in turn; the procedure
is refitted on the runs up to the cut and predicts those above (``analysis.calibrate``). How
those nested predictions erred, and how the error grew with the distance of extrapolation,
corrects the real prediction and sizes its interval:

- ``calibrated``: the paper's own procedure (Chinchilla's law of a loss over (N, D), or the
  loss-to-loss law with E's from Chinchilla fits), corrected and widened so;
- ``selected``: the fitting choice whose nested predictions erred least, chosen once per kind of
  quantity for the whole study (``select_predictor``, on the fitting runs only), calibrated so;
- ``multi_source``: a corpus' loss from every other corpus' measured loss at once, the sources'
  calibrated translations weighted by their spread under the correlation of their errors.

Nothing here sees a target run's measured value: the targets' given losses (x) enter the
loss-to-loss predictions, as in the paper; their predicted values (y) never enter any fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.calibrate import Calibrated, Predictor, calibrated_prediction, select_predictor
from analysis.predictors import (
    combine_calibrated,
    frontier_predictor,
    law_predictor,
    loss_to_loss_predictor,
)

SCALE = "C"  # every nested cut is a budget: targets lie beyond the grid in compute
MIN_CUT_RUNS = 7  # a nested fit needs room for Chinchilla's 5 parameters and two points more
MIN_CUT_LEVELS = 3  # ... and three budgets at least, or its extrapolation is unanchored
# A prior on Chinchilla's exponents, as bounds: the range of the published fits. Brandfonbrener
# et al.'s 138 Chinchilla fits of six corpora (their notebooks' opt_params_data.csv) lie between
# alpha 0.13 and 0.61, beta 0.20 and 0.82 (5th to 95th percentile); Hoffmann et al. (0.34, 0.28)
# and Besiroglu et al. (0.35, 0.37) lie inside. A grid of one decade cannot pin the exponents
# (fits run to alpha of 4 and A of 1e21); the bounds keep them where every published law is.
EXPONENT_PRIOR = {"alpha": (0.1, 0.8), "beta": (0.1, 0.8)}


def study_cuts(fit: pd.DataFrame) -> list[float]:
    """The nested cuts of a fit table: each budget below its largest whose runs up to it number
    at least ``MIN_CUT_RUNS``, from the ``MIN_CUT_LEVELS``-th budget on."""
    levels = np.unique(fit[SCALE].to_numpy(float))
    return [float(c) for c in levels[MIN_CUT_LEVELS - 1:-1]
            if int((fit[SCALE] <= c).sum()) >= MIN_CUT_RUNS]


def single_corpus_choices(iso_flop: bool) -> list[Predictor]:
    """What a corpus' own loss over (N, D) can be predicted by; the first is the paper's."""
    choices = [
        law_predictor("chinchilla"),
        law_predictor("chinchilla", drop_smallest=1),
        law_predictor("chinchilla", bounds=EXPONENT_PRIOR,
                      name="chinchilla, exponents within the published range"),
        law_predictor("kaplan"),
        law_predictor("overtrain"),
    ]
    if iso_flop:  # the frontier needs several runs per budget
        choices.append(frontier_predictor())
    return choices


def loss_to_loss_choices() -> list[Predictor]:
    """What a loss can be translated from another by; the first is the paper's procedure."""
    return [loss_to_loss_predictor("chinchilla"), loss_to_loss_predictor("kaplan"),
            loss_to_loss_predictor(None)]


@dataclass
class MethodResult:
    method: str
    choice: str
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    note: str


def describe(result: Calibrated) -> str:
    model = result.model
    if model.n_cuts == 0:
        return (f"the fit's run-to-run scatter only ({model.scatter:.4f} in log): no nested cut "
                "could be fitted")
    return (f"nested backtests: {model.n_cuts} cuts, {model.n_errors} errors; drift "
            f"{model.bias:+.4f} +- {model.bias_spread:.4f} per span, growth {model.growth:.4f} "
            f"per span, scatter {model.scatter:.4f}; target {float(np.max(result.distance)):.2f} "
            "spans beyond the fitted budgets")


def calibrate(predictor: Predictor, quantity, level: float) -> tuple[Calibrated, pd.DataFrame]:
    """``predictor`` on a quantity's grid, its targets predicted with calibrated intervals; and
    its nested errors, each tagged with the run it predicted (to correlate sources)."""
    cuts = study_cuts(quantity.fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bound notes of the nested fits: not the study's laws
        result = calibrated_prediction(predictor, quantity.fit, quantity.targets, SCALE, cuts,
                                       level)
    errors = result.errors.assign(run=quantity.fit.loc[result.errors["row"], "run"].to_numpy())
    return result, errors


def choose(candidates: list[Predictor], quantities: list) -> tuple[Predictor, pd.DataFrame]:
    """One choice for every quantity of a kind, by the nested backtests of their grids."""
    groups = [(q.fit, study_cuts(q.fit)) for q in quantities]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return select_predictor(candidates, groups, SCALE)


def new_methods(quantities: list, level: float, iso_flop: bool, missing: list[str]
                ) -> tuple[list[tuple], dict]:  # fmt: skip
    """``[(quantity, MethodResult), ...]`` for every quantity and method, and the selection's
    scores per kind. A method that cannot be applied to a quantity (too few runs for any nested
    cut of it) is reported in ``missing``, not filled in."""
    rows: list[tuple] = []
    scores = {}
    by_kind: dict[str, list] = {}
    for q in quantities:
        by_kind.setdefault(q.kind, []).append(q)
    calibrated_of: dict[str, tuple[Calibrated, pd.DataFrame]] = {}
    for kind, members in by_kind.items():
        candidates = (single_corpus_choices(iso_flop) if kind == "single corpus"
                      else loss_to_loss_choices())
        for q in members:
            try:
                result, errors = calibrate(candidates[0], q, level)
            except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
                missing.append(f"{q.name}: calibrated: {exc}")
                continue
            calibrated_of[q.name] = (result, errors)
            rows.append((q, MethodResult("calibrated", candidates[0].name, result.point,
                                         result.lower, result.upper, describe(result))))
        try:
            chosen, table = choose(candidates, members)
        except ValueError as exc:
            missing.append(f"{kind}: no fitting choice can be tested on this grid ({exc})")
            continue
        scores[kind] = table
        for q in members:
            try:
                result, _ = calibrate(chosen, q, level)
            except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
                missing.append(f"{q.name}: selected ({chosen.name}): {exc}")
                continue
            rows.append((q, MethodResult("selected", chosen.name, result.point, result.lower,
                                         result.upper, describe(result))))
    rows += _multi_source(by_kind.get("train-to-train", []), calibrated_of, level)
    return rows, scores


def _multi_source(translations: list, calibrated_of: dict, level: float) -> list[tuple]:
    """Each corpus' loss from all its sources at once (two sources at least), as a quantity of
    its own: ``source`` "every other corpus"."""
    into: dict[str, list] = {}
    for q in translations:
        if q.name in calibrated_of:
            into.setdefault(q.corpus, []).append(q)
    rows = []
    for members in into.values():
        if len(members) < 2:
            continue
        by_source = {}
        for q in members:
            result, errors = calibrated_of[q.name]
            by_source[q.source] = (q.targets.assign(distance=result.distance), result, errors)
        frame, center, lower, upper, note = combine_calibrated(by_source, level)
        combined = replace(members[0], source="every other corpus", targets=frame,
                           given="each other corpus' measured loss at the same (N, D)")
        rows.append((combined, MethodResult("multi_source", "every other corpus", center, lower,
                                            upper, note)))
    return rows
