"""Fitting procedures as ``analysis.calibrate.Predictor``s, and their calibrated predictions
combined across sources: the study-independent parts of the new prediction methods.

A ``Predictor`` fits on some rows of a run table (column ``actual`` is the fitted quantity) and
predicts others; ``analysis.calibrate`` runs it on nested cuts of its own fitting data to learn
how it errs in extrapolation. The procedures here know nothing of any paper: each paper's own
procedures (its fit set, its two-step chain) live with its reproduction
(``analysis.reproduce.*``), and the backtests (``analysis.backtest``) drive both.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from analysis.bootstrap import bootstrap
from analysis.calibrate import Calibrated, Predictor, combine_sources, correlation_of_sources
from analysis.fit import fit_law
from analysis.laws import get_form


def quiet_fit(*args, **kwargs):
    """``fit_law`` without its warnings: bound and identifiability notes stay on
    ``law.warnings``, where the callers that report them read them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_law(*args, **kwargs)


def with_bootstrap(law, inputs, target, resamples: int, seed: int):
    """``law`` with bootstrap resamples attached, and the name of the interval it will give."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bootstrap(law, inputs, target, n_resamples=resamples, seed=seed), "bootstrap"


def law_predictor(form: str, objective=None, drop_smallest: int = 0, scale: str = "C",
                  drop_highest: int = 0, bounds: dict | None = None,
                  name: str | None = None) -> Predictor:  # fmt: skip
    """A single-law fitting procedure on a run table (columns N, D, C, M, ``actual``): ``form``
    on its inputs, optionally without the ``drop_smallest`` smallest levels of ``scale`` (the
    fit weighted towards the larger runs) or the ``drop_highest`` highest losses (Epoch's rule),
    or within ``bounds`` (a prior on the parameters' range)."""
    inputs = get_form(form).inputs
    name = name or form + (f", without the {drop_smallest} smallest {scale} level(s)"
                           if drop_smallest else "") + (
        f", {drop_highest} highest losses dropped" if drop_highest else "")

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        if drop_smallest:
            levels = np.unique(fit[scale])
            if levels.size - drop_smallest < 2:
                raise ValueError("too few levels left to fit")
            fit = fit[fit[scale] > levels[drop_smallest - 1]]
        if drop_highest:
            fit = fit.sort_values("actual", kind="stable").iloc[:-drop_highest]
        law = quiet_fit(form, {k: fit[k].to_numpy(float) for k in inputs},
                         fit["actual"].to_numpy(float), objective=objective, bounds=bounds)  # fmt: skip
        return law.predict(**{k: target[k].to_numpy(float) for k in inputs})

    return Predictor(name, fit_predict, len(get_form(form).params))


def frontier_predictor(min_levels: int = 4) -> Predictor:
    """The compute law L = E + A C^-alpha fitted to each budget's lowest loss (the iso-FLOP
    frontier, whose minima Chinchilla's approach 2 fits), predicting the loss at the target's
    budget: what the best model of that compute reaches, whatever the target's shape. Needs an
    iso-FLOP table (several runs per budget) with ``min_levels`` budgets at least."""

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        best = fit.groupby("C")["actual"].min()
        if len(best) < min_levels:
            raise ValueError(f"the frontier needs {min_levels} budgets, got {len(best)}")
        law = quiet_fit("compute", {"C": best.index.to_numpy(float)}, best.to_numpy(float))
        return law.predict(C=target["C"].to_numpy(float))

    return Predictor("compute law of each budget's best run (iso-FLOP frontier)", fit_predict, 3)


def loss_to_loss_predictor(e_form: str | None = "chinchilla") -> Predictor:
    """The loss-to-loss procedure on a table of paired losses of the same models (``actual_x``
    the given loss, ``actual`` the predicted one, N and D the models'): each loss' E from an
    ``e_form`` fit of it over (N, D) on the fitted rows (None: both E's 0, a power law between
    the losses), then kappa and K by OLS in log space on the points above both E's
    (``analysis.workflows.fit_loss_to_loss``), predicting ``actual`` from the targets'
    ``actual_x``."""
    from analysis.workflows import fit_loss_to_loss

    def irreducible(fit: pd.DataFrame, column: str) -> float:
        if e_form is None:
            return 0.0
        inputs = {k: fit[k].to_numpy(float) for k in get_form(e_form).inputs}
        return float(quiet_fit(e_form, inputs, fit[column].to_numpy(float)).params["E"])

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        E_x, E_y = irreducible(fit, "actual_x"), irreducible(fit, "actual")
        x, y = fit["actual_x"].to_numpy(float), fit["actual"].to_numpy(float)
        keep = (x > E_x) & (y > E_y)
        if keep.sum() < 3:
            raise ValueError("fewer than 3 points above both E's")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            law = fit_loss_to_loss(x[keep], y[keep], E_x=E_x, E_y=E_y)
        return law.predict(L=target["actual_x"].to_numpy(float))

    name = (f"loss-to-loss, E's from {e_form} fits" if e_form else
            "loss-to-loss without E's (a power law between the losses)")
    return Predictor(name, fit_predict, 2)


def per_group_fit_predict(candidates: dict, index: int, groups: list):
    """One candidate's procedure over every (task, quantity) group: the group is read from the
    fit table's ``group`` column, so that one Predictor scores the same choice on all of them."""
    keys = list(candidates)

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        group = int(fit["group"].iloc[0])
        return candidates[keys[group]][index].fit_predict(fit, target)

    return fit_predict


def combine_calibrated(
    by_source: dict[str, tuple[pd.DataFrame, Calibrated, pd.DataFrame]], level: float
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, str]:
    """Several sources' calibrated predictions of the same target runs combined into one
    (``analysis.calibrate.combine_sources``, weighted by each source's spread, under the
    correlation of their nested errors). ``by_source``: source -> (its target rows, with ``run``
    and ``distance``; its ``Calibrated`` result; its nested errors with a ``run`` column).
    Returns the target rows (one per run, in run order), the combined point, lower and upper
    bounds, and a note on how the interval was made."""
    runs = sorted(set().union(*(set(t["run"]) for t, _, _ in by_source.values())))
    points, spreads = {}, {}
    for source, (target, result, _) in by_source.items():
        at = pd.Series(result.point, index=target["run"]).reindex(runs)
        spread = pd.Series(result.model.effective_spread(result.distance, level),
                           index=target["run"]).reindex(runs)  # fmt: skip
        points[source], spreads[source] = at.to_numpy(), spread.to_numpy()
    correlation = correlation_of_sources(
        {s: e for s, (_, _, e) in by_source.items()},
        {s: r.model for s, (_, r, _) in by_source.items()}, key=["cut", "run"])
    center, lower, upper = combine_sources(points, spreads, correlation, level)
    frame = pd.concat([t for t, _, _ in by_source.values()]).drop_duplicates("run")
    frame = frame.set_index("run").loc[runs].reset_index()
    off_diagonal = correlation.to_numpy()[~np.eye(len(correlation), dtype=bool)]
    mean_r = float(np.nanmean(off_diagonal)) if off_diagonal.size else 1.0
    note = (f"{len(by_source)} calibrated sources, weights 1/spread^2, mean error "
            f"correlation {mean_r:.2f}")  # fmt: skip
    return frame, center, lower, upper, note
