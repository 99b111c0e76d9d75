"""Prediction intervals calibrated on extrapolation: how far a law's prediction lands from the
truth as it reaches beyond its fitted budgets, measured by nested backtests inside the fitting
data, then applied to the real prediction.

A scaling study predicts a run larger than any it fitted. A bootstrap interval holds the fit's
noise only; the error that dominates a prediction grows with the distance of extrapolation (a
form that bends differently beyond the fitted budgets, a learning-rate schedule that suits small
runs better), and it is often one-sided. Nothing in the fit's own residuals shows it, but the
study's smaller runs do, when the same procedure is re-run on a prefix of them:

1. ``nested_errors``: for each cut k, fit on the runs whose scale (compute C, or model size N,
   whichever the study extrapolates along) is at most the k-th level, predict every run above
   it, and record ``distance`` (``extrapolation_distance``: log(scale / largest fitted) over the
   log span of the fitted scales) and ``log_error`` = log(actual / predicted). Only the fitting
   data are used: the runs a method is judged on never enter its calibration.
2. ``ExtrapolationError.fit``: an error model of those errors, log(actual / predicted) =
   b * distance + e, e ~ Normal(0, scatter^2 + (growth * distance)^2), where each fit has a
   drift b of its own (a law that is too high at the next budget keeps getting higher beyond
   it), drawn around a mean ``bias`` with spread ``bias_spread``. ``scatter`` is the run-to-run
   scatter at zero distance, from the full fit's own residuals (``log_scatter``); each cut's
   drift and ``growth`` are maximum-likelihood values given it, ``bias`` and ``bias_spread``
   the mean and standard deviation of the cuts' drifts.
3. ``ExtrapolationError.interval``: at a target ``distance`` d the corrected point is
   predicted * exp(bias d), and the 90% interval is exp(+-h) around it with
   h^2 = 1.645^2 (scatter^2 + growth^2 d^2) + t^2 bias_spread^2 d^2 (t: Student's 95% quantile
   with n_cuts - 1 degrees of freedom, as the drift's spread comes from that many cuts): the
   real fit is one more draw of a drift,
   so the interval is a prediction interval for a new fit, not a confidence interval for the
   mean drift (which the four or five cuts' errors, moving together within a cut, would make
   far too narrow).

Why an error model rather than split conformal quantiles: a study yields a handful of cuts (3 to
6), so a conformal 90% quantile of its nested errors is nearly their maximum, noisy, and says
nothing about distances beyond the nested ones; the target usually lies further out (the study's
next budget). The model states how the error extrapolates (linearly in the distance, the only
shape a few nested distances can support) and is checked by the backtests themselves
(``analysis.backtest``). What the interval covers: where a new run of the target's
configuration lands, trained as the fitted ones were, assuming the error keeps growing with
distance as it did inside the data. It does not cover a change of regime the small runs never
show (a new instability at scale), nor the errors of the inputs (a mislabelled budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtri
from scipy.stats import t as student_t

NESTED_COLUMNS = ("cut", "distance", "actual", "predicted", "log_error")


def log_scatter(actual, fitted, n_params: int) -> float:
    """Root mean square of log(actual / fitted) over a fit set, inflated by sqrt(n / (n - k))
    for the k fitted parameters (a residual underestimates its error)."""
    actual, fitted = np.asarray(actual, float), np.asarray(fitted, float)
    residuals = np.log(actual / fitted)
    residuals = residuals[np.isfinite(residuals)]
    n = residuals.size
    if n <= n_params:
        raise ValueError(f"the scatter of a fit with {n_params} parameters needs more than "
                         f"{n_params} points, got {n}")  # fmt: skip
    return float(np.sqrt(np.mean(residuals**2) * n / (n - n_params)))


def extrapolation_distance(target_scale, fitted_scale) -> np.ndarray:
    """How far beyond the fitted runs a target lies, relative to the span they cover:
    log(target / largest fitted) / log(largest fitted / smallest fitted). Relative, because a
    law fitted over one decade and extrapolated by one is about as uncertain as one fitted
    over two and extrapolated by two; the nested fits, whose spans grow cut by cut, are then
    comparable with each other and with the real fit (in decades, the smallest nested fits'
    errors would dominate and overstate the drift of the full fit)."""
    fitted = np.asarray(fitted_scale, float)
    span = np.log10(fitted.max() / fitted.min())
    if not span > 0:
        raise ValueError("the fitted runs span a single scale: no distance of extrapolation")
    return np.log10(np.asarray(target_scale, float) / fitted.max()) / span


def nested_cuts(scale, min_levels: int) -> list[float]:
    """The cuts of a nested backtest: every level of ``scale`` from the ``min_levels``-th to the
    second largest (the largest has nothing above it to predict)."""
    levels = np.unique(np.asarray(scale, float))
    return [float(v) for v in levels[min_levels - 1 : -1]]


def nested_errors(
    frame: pd.DataFrame,
    scale: str,
    fit_predict: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray],
    cuts,
    *,
    actual: str = "actual",
) -> pd.DataFrame:
    """For each cut, ``fit_predict(fit_frame, target_frame)`` fitted on the rows of ``frame``
    whose ``scale`` is at most the cut and predicting every row above it; one row per predicted
    row and cut (``NESTED_COLUMNS``, plus ``frame``'s index as ``row``). A cut whose fit fails
    (too few points for the procedure) is skipped; the caller sees which from ``cut``."""
    records = []
    for cut in cuts:
        fit_frame, target = frame[frame[scale] <= cut], frame[frame[scale] > cut]
        if fit_frame.empty or target.empty:
            continue
        try:
            predicted = np.asarray(fit_predict(fit_frame, target), dtype=float)
        except (ValueError, RuntimeError, np.linalg.LinAlgError):
            continue
        records.append(pd.DataFrame({
            "row": target.index, "cut": cut,
            "distance": extrapolation_distance(target[scale], fit_frame[scale]),
            "actual": target[actual].to_numpy(float), "predicted": predicted,
        }))  # fmt: skip
    if not records:
        return pd.DataFrame(columns=["row", *NESTED_COLUMNS])
    errors = pd.concat(records, ignore_index=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a non-positive prediction: dropped
        errors["log_error"] = np.log(errors["actual"] / errors["predicted"])
    return errors[np.isfinite(errors["log_error"])].reset_index(drop=True)


# The growth rates tried by the profile likelihood (log scale per unit of distance): from none
# to a factor e, fine enough that the likelihood's optimum is within 2% of its argmax.
_GROWTH_GRID = np.concatenate([[0.0], np.geomspace(1e-5, 1.0, 600)])


@dataclass(frozen=True)
class ExtrapolationError:
    """log(actual / predicted) = b * distance + Normal(0, scatter^2 + (growth distance)^2), where
    the drift b of one fit is drawn around ``bias`` with spread ``bias_spread`` (each nested
    fit, like the real one, has a drift of its own); distance as ``extrapolation_distance``."""

    bias: float
    bias_spread: float
    growth: float
    scatter: float
    n_errors: int
    n_cuts: int

    @classmethod
    def fit(cls, errors: pd.DataFrame, scatter: float) -> ExtrapolationError:
        """From the rows of ``nested_errors`` (columns ``distance``, ``log_error``, ``cut``) and
        the zero-distance ``scatter``: each cut's drift by weighted least squares through the
        origin, ``growth`` by maximum likelihood of the errors around their cut's drift,
        ``bias`` the mean of the drifts and ``bias_spread`` their standard deviation (the
        real fit is one more draw: its drift is not the mean). One cut cannot tell a drift
        from that fit's chance, so it corrects nothing and widens by its drift both ways; with
        no nested errors the model is the scatter alone."""
        if not np.isfinite(scatter) or scatter < 0:
            raise ValueError(f"scatter must be a finite non-negative number, got {scatter}")
        if len(errors):
            keep = errors["distance"].to_numpy(float) > 0
            d = errors["distance"].to_numpy(float)[keep]
            r = errors["log_error"].to_numpy(float)[keep]
            _, cut = np.unique(errors["cut"].to_numpy()[keep], return_inverse=True)
        else:
            d = r = cut = np.zeros(0)
        if d.size == 0:
            return cls(0.0, 0.0, 0.0, float(scatter), 0, 0)
        n_cuts = int(cut.max()) + 1
        one_hot = np.eye(n_cuts)[cut.astype(int)]  # (n, cuts)
        variance = max(scatter, 1e-12) ** 2 + (_GROWTH_GRID[:, None] * d[None, :]) ** 2
        w = 1.0 / variance  # (grid, n)
        drift = ((w * d * r) @ one_hot) / ((w * d * d) @ one_hot)  # (grid, cuts)
        resid = r[None, :] - (drift @ one_hot.T) * d[None, :]
        nll = 0.5 * (np.log(variance) + w * resid**2).sum(axis=1)
        best = int(np.argmin(nll))
        drifts = drift[best]
        if n_cuts == 1:
            bias, spread = 0.0, float(abs(drifts[0]))
        else:
            bias = float(drifts.mean())
            spread = float(drifts.std(ddof=1) * np.sqrt(1 + 1 / n_cuts))
        return cls(bias, spread, float(_GROWTH_GRID[best]), float(scatter), int(d.size), n_cuts)

    def spread(self, distance) -> np.ndarray:
        """Standard deviation of log(actual / corrected prediction) at ``distance``."""
        d = np.maximum(np.asarray(distance, float), 0.0)
        return np.sqrt(self.scatter**2 + (self.growth**2 + self.bias_spread**2) * d**2)

    def half_width(self, distance, level: float = 0.9) -> np.ndarray:
        """Half-width of the interval in log space at ``distance``: the normal quantile for the
        scatter and growth, Student's t with n_cuts - 1 degrees of freedom for the drift (whose
        spread is estimated from that many cuts: the classical prediction interval of one new
        draw, mean +- t s sqrt(1 + 1/n)), combined in quadrature."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        d = np.maximum(np.asarray(distance, float), 0.0)
        z = ndtri(0.5 + level / 2)
        t = student_t.ppf(0.5 + level / 2, self.n_cuts - 1) if self.n_cuts >= 2 else z
        normal = z**2 * (self.scatter**2 + (self.growth * d) ** 2)
        return np.sqrt(normal + (t * self.bias_spread * d) ** 2)

    def effective_spread(self, distance, level: float = 0.9) -> np.ndarray:
        """The normal standard deviation whose interval at ``level`` is ``half_width``'s (what a
        combination of sources weighs and adds up)."""
        return self.half_width(distance, level) / ndtri(0.5 + level / 2)

    def interval(self, predicted, distance, level: float = 0.9):
        """(corrected prediction, lower, upper) at ``level`` for raw ``predicted`` values at
        ``distance`` beyond the fitted runs (0 or less: inside them, scatter only)."""
        half = self.half_width(distance, level)
        predicted = np.asarray(predicted, float)
        d = np.maximum(np.asarray(distance, float), 0.0)
        center = predicted * np.exp(self.bias * d)
        return center, center * np.exp(-half), center * np.exp(half)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Predictor:
    """A fitting procedure: ``fit_predict(fit_rows, target_rows)`` fits on the rows of a table
    (the column ``actual`` is the target) and returns its predictions at the target rows;
    ``n_params`` counts what it fits (for the scatter's degrees of freedom)."""

    name: str
    fit_predict: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]
    n_params: int


