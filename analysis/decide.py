"""Data decisions with odds: which of two training corpora gives the better model at a target
scale, and the probability that it does, from calibrated predictive distributions.

A researcher who trains ladders on several corpora to choose one needs "at 1e21 FLOPs, a model
trained on A has a lower loss on task T than one trained on B, with probability 0.93", not two
point predictions. Whether A beats B depends on the DIFFERENCE of the two predictions, and the
errors of the two corpora's predictions are strongly correlated (the same budgets, the same law
form, the same tokenizer and recipe): a law that is too high for one corpus at the next budget
is usually too high for the other. Taking them as independent makes every close pair look
uncertain; taking them as fully correlated makes every close pair look certain. This module
holds the study-independent parts:

- ``pairwise_decisions``: from each corpus' calibrated prediction of a metric at a target (its
  point and the spread of log(actual / point), e.g. ``ExtrapolationError.spread`` at the
  target's distance) and the correlation of the corpora's errors (``error_correlation``: the
  correlation of their standardised nested-backtest errors at matched cuts and runs), the
  probability that each corpus of every pair beats the other, the predicted gap with its
  interval, and the expected regret of choosing the favourite;
- ``decision_from_ratio``: the same from a predictive distribution of log(y_a / y_b) itself
  (methods that model the pair's ratio directly);
- ``score_decisions`` and ``calibration_table``: how a method's decisions fare against what the
  target runs measured (accuracy, Brier score, the confident decisions and how many were right,
  predicted probability against the fraction right).

The predictive distribution of log(y_a / y_b) is normal with mean log(point_a / point_b) and
variance s_a^2 + s_b^2 - 2 rho s_a s_b, so that
P(a better) = Phi(-mean / sd) for a metric where lower is better (a loss), Phi(mean / sd) where
higher is better (an accuracy). The regret of choosing the favourite f over the other o is what
the choice gives up when it is wrong, averaged over the distribution: E[(y_f - y_o)^+] for a
loss, in the metric's units (with y_o at its point: for a ratio X = y_f / y_o lognormal,
E[(X - 1)^+] = exp(m + s^2/2) Phi((m + s^2)/s) - Phi(m/s)).

The methods that produce the calibrated predictions from a table of runs (per-corpus laws, the
law of the pair's log-ratio, single-scale ranking and its calibrated version) and their
selection by nested backtests are in ``analysis.decide_methods``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from analysis.calibrate import ExtrapolationError, correlation_of_sources

# The columns of a decision table, as ``pairwise_decisions`` and ``decide_methods.decide`` give
# them: ``p_a_better`` the probability that the model trained on ``data_a`` is the better at the
# target (lower metric, or higher with ``higher_is_better``); ``gap`` the predicted relative
# difference y_a / y_b - 1 with its interval at ``level``; ``regret`` the expected loss given up
# by choosing the favourite (the corpus with p > 0.5), in the metric's units.
DECISION_COLUMNS = ("target", "metric", "data_a", "data_b", "method", "p_a_better",
                    "predicted_a", "predicted_b", "gap", "gap_lower", "gap_upper", "regret")  # fmt: skip
LEVEL = 0.9


def probability_a_better(mean_log_ratio, spread, higher_is_better: bool = False) -> np.ndarray:
    """P(a is the better) for log(y_a / y_b) ~ Normal(mean, spread^2). A spread of 0 gives 0 or 1
    (0.5 at an exact tie); a NaN mean or spread gives NaN (no decision)."""
    mean = np.asarray(mean_log_ratio, float)
    spread = np.asarray(spread, float)
    sign = 1.0 if higher_is_better else -1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(spread > 0, sign * mean / np.where(spread > 0, spread, 1.0),
                     np.sign(sign * mean) * np.inf)  # fmt: skip
    p = ndtr(z)
    return np.where((spread == 0) & (mean == 0), 0.5, p)


def expected_regret(mean_log_ratio, spread, predicted_a, predicted_b,
                    higher_is_better: bool = False) -> np.ndarray:  # fmt: skip
    """E[what choosing the favourite gives up], in the metric's units: the favourite is the
    corpus the distribution of log(y_a / y_b) ~ Normal(mean, spread^2) makes the more likely
    better; its regret is E[(y_fav - y_other)^+] for a loss (E[(y_other - y_fav)^+] where higher
    is better), with y_other at its predicted value. Zero where the spread is zero."""
    mean = np.asarray(mean_log_ratio, float)
    spread = np.asarray(spread, float)
    a, b = np.asarray(predicted_a, float), np.asarray(predicted_b, float)
    a_is_favourite = probability_a_better(mean, spread, higher_is_better) >= 0.5
    m = np.where(a_is_favourite, mean, -mean)  # log(y_fav / y_other)
    other = np.where(a_is_favourite, b, a)
    s = np.where(spread > 0, spread, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        if higher_is_better:  # E[(1 - X)^+] = Phi(-m/s) - exp(m + s^2/2) Phi(-(m + s^2)/s)
            tail = ndtr(-m / s) - np.exp(m + s * s / 2) * ndtr(-(m + s * s) / s)
        else:  # E[(X - 1)^+] = exp(m + s^2/2) Phi((m + s^2)/s) - Phi(m/s)
            tail = np.exp(m + s * s / 2) * ndtr((m + s * s) / s) - ndtr(m / s)
    return np.where(spread > 0, np.maximum(tail, 0.0) * other, 0.0)


def difference_spread(spread_a, spread_b, correlation) -> np.ndarray:
    """Standard deviation of log(y_a / y_b) when log y_a and log y_b err with standard deviations
    ``spread_a``, ``spread_b`` and correlation ``correlation``."""
    sa, sb = np.asarray(spread_a, float), np.asarray(spread_b, float)
    rho = np.clip(np.asarray(correlation, float), -1.0, 1.0)
    return np.sqrt(np.maximum(sa * sa + sb * sb - 2.0 * rho * sa * sb, 0.0))


def decision_from_ratio(mean_log_ratio, spread, predicted_a, predicted_b, *,
                        higher_is_better: bool = False, level: float = LEVEL) -> dict:  # fmt: skip
    """The decision columns (``p_a_better``, ``predicted_a``, ``predicted_b``, ``gap``,
    ``gap_lower``, ``gap_upper``, ``regret``) from a predictive distribution of log(y_a / y_b),
    Normal(``mean_log_ratio``, ``spread``^2), and the two predicted values (for the regret's
    units and the table)."""
    mean = np.asarray(mean_log_ratio, float)
    spread = np.asarray(spread, float)
    half = ndtri(0.5 + level / 2) * spread
    return {
        "p_a_better": probability_a_better(mean, spread, higher_is_better),
        "predicted_a": np.asarray(predicted_a, float),
        "predicted_b": np.asarray(predicted_b, float),
        "gap": np.expm1(mean), "gap_lower": np.expm1(mean - half),
        "gap_upper": np.expm1(mean + half),
        "regret": expected_regret(mean, spread, predicted_a, predicted_b, higher_is_better),
    }  # fmt: skip


def _correlation_of(correlation, a: str, b: str) -> float:
    if isinstance(correlation, pd.DataFrame):
        if a in correlation.index and b in correlation.columns:
            value = correlation.loc[a, b]
            return float(value) if np.isfinite(value) else 0.0
        return 0.0
    return float(correlation)


def pairwise_decisions(
    points: Mapping[str, float], spreads: Mapping[str, float],
    correlation: pd.DataFrame | float = 0.0, *, metric: str = "", target: str = "",
    method: str = "", higher_is_better: bool = False, level: float = LEVEL,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The decision table (``DECISION_COLUMNS``) of every pair of corpora for one metric at one
    target, from each corpus' calibrated prediction: ``points[c]`` its predicted value,
    ``spreads[c]`` the standard deviation of log(actual / point) (``ExtrapolationError.spread``
    at the target's distance, the calibrated model's), ``correlation`` the correlation of two
    corpora's errors (a matrix indexed by corpus, as ``error_correlation`` gives, or one number
    for every pair; a pair it lacks counts as uncorrelated). Pairs: every unordered pair in the
    order of ``points`` (a before b), or ``pairs``. A corpus without a finite positive point or
    a finite spread gives NaN columns for its pairs (no decision)."""
    corpora = list(points)
    pairs = list(itertools.combinations(corpora, 2)) if pairs is None else list(pairs)
    rows = []
    for a, b in pairs:
        pa, pb = float(points[a]), float(points[b])
        sa, sb = float(spreads[a]), float(spreads[b])
        ok = pa > 0 and pb > 0 and np.isfinite([pa, pb, sa, sb]).all()
        mean = np.log(pa / pb) if ok else np.nan
        spread = difference_spread(sa, sb, _correlation_of(correlation, a, b)) if ok else np.nan
        columns = decision_from_ratio(mean, spread, pa, pb, higher_is_better=higher_is_better,
                                      level=level)  # fmt: skip
        rows.append({"target": target, "metric": metric, "data_a": a, "data_b": b,
                     "method": method, **{k: float(v) for k, v in columns.items()}})  # fmt: skip
    return pd.DataFrame(rows, columns=list(DECISION_COLUMNS))


