"""The compute-optimal model size N*, data D* and the loss there, for a FLOP budget C, by
Chinchilla's approaches 2 and 3 (Hoffmann et al. 2022, section 3), with intervals.

- Approach 3, ``parametric_optimum``: minimise a fitted law of (N, D) along the budget's
  iso-FLOP line D = C / (6 N) (``analysis.workflows.compute_optimal``, which owns the closed
  forms); the interval is the spread of the same optimum over the law's bootstrap parameter
  samples (``analysis.bootstrap``), so it holds the fit's noise, not the error of extrapolating
  the form beyond the fitted budgets.
- Approach 2, ``isoflop_optimum``: at each budget of the grid, a parabola of the loss in log N
  through that budget's runs; its vertex is the budget's optimal size and loss. Power laws
  N*(C) = k C^a (least squares in log-log) and L*(C) = E + A C^-alpha (the ``compute`` form,
  ``analysis.fit_law``) through the vertices are extrapolated to C; D* = C / (6 N*). The
  interval comes from a bootstrap over runs within each budget (each resample refits every
  parabola and both laws), so it holds the scatter of the runs and how well each budget's
  runs bracket its optimum.

A budget whose parabola opens downwards, or whose vertex lies outside the sizes it ran (an
optimum the budget did not bracket), is left out of approach 2 and counted (``n_budgets``
says how many were used). Both approaches use C = 6 N D, the planning convention of the
loss-to-loss sweep (its ``tokens`` are C / (6 ``params``)).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from analysis.fit import fit_law, fit_laws
from analysis.law import Law
from analysis.workflows import compute_optimal

ALLOCATION_COLUMNS = ("approach", "C", "N", "N_lower", "N_upper", "D", "D_lower", "D_upper",
                      "loss", "loss_lower", "loss_upper", "n_budgets")  # fmt: skip
FLOPS_PER_TOKEN = 6.0


def _quantiles(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: NaN bounds
        lower, upper = np.nanquantile(draws, [tail, 1 - tail], axis=0)
    return lower, upper


def _table(approach: str, budget, N, D, loss, N_bounds, D_bounds, loss_bounds,
           n_budgets) -> pd.DataFrame:  # fmt: skip
    return pd.DataFrame({
        "approach": approach, "C": budget, "N": N, "N_lower": N_bounds[0], "N_upper": N_bounds[1],
        "D": D, "D_lower": D_bounds[0], "D_upper": D_bounds[1], "loss": loss,
        "loss_lower": loss_bounds[0], "loss_upper": loss_bounds[1], "n_budgets": n_budgets,
    })[list(ALLOCATION_COLUMNS)]  # fmt: skip


def parametric_optimum(law: Law, budget, level: float = 0.9) -> pd.DataFrame:
    """Approach 3: N*, D* and the loss at each ``budget`` from a law of (N, D) (chinchilla,
    kaplan) or of (C, M) (overtrain), one row each (``ALLOCATION_COLUMNS``); the bounds are the
    ``level`` percentiles of the optimum over the law's bootstrap samples (NaN without them)."""
    point = compute_optimal(law, budget, flops_per_token=FLOPS_PER_TOKEN)
    budgets = point["C"].to_numpy(float)
    nan = np.full(budgets.size, np.nan)
    bounds = {"N": (nan, nan), "D": (nan, nan), "loss": (nan, nan)}
    if law.samples is not None:
        names = law.form_spec.params
        draws = {"N": [], "D": [], "loss": []}
        for sample in law.samples:
            drawn = replace(law, params=dict(zip(names, map(float, sample), strict=True)),
                            samples=None, covariance=(), stderr={})  # fmt: skip
            with np.errstate(all="ignore"):
                table = compute_optimal(drawn, budgets, flops_per_token=FLOPS_PER_TOKEN)
            for key in draws:
                draws[key].append(table[key].to_numpy(float))
        bounds = {key: _quantiles(np.array(values), level) for key, values in draws.items()}
    return _table("parametric (approach 3)", budgets, point["N"].to_numpy(float),
                  point["D"].to_numpy(float), point["loss"].to_numpy(float), bounds["N"],
                  bounds["D"], bounds["loss"], np.nan)  # fmt: skip