@dataclass(frozen=True)
class Calibrated:
    """A predictor's calibrated predictions at the target rows and how they were made."""

    raw: np.ndarray
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    distance: np.ndarray
    model: ExtrapolationError
    errors: pd.DataFrame


def calibrated_prediction(
    predictor: Predictor, fit: pd.DataFrame, target: pd.DataFrame, scale: str, cuts,
    level: float = 0.9,
) -> Calibrated:  # fmt: skip
    """``predictor`` fitted on ``fit`` and predicting ``target``, its error model estimated by
    nested backtests on ``fit`` alone at ``cuts`` (of the ``scale`` column)."""
    errors = nested_errors(fit, scale, predictor.fit_predict, cuts)
    scatter = log_scatter(fit["actual"], predictor.fit_predict(fit, fit), predictor.n_params)
    model = ExtrapolationError.fit(errors, scatter)
    raw = np.asarray(predictor.fit_predict(fit, target), dtype=float)
    distance = extrapolation_distance(target[scale], fit[scale])
    point, lower, upper = model.interval(raw, distance, level)
    return Calibrated(raw, point, lower, upper, distance, model, errors)


def select_predictor(
    candidates: list[Predictor], groups: list[tuple[pd.DataFrame, list[float]]], scale: str
) -> tuple[Predictor, pd.DataFrame]:
    """The candidate with the smallest mean |log(actual / predicted)| over the nested backtests
    of every group (fit table, cuts): one choice for all of a study's laws, made on its fitting
    data only. Candidates are compared on the predictions all of them could make (a procedure
    that cannot fit a small cut must not win by skipping it); one that cannot be fitted at any
    cut cannot be tested, so it is not chosen (its score is NaN). Returns the choice and a table
    of every candidate's score."""
    keyed = {}
    for candidate in candidates:
        parts = [nested_errors(frame, scale, candidate.fit_predict, cuts).assign(group=g)
                 for g, (frame, cuts) in enumerate(groups)]  # fmt: skip
        errors = pd.concat(parts, ignore_index=True)
        keyed[candidate.name] = errors.set_index(["group", "cut", "row"])["log_error"]
    testable = {name: errors for name, errors in keyed.items() if len(errors)}
    common = None
    for errors in testable.values():
        common = errors.index if common is None else common.intersection(errors.index)
    if common is None or len(common) == 0:
        raise ValueError("no nested backtest prediction is shared by the candidates that could "
                         "be fitted at any cut")  # fmt: skip
    scores = pd.DataFrame([
        {"choice": name, "mean_abs_log_error": float(np.abs(errors.loc[common]).mean())
         if name in testable else np.nan,
         "mean_log_error": float(errors.loc[common].mean()) if name in testable else np.nan,
         "n": len(common) if name in testable else 0}
        for name, errors in keyed.items()
    ])  # fmt: skip
    best = scores["mean_abs_log_error"].idxmin()
    scores["chosen"] = scores.index == best
    return candidates[int(best)], scores