def error_correlation(errors: Mapping[str, pd.DataFrame],
                      models: Mapping[str, ExtrapolationError], key: Sequence[str]) -> pd.DataFrame:  # fmt: skip
    """The correlation of several corpora's standardised nested-backtest errors
    (``analysis.calibrate.correlation_of_sources``), matched on ``key`` (the cut and the run's
    shape: the same budgets fitted, the same configuration predicted). A pair with fewer than 3
    matched errors counts as uncorrelated: for a difference, assuming correlation where none was
    measured would make a close pair look certain."""
    return correlation_of_sources(dict(errors), dict(models), key=list(key), undetermined=0.0)


# ----------------------------------------------------------------------------- scoring


def with_outcomes(table: pd.DataFrame, higher_is_better: Sequence[str] = ()) -> pd.DataFrame:
    """``table`` (with ``actual_a``, ``actual_b``) with ``a_better`` (1.0 where data_a's model
    measured the better metric, 0.0 where data_b's, NaN where either is missing) and ``right``
    (1 where the favourite won, 0.5 for p = 0.5, 0 otherwise; NaN without an outcome or a p)."""
    higher = table["metric"].isin(set(higher_is_better)).to_numpy()
    a, b = table["actual_a"].to_numpy(float), table["actual_b"].to_numpy(float)
    known = np.isfinite(a) & np.isfinite(b)
    a_better = np.where(known, np.where(higher, a > b, a < b).astype(float), np.nan)
    p = table["p_a_better"].to_numpy(float)
    right = np.where(p == 0.5, 0.5, ((p > 0.5) == (a_better == 1.0)).astype(float))
    right = np.where(known & np.isfinite(p), right, np.nan)
    return table.assign(a_better=a_better, right=right)