def isoflop_vertices(runs: pd.DataFrame, loss: str) -> pd.DataFrame:
    """Each budget's parabola of ``loss`` in log N (columns C, N, loss: the vertex), for the
    budgets with at least 3 distinct sizes whose parabola opens upwards with its vertex inside
    the sizes run. ``runs``: columns N, C and ``loss``."""
    rows = []
    for budget, at in runs.groupby("C", sort=True):
        at = at[np.isfinite(at[loss])]
        log_n = np.log(at["N"].to_numpy(float))
        if np.unique(log_n).size < 3:
            continue
        a, b, c = np.polyfit(log_n, at[loss].to_numpy(float), 2)
        if not a > 0:
            continue
        vertex = -b / (2 * a)
        if not log_n.min() <= vertex <= log_n.max():
            continue
        rows.append({"C": float(budget), "N": float(np.exp(vertex)),
                     "loss": float(c - b * b / (4 * a))})  # fmt: skip
    return pd.DataFrame(rows, columns=["C", "N", "loss"])


def _power_law(vertices: pd.DataFrame, budgets: np.ndarray) -> np.ndarray:
    slope, intercept = np.polyfit(np.log(vertices["C"]), np.log(vertices["N"]), 1)
    return np.exp(intercept + slope * np.log(budgets))


def isoflop_optimum(runs: pd.DataFrame, budget, *, loss: str = "loss", level: float = 0.9,
                    n_resamples: int = 200, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Approach 2: N*, D* and the loss at each ``budget`` from the iso-FLOP parabolas of
    ``runs`` (columns N, C and ``loss``: a grid of several sizes per budget), one row each
    (``ALLOCATION_COLUMNS``); bounds: ``level`` percentiles over ``n_resamples`` bootstraps of
    the runs within each budget. Needs at least 3 budgets with a bracketed optimum (the loss
    law has 3 parameters)."""
    budgets = np.atleast_1d(np.asarray(budget, float))
    if not np.all(budgets > 0):
        raise ValueError("FLOP budgets must be positive")
    missing = [c for c in ("N", "C", loss) if c not in runs.columns]
    if missing:
        raise ValueError(f"the run table lacks the column(s) {', '.join(missing)}")
    vertices = isoflop_vertices(runs, loss)
    if len(vertices) < 3:
        raise ValueError(f"approach 2 needs at least 3 budgets whose runs bracket their optimum "
                         f"(a parabola in log N opening upwards, its vertex among the sizes "
                         f"run); found {len(vertices)}")  # fmt: skip
    N = _power_law(vertices, budgets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bound notes: the law is used for its prediction only
        point = fit_law("compute", {"C": vertices["C"].to_numpy()}, vertices["loss"].to_numpy())
    rng = np.random.default_rng(seed)
    groups = [at for _, at in runs.groupby("C", sort=True)]
    drawn_N, drawn_vertices = [], []
    for _ in range(n_resamples):
        resample = pd.concat([at.iloc[rng.integers(0, len(at), len(at))] for at in groups])
        again = isoflop_vertices(resample, loss)
        if len(again) < 3:
            continue  # this resample does not bracket enough optima: no draw
        drawn_N.append(_power_law(again, budgets))
        drawn_vertices.append(again)
    nan = (np.full(budgets.size, np.nan),) * 2
    N_bounds, D_bounds, loss_bounds = nan, nan, nan
    if drawn_N:
        drawn_N = np.array(drawn_N)
        N_bounds = _quantiles(drawn_N, level)
        D_bounds = _quantiles(budgets / (FLOPS_PER_TOKEN * drawn_N), level)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                laws = fit_laws("compute", [{"C": v["C"].to_numpy()} for v in drawn_vertices],
                                [v["loss"].to_numpy() for v in drawn_vertices])  # fmt: skip
            loss_bounds = _quantiles(np.array([law.predict(C=budgets) for law in laws]), level)
        except (ValueError, RuntimeError, np.linalg.LinAlgError):
            pass  # a resample's loss law could not be fitted: the loss without bounds
    return _table("iso-FLOP parabolas (approach 2)", budgets, N, budgets / (FLOPS_PER_TOKEN * N),
                  point.predict(C=budgets), N_bounds, D_bounds, loss_bounds, len(vertices))  # fmt: skip