def correlation_of_sources(errors: dict[str, pd.DataFrame], models: dict[str, ExtrapolationError],
                           key: list[str], undetermined: float = 1.0) -> pd.DataFrame:
    """Correlation of the standardised nested errors of several sources predicting the same
    targets (rows matched on ``key``): what the sources' errors share, which a combination of
    them does not average away. Pairs of sources with fewer than 3 shared errors count as
    ``undetermined``: by default fully correlated (the cautious choice for a combination:
    nothing is gained by combining them; for a difference the cautious choice is 0)."""
    columns = {}
    for source, frame in errors.items():
        model = models[source]
        z = (frame["log_error"] - model.bias * frame["distance"]) / model.spread(frame["distance"])
        columns[source] = pd.Series(z.to_numpy(), index=pd.MultiIndex.from_frame(frame[key]))
    table = pd.DataFrame(columns)
    correlation = table.corr(min_periods=3)
    return correlation.fillna(undetermined)


def combine_sources(
    points: dict[str, np.ndarray], spreads: dict[str, np.ndarray], correlation: pd.DataFrame,
    level: float = 0.9,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One prediction from several sources' calibrated predictions of the same targets: the
    mean of their logarithms weighted by 1 / spread^2 (a source whose nested backtests erred
    less counts more; a NaN point, a source without a run there, counts for nothing), with the
    variance of that weighted mean under the sources' error correlation (w' S w with S = D R D,
    D the spreads, R ``correlation``): correlated errors are not averaged away. Inverse-variance
    rather than generalised-least-squares weights: with five or six strongly correlated sources
    the inverse of R is unstable and gives large negative weights."""
    sources = list(points)
    P = np.array([points[s] for s in sources], dtype=float)
    S = np.array([spreads[s] for s in sources], dtype=float)
    R = correlation.reindex(index=sources, columns=sources).fillna(1.0).to_numpy(copy=True)
    np.fill_diagonal(R, 1.0)
    available = np.isfinite(P) & (P > 0) & np.isfinite(S)
    w = np.where(available, 1.0 / np.maximum(S, 1e-12) ** 2, 0.0)
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = w / total
        logs = np.where(available, np.log(np.where(available, P, 1.0)), 0.0)
        center = np.exp((w * logs).sum(axis=0))
        ws = w * np.where(available, S, 0.0)
        variance = np.einsum("sn,st,tn->n", ws, R, ws)
    half = ndtri(0.5 + level / 2) * np.sqrt(variance)
    center = np.where(total > 0, center, np.nan)
    return center, center * np.exp(-half), center * np.exp(half)