SCORE_COLUMNS = ("method", "n", "accuracy", "brier", "n_confident", "confident_right",
                 "confident_accuracy")  # fmt: skip


def score_decisions(table: pd.DataFrame, confident: float = 0.9) -> pd.DataFrame:
    """Per method (``SCORE_COLUMNS``): the decisions with an outcome and a probability
    (``with_outcomes``), the fraction right, the Brier score mean (p - outcome)^2, and the
    decisions it is confident of (p >= ``confident`` or <= 1 - ``confident``) with how many of
    them were right."""
    rows = []
    for method, frame in table.groupby("method", sort=False):
        frame = frame[np.isfinite(frame["right"]) & np.isfinite(frame["p_a_better"])]
        p, outcome = frame["p_a_better"].to_numpy(float), frame["a_better"].to_numpy(float)
        sure = (p >= confident) | (p <= 1 - confident)
        n_sure = int(sure.sum())
        right_sure = int(frame["right"].to_numpy()[sure].sum())
        rows.append({"method": method, "n": len(frame),
                     "accuracy": float(frame["right"].mean()) if len(frame) else np.nan,
                     "brier": float(np.mean((p - outcome) ** 2)) if len(frame) else np.nan,
                     "n_confident": n_sure, "confident_right": right_sure,
                     "confident_accuracy": right_sure / n_sure if n_sure else np.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


CALIBRATION_BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def calibration_table(table: pd.DataFrame, bins: Sequence[float] = CALIBRATION_BINS) -> pd.DataFrame:
    """Predicted probability against the fraction right, per method: each decision is folded to
    its favourite (probability max(p, 1 - p)) and binned; columns method, bin, n, mean_p (the
    mean predicted probability of the favourite), fraction_right. A calibrated method has
    fraction_right near mean_p in every bin."""
    frame = table[np.isfinite(table["right"]) & np.isfinite(table["p_a_better"])]
    p = frame["p_a_better"].to_numpy(float)
    favourite = np.maximum(p, 1 - p)
    edges = np.asarray(bins, float)
    index = np.clip(np.searchsorted(edges, favourite, side="right") - 1, 0, len(edges) - 2)
    labels = [f"[{lo:g}, {hi:g}{']' if hi == edges[-1] else ')'}"
              for lo, hi in zip(edges[:-1], edges[1:], strict=True)]  # fmt: skip
    folded = pd.DataFrame({"method": frame["method"].to_numpy(), "bin": index,
                           "favourite": favourite, "right": frame["right"].to_numpy(float)})  # fmt: skip
    out = folded.groupby(["method", "bin"], sort=False).agg(
        n=("right", "size"), mean_p=("favourite", "mean"), fraction_right=("right", "mean")
    ).reset_index()  # fmt: skip
    out["bin"] = [labels[i] for i in out["bin"]]
    return out


# ----------------------------------------------------------------------------- reading a table

RANKING_COLUMNS = ("metric", "rank", "data", "expected_wins", "p_beats_next")


def rank_corpora(table: pd.DataFrame) -> pd.DataFrame:
    """The corpora of each (target, metric) in a decision table of one method, best first: by
    expected number of pairwise wins (the sum of their probabilities of beating each other
    corpus), with the probability that each beats the next one down (``RANKING_COLUMNS``, and
    ``target`` where the table has several targets)."""
    rows = []
    group_keys = ["target", "metric"] if table["target"].nunique() > 1 else ["metric"]
    for key, frame in table.groupby(group_keys, sort=False):
        wins: dict[str, float] = {}
        p_of = {}
        for r in frame.itertuples():
            p = float(r.p_a_better)
            if not np.isfinite(p):
                continue
            wins[r.data_a] = wins.get(r.data_a, 0.0) + p
            wins[r.data_b] = wins.get(r.data_b, 0.0) + 1 - p
            p_of[r.data_a, r.data_b], p_of[r.data_b, r.data_a] = p, 1 - p
        order = sorted(wins, key=lambda c: -wins[c])
        for rank, corpus in enumerate(order, start=1):
            following = order[rank] if rank < len(order) else None
            row = dict(zip(group_keys, key if isinstance(key, tuple) else (key,), strict=True))
            rows.append({**row, "rank": rank, "data": corpus, "expected_wins": wins[corpus],
                         "p_beats_next": p_of.get((corpus, following), np.nan)})  # fmt: skip
    columns = (["target"] if "target" in group_keys else []) + list(RANKING_COLUMNS)
    return pd.DataFrame(rows, columns=columns)


def gap_figure(table: pd.DataFrame, metrics: Sequence[str], method: str, title: str = ""):
    """A matplotlib Figure (no pyplot): one panel per metric, each pair's predicted relative gap
    y_a / y_b - 1 by ``method`` with its interval (gap_lower, gap_upper), labelled with
    P(a better); pairs whose interval excludes 0 are drawn in colour. For losses (a negative gap:
    a better)."""
    from matplotlib.figure import Figure

    metrics = list(metrics)
    columns = min(2, len(metrics))
    rows = int(np.ceil(len(metrics) / columns))
    # a panel as tall as its pairs need: 15 pairs of six corpora, or the one of a two-corpus study
    pairs = max(int(((table["metric"] == m) & (table["method"] == method)).sum()) for m in metrics)
    panel = 1.0 + 0.22 * max(pairs, 1)
    fig = Figure(figsize=(7.5 * columns, panel * rows + 0.6 + 0.5 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        frame = table[(table["metric"] == metric) & (table["method"] == method)]
        frame = frame[np.isfinite(frame["gap"])].reset_index(drop=True)
        y = np.arange(len(frame))
        sure = (frame["gap_lower"] > 0) | (frame["gap_upper"] < 0)
        for flag, color in ((False, "0.6"), (True, "C0")):
            part = frame[sure == flag]
            ax.errorbar(100 * part["gap"], y[sure == flag],
                        xerr=[100 * (part["gap"] - part["gap_lower"]),
                              100 * (part["gap_upper"] - part["gap"])],
                        fmt="o", ms=3, color=color, capsize=2)  # fmt: skip
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, [f"{a} vs {b}  p={p:.2f}" for a, b, p in
                          zip(frame["data_a"], frame["data_b"], frame["p_a_better"], strict=True)],
                      fontsize=7)  # fmt: skip
        ax.invert_yaxis()
        ax.set_title(metric.removeprefix("eval/"), fontsize=8)
        ax.set_xlabel("predicted gap, % (a / b - 1; < 0: a better)", fontsize=7)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(title or f"predicted gaps ({method}), with intervals", fontsize=10)
    return fig
