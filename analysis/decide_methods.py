"""The methods that decide between training corpora from a table of runs, with calibrated odds,
and the choice among them by nested backtests inside the fitting data (``analysis.decide``
holds the probability, regret and scoring they share).

``decide(runs, metrics, targets)`` gives, for every target configuration (N, D, C), every metric
and every pair of corpora, one row per method (``analysis.decide.DECISION_COLUMNS``):

- ``single_scale``, the baseline (DataDecide's single-scale ranking): the pair's models at the
  largest budget of the grid, in the configuration whose tokens per parameter M = D / N is
  nearest the target's (the same recipe, scaled down), both trained on the two corpora; p is 0
  or 1. ``predicted_a``/``predicted_b`` are those runs' measured values.
- ``single_scale_calibrated``: the same ranking with odds. log(y_a / y_b) at the largest budget,
  smoothed over the configurations (a line in log M, at the target's M), taken as the
  prediction at the target, its drift and spread with the distance of extrapolation calibrated
  by nested backtests of the same procedure (``analysis.calibrate``: fitted on the runs up to
  each smaller budget, it predicts the ratio at every larger one). The error model of the ratio
  itself holds the correlation of the two corpora's errors.
- ``ratio_trend``: the law of the pair's log-ratio, extrapolated directly: log(y_a / y_b) =
  c0 + c1 log C + c2 log M + c3 (log M)^2 by least squares on every paired run, calibrated the
  same way. A corpus behind at small scale and gaining with compute crosses where the line does.
- ``blend``: the geometric mean of the two ratios above (the level of the largest budget, half
  the trend), calibrated the same way.
- ``law_kaplan``, ``law_chinchilla``: each corpus' own law of the metric over (N, D), calibrated
  on its nested backtests (``calibrate.calibrated_prediction``); the pair's probability from
  the two calibrated predictions with the correlation of their standardised nested errors at
  matched cuts and configurations (``decide.error_correlation``), so that what the two fits
  share is not counted as uncertainty of the difference.
- ``selected``: the candidate with the smallest Brier score when the same procedure predicts
  the grid's own largest budget from the runs up to each of the two budgets below it (its
  nested decisions: made on the fitting data only, never on the targets). Where the selected
  method cannot decide a pair (a law that cannot be fitted), the next best by that score does.

Each candidate's probability is Phi(-mean / (scale * spread)) for its normal distribution of
log(y_a / y_b), where ``scale`` >= 1 is the factor that gives its nested decisions the smallest
Brier score (``select_method``; the ``spread_scale`` column of the selection): an error model
fitted on a few nested cuts can be too sure, which only decisions show. The table keeps each
row's distribution (``mean_log_ratio``, ``spread_log_ratio``, after the scale) beside
``DECISION_COLUMNS``.

``predicted_a``, ``predicted_b`` of the methods that model the ratio (``single_scale_calibrated``,
``ratio_trend``) are the levels of the per-corpus laws (their geometric mean, the first of
``law_kaplan``, ``law_chinchilla`` that both corpora have) split by the method's ratio, so that
they are consistent with its gap; without a law, the single-scale runs' levels.

Each law is fitted once per (form, corpus, metric, largest budget) for all of it (``RunCache``,
batched by ``analysis.fit_laws``): the nested fits of one setting are the full fits of another.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.calibrate import Calibrated, Predictor, calibrated_prediction, nested_cuts
from analysis.decide import (
    DECISION_COLUMNS,
    LEVEL,
    decision_from_ratio,
    difference_spread,
    error_correlation,
    probability_a_better,
    with_outcomes,
)
from analysis.fit import fit_laws
from analysis.predictors import quiet_fit

NESTED_MIN_LEVELS = 3  # the smallest nested fit: the 3 smallest budgets (as l2l_methods')
LAW_METHODS = {"law_kaplan": "kaplan", "law_chinchilla": "chinchilla"}
PAIR_METHODS = ("single_scale_calibrated", "ratio_trend", "blend")
CANDIDATES = (*PAIR_METHODS, *LAW_METHODS)
SELECTION_COLUMNS = ("method", "n", "accuracy", "brier", "spread_scale", "chosen")
RUN_COLUMNS = ("dataset", "N", "D", "C")
RATIO_COLUMNS = ("mean_log_ratio", "spread_log_ratio")


# ----------------------------------------------------------------------------- per-corpus laws


@dataclass
class RunCache:
    """The fitting runs cut into the tables the methods fit, each made once: per corpus and
    metric (columns N, D, C, M, ``actual``: the runs with a finite metric), per pair and metric
    (``pair_table``), and the laws of each (form, corpus, metric) fitted on the corpus' runs up
    to a budget ``top`` (``prepare`` fits them in batches; a nested fit of one setting is the
    full fit of another; a fit that fails is kept as ``None``). Settings that fit fewer runs
    take the rows up to their largest budget."""

    runs: pd.DataFrame
    laws: dict = field(default_factory=dict)
    _corpus: dict = field(default_factory=dict)
    _pairs: dict = field(default_factory=dict)

    def corpus_table(self, dataset: str, metric: str, top: float = np.inf) -> pd.DataFrame:
        if (dataset, metric) not in self._corpus:
            runs = self.runs
            keep = (runs["dataset"] == dataset).to_numpy() & np.isfinite(runs[metric].to_numpy(float))
            table = runs.loc[keep, ["N", "D", "C", "M", metric]].rename(columns={metric: "actual"})
            self._corpus[dataset, metric] = table
        table = self._corpus[dataset, metric]
        return table if top == np.inf else table[table["C"].to_numpy() <= top]

    def pair_table(self, a: str, b: str, metric: str, top: float = np.inf) -> pd.DataFrame:
        if (a, b, metric) not in self._pairs:
            self._pairs[a, b, metric] = pair_table(self.runs, a, b, metric)
        table = self._pairs[a, b, metric]
        return table if top == np.inf else table[table["C"].to_numpy() <= top]

    def prepare(self, form: str, corpora: Sequence[str], metrics: Sequence[str],
                tops: Sequence[float]) -> None:  # fmt: skip
        keys = [(form, c, m, float(t)) for c, m, t in itertools.product(corpora, metrics, tops)
                if (form, c, m, float(t)) not in self.laws]  # fmt: skip
        fit_sets = {key: self.corpus_table(*key[1:]) for key in keys}
        keys = [key for key in keys if len(fit_sets[key]) > 5]  # 5 parameters: more points
        for key in set(fit_sets) - set(keys):
            self.laws[key] = None
        if not keys:
            return
        inputs = [{"N": fit_sets[k]["N"].to_numpy(float), "D": fit_sets[k]["D"].to_numpy(float)}
                  for k in keys]  # fmt: skip
        targets = [fit_sets[k]["actual"].to_numpy(float) for k in keys]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bound and identifiability notes stay on the laws
                self.laws.update(zip(keys, fit_laws(form, inputs, targets), strict=True))
        except (ValueError, RuntimeError, np.linalg.LinAlgError):
            for key, x, y in zip(keys, inputs, targets, strict=True):  # one by one: keep the rest
                try:
                    self.laws[key] = quiet_fit(form, x, y)
                except (ValueError, RuntimeError, np.linalg.LinAlgError):
                    self.laws[key] = None

    def law(self, form: str, dataset: str, metric: str, top: float):
        key = (form, dataset, metric, float(top))
        if key not in self.laws:
            self.prepare(form, [dataset], [metric], [top])
        return self.laws[key]

    def law_predictor(self, form: str, dataset: str, metric: str) -> Predictor:
        """The law of ``form`` fitted on the corpus' runs up to the largest budget of the rows it
        is given (rows of ``corpus_table``), predicting (N, D)."""

        def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
            law = self.law(form, dataset, metric, float(fit["C"].max()))
            if law is None:
                raise ValueError(f"no {form} law of {metric} on {dataset}")
            return law.predict(N=target["N"].to_numpy(float), D=target["D"].to_numpy(float))

        return Predictor(f"law_{form}", fit_predict, 5)


# ----------------------------------------------------------------------------- pair predictors


def single_scale_predictor() -> Predictor:
    """The pair's log-ratio at the largest fitted budget, a line in log M through that budget's
    configurations, evaluated at the target's M: single-scale ranking as a prediction. A row at
    a fitted budget is predicted by its own budget's line (its residual is the run-to-run
    scatter of the ratio, the calibration's zero-distance error)."""

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        C, log_m = fit["C"].to_numpy(float), np.log(fit["M"].to_numpy(float))
        log_r = np.log(fit["actual"].to_numpy(float))
        levels, level_of = np.unique(C, return_inverse=True)
        # each budget's least-squares line in log M (a flat line where it has < 3 runs or one M)
        count = np.bincount(level_of, minlength=levels.size)
        mean_m = np.bincount(level_of, log_m) / count
        mean_r = np.bincount(level_of, log_r) / count
        dm = log_m - mean_m[level_of]
        var = np.bincount(level_of, dm * dm)
        cov = np.bincount(level_of, dm * (log_r - mean_r[level_of]))
        slope = np.where((count >= 3) & (var > 0), cov / np.where(var > 0, var, 1.0), 0.0)
        target_c = target["C"].to_numpy(float)
        own = np.searchsorted(levels, target_c)
        own = np.where((own < levels.size) & (levels[np.minimum(own, levels.size - 1)] == target_c),
                       own, levels.size - 1)  # fmt: skip
        target_m = np.log(target["M"].to_numpy(float))
        return np.exp(mean_r[own] + slope[own] * (target_m - mean_m[own]))

    return Predictor("single_scale_calibrated", fit_predict, 2)


def _trend_design(frame: pd.DataFrame) -> np.ndarray:
    log_c, log_m = np.log(frame["C"].to_numpy(float)), np.log(frame["M"].to_numpy(float))
    return np.column_stack([np.ones_like(log_c), log_c, log_m, log_m**2])


def ratio_trend_predictor() -> Predictor:
    """log(y_a / y_b) = c0 + c1 log C + c2 log M + c3 (log M)^2 by least squares on the pair's
    runs: the law of the ratio itself, extrapolated in compute at the target's M."""

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        if fit["C"].nunique() < 2 or len(fit) < 6:
            raise ValueError("the ratio's trend needs at least 2 budgets and 6 paired runs")
        coef, *_ = np.linalg.lstsq(_trend_design(fit), np.log(fit["actual"].to_numpy(float)),
                                   rcond=None)  # fmt: skip
        return np.exp(_trend_design(target) @ coef)

    return Predictor("ratio_trend", fit_predict, 4)


def blend_predictor() -> Predictor:
    """The geometric mean of ``single_scale_predictor``'s and ``ratio_trend_predictor``'s
    ratios: the level of the largest budget, half of the trend beyond it."""
    level, trend = single_scale_predictor(), ratio_trend_predictor()

    def fit_predict(fit: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
        return np.sqrt(level.fit_predict(fit, target) * trend.fit_predict(fit, target))

    return Predictor("blend", fit_predict, 6)


PAIR_PREDICTORS = {"single_scale_calibrated": single_scale_predictor,
                   "ratio_trend": ratio_trend_predictor, "blend": blend_predictor}  # fmt: skip


def pair_table(runs: pd.DataFrame, a: str, b: str, metric: str) -> pd.DataFrame:
    """The configurations trained on both corpora (equal N and D), with ``y_a``, ``y_b`` their
    values of ``metric`` and ``actual`` = y_a / y_b; in order of budget and M."""
    left = runs.loc[(runs["dataset"] == a) & np.isfinite(runs[metric]), ["N", "D", "C", "M", metric]]
    right = runs.loc[(runs["dataset"] == b) & np.isfinite(runs[metric]), ["N", "D", metric]]
    pairs = left.rename(columns={metric: "y_a"}).merge(right.rename(columns={metric: "y_b"}),
                                                       on=["N", "D"])  # fmt: skip
    pairs = pairs[(pairs["y_a"] > 0) & (pairs["y_b"] > 0)]
    pairs = pairs.sort_values(["C", "M"], kind="stable").reset_index(drop=True)
    return pairs.assign(actual=pairs["y_a"] / pairs["y_b"])


# ----------------------------------------------------------------------------- one setting


def _calibrated(predictor: Predictor, fit: pd.DataFrame, targets: pd.DataFrame,
                level: float) -> Calibrated | None:  # fmt: skip
    """``calibrate.calibrated_prediction`` on ``fit`` with the nested cuts of its budgets, or
    None where the procedure cannot be fitted (too few runs, a law that fails)."""
    if fit["C"].nunique() < 2:
        return None
    try:
        # a degenerate law (B = inf at a bound) predicts NaN or 0: dropped by the calibration,
        # or the method gives no decision; numpy's warnings about it say nothing more
        with np.errstate(all="ignore"):
            result = calibrated_prediction(predictor, fit, targets, "C",
                                           nested_cuts(fit["C"], NESTED_MIN_LEVELS), level)  # fmt: skip
    except (ValueError, RuntimeError, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(result.point) & (result.point > 0)):
        return None
    return result


def _single_scale(pairs: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Per target: the pair's configuration at the largest budget nearest the target's M."""
    top = pairs[pairs["C"] == pairs["C"].max()]
    log_m = np.log(top["M"].to_numpy(float))
    nearest = [int(np.argmin(np.abs(log_m - np.log(m)))) for m in targets["M"].to_numpy(float)]
    return top.iloc[nearest]


def _rows(targets: pd.DataFrame, metric: str, a: str, b: str, method: str, columns: dict) -> list:
    """One block of rows (a dict of columns, one entry per target): collected as blocks and
    stacked once (``_stack``), as a table of many small pieces is slow to build row by row."""
    n = len(targets)
    block = {"target": targets["target"].to_numpy(), "metric": np.repeat(metric, n),
             "data_a": np.repeat(a, n), "data_b": np.repeat(b, n), "method": np.repeat(method, n),
             **{k: np.broadcast_to(np.asarray(v, float), (n,)) for k, v in columns.items()}}  # fmt: skip
    return [block]


def _stack(blocks: list[dict]) -> pd.DataFrame:
    columns = [*DECISION_COLUMNS, *RATIO_COLUMNS]
    if not blocks:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame({c: np.concatenate([b[c] for b in blocks]) for c in columns})


def _ratio_rows(targets, metric, a, b, method, mean, spread, predicted_a, predicted_b,
                higher_is_better: bool, level: float) -> list:  # fmt: skip
    """The rows of a method from its distribution of log(y_a / y_b), with that distribution kept
    (``mean_log_ratio``, ``spread_log_ratio``) so that a spread scale can be applied later."""
    columns = decision_from_ratio(mean, spread, predicted_a, predicted_b,
                                  higher_is_better=higher_is_better, level=level)  # fmt: skip
    return _rows(targets, metric, a, b, method, {**columns, "mean_log_ratio": mean,
                                                  "spread_log_ratio": spread})  # fmt: skip


def _decide_setting(
    cache: RunCache, top: float, metrics: Sequence[str], targets: pd.DataFrame,
    corpora: Sequence[str], methods: Sequence[str], higher: Collection[str], level: float,
    diagnostics: bool = False, bar=None,
) -> pd.DataFrame:  # fmt: skip
    """Every method's decision rows for ``targets`` from the cache's runs up to ``top``."""
    tops = [c for c in sorted(cache.runs["C"].unique()) if c <= top]
    for method in methods:
        if method in LAW_METHODS:
            cache.prepare(LAW_METHODS[method], corpora, metrics, tops[NESTED_MIN_LEVELS - 1:])
    rows = []
    pairs = list(itertools.combinations(corpora, 2))
    for metric in metrics:
        higher_is_better = metric in higher
        per_corpus = {}  # method -> corpus -> (point, spread, errors with N and D, model)
        correlation = {}  # method -> the corpora's error correlation matrix
        for method in (m for m in methods if m in LAW_METHODS):
            per_corpus[method] = {}
            for corpus in corpora:
                fit = cache.corpus_table(corpus, metric, top)
                result = _calibrated(cache.law_predictor(LAW_METHODS[method], corpus, metric),
                                     fit, targets, level)  # fmt: skip
                if result is None:
                    continue
                rows_of = fit.loc[result.errors["row"]]
                errors = result.errors.assign(N=rows_of["N"].to_numpy(), D=rows_of["D"].to_numpy())
                per_corpus[method][corpus] = (result.point, result.model.spread(result.distance),
                                              errors, result.model)  # fmt: skip
            found = per_corpus[method]
            if found:
                correlation[method] = error_correlation(
                    {c: v[2] for c, v in found.items()}, {c: v[3] for c, v in found.items()},
                    ["cut", "N", "D"])  # fmt: skip
        anchors = [per_corpus[m] for m in LAW_METHODS if m in per_corpus]
        for a, b in pairs:
            table = cache.pair_table(a, b, metric, top)
            if table.empty:
                continue
            near = _single_scale(table, targets)
            ya, yb = near["y_a"].to_numpy(float), near["y_b"].to_numpy(float)
            better = np.where(higher_is_better, ya > yb, ya < yb).astype(float)
            ratio = ya / yb
            rows += _rows(targets, metric, a, b, "single_scale", {
                "p_a_better": np.where(ya == yb, 0.5, better), "predicted_a": ya,
                "predicted_b": yb, "gap": ratio - 1, "gap_lower": ratio - 1,
                "gap_upper": ratio - 1, "regret": np.full(len(ya), np.nan),
                "mean_log_ratio": np.log(ratio), "spread_log_ratio": 0.0})  # fmt: skip
            level_a, level_b = ya, yb  # the levels of the ratio methods, without a law
            for found in anchors:
                if a in found and b in found:
                    level_a, level_b = found[a][0], found[b][0]
                    break
            geometric = np.sqrt(level_a * level_b)
            for method in (m for m in methods if m in PAIR_PREDICTORS):
                result = _calibrated(PAIR_PREDICTORS[method](), table, targets, level)
                if result is None:
                    continue
                mean, spread = np.log(result.point), result.model.spread(result.distance)
                root = np.sqrt(result.point)
                rows += _ratio_rows(targets, metric, a, b, method, mean, spread, geometric * root,
                                    geometric / root, higher_is_better, level)  # fmt: skip
                if diagnostics and method == "single_scale_calibrated":
                    raw = np.log(result.raw)
                    rows += _ratio_rows(targets, metric, a, b, "single_scale_smoothed", raw,
                                        np.zeros_like(raw), geometric * np.sqrt(result.raw),
                                        geometric / np.sqrt(result.raw), higher_is_better, level)  # fmt: skip
            for method, found in per_corpus.items():
                if a not in found or b not in found:
                    continue
                (pa, sa, _, _), (pb, sb, _, _) = found[a], found[b]
                rho = float(correlation[method].loc[a, b])
                variants = [(method, rho)] + [(f"{method}_independent", 0.0)] * diagnostics
                for name, r in variants:
                    rows += _ratio_rows(targets, metric, a, b, name, np.log(pa / pb),
                                        difference_spread(sa, sb, r), pa, pb, higher_is_better,
                                        level)  # fmt: skip
        if bar is not None:
            bar.update(1)
    return _stack(rows)


# ----------------------------------------------------------------------------- selection


def _inner_settings(levels: Sequence[float]) -> list[float]:
    """The fit prefixes of the nested decisions: the runs up to each of the two budgets below
    the largest (each with at least one nested cut of its own to calibrate on)."""
    return [float(levels[k - 1]) for k in (len(levels) - 2, len(levels) - 1)
            if k >= NESTED_MIN_LEVELS + 1]  # fmt: skip


def shapes_at(runs: pd.DataFrame, budget: float) -> pd.DataFrame:
    """The configurations (N, D, C, M) run at ``budget``, each once, labelled as targets."""
    at = runs.loc[runs["C"] == budget, ["N", "D", "C", "M"]].drop_duplicates(["N", "D"])
    at = at.sort_values("M", kind="stable").reset_index(drop=True)
    return at.assign(target=[f"N={n:.4g} D={d:.4g} C={c:.3g}" for n, d, c in
                             zip(at["N"], at["D"], at["C"], strict=True)])  # fmt: skip


def attach_actuals(table: pd.DataFrame, runs: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``actual_a``, ``actual_b``: what the target configurations measured on
    each corpus (NaN where that run was not trained)."""
    keyed = runs.merge(targets[["target", "N", "D"]], on=["N", "D"])
    long = keyed.melt(id_vars=["target", "dataset"], value_vars=sorted(set(table["metric"])),
                      var_name="metric", value_name="actual")  # fmt: skip
    long = long.drop_duplicates(["target", "dataset", "metric"])
    out = table.merge(long.rename(columns={"dataset": "data_a", "actual": "actual_a"}),
                      on=["target", "metric", "data_a"], how="left")  # fmt: skip
    return out.merge(long.rename(columns={"dataset": "data_b", "actual": "actual_b"}),
                     on=["target", "metric", "data_b"], how="left")  # fmt: skip


# The factors tried for the spread of each method's log-ratio (see ``select_method``): from 1,
# widening only (a few easy nested decisions must not make the odds surer than the error model).
SPREAD_SCALES = np.geomspace(1.0, 8.0, 37)


def _brier(frame: pd.DataFrame, scale: float, higher: Collection[str]) -> float:
    p = probability_a_better(frame["mean_log_ratio"], frame["spread_log_ratio"] * scale)
    p = np.where(frame["metric"].isin(set(higher)), 1 - p, p)
    return float(np.mean((p - frame["a_better"].to_numpy(float)) ** 2))


def select_method(
    cache: RunCache, metrics: Sequence[str], corpora: Sequence[str], candidates: Sequence[str],
    higher: Collection[str], level: float, bar=None,
) -> pd.DataFrame:  # fmt: skip
    """The candidates' scores (``SELECTION_COLUMNS``) on the nested decisions: each procedure,
    fitted on the runs up to each of the two budgets below the largest, predicts every pair's
    decision in each configuration of the largest budget; scored on the decisions that every
    candidate could make. Each candidate's spread of log(y_a / y_b) is first scaled by the
    factor (``spread_scale``, from ``SPREAD_SCALES``) that gives its nested decisions the
    smallest Brier score: the error models are fitted on a few nested cuts, and whether they
    make the probabilities too sure shows only in decisions (the factor is 1 for a method whose
    odds were right or too timid: it only widens). The candidate with the smallest Brier score at its factor
    is chosen (ties: the earlier candidate). No nested decision (fewer than
    NESTED_MIN_LEVELS + 2 budgets): every score NaN, factors 1, the first candidate chosen."""
    runs = cache.runs
    levels = sorted(runs["C"].unique())
    tables = []
    for top in _inner_settings(levels):
        targets = shapes_at(runs, levels[-1])
        table = _decide_setting(cache, top, metrics, targets, corpora, candidates, higher, level,
                                bar=bar)  # fmt: skip
        table = table[table["method"].isin(candidates)].assign(setting=top)
        tables.append(with_outcomes(attach_actuals(table, runs, targets), higher))
    scores = []
    every = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if len(every):
        every = every[np.isfinite(every["right"]) & np.isfinite(every["p_a_better"])]
        key = ["setting", "target", "metric", "data_a", "data_b"]
        shared = every.groupby(key)["method"].transform("nunique") == len(candidates)
        every = every[shared]
    for method in candidates:
        mine = every[every["method"] == method] if len(every) else every
        if not len(mine):
            scores.append({"method": method, "n": 0, "accuracy": np.nan, "brier": np.nan,
                           "spread_scale": 1.0})  # fmt: skip
            continue
        briers = [_brier(mine, scale, higher) for scale in SPREAD_SCALES]
        best = int(np.argmin(briers))
        scores.append({"method": method, "n": len(mine), "accuracy": float(mine["right"].mean()),
                       "brier": briers[best], "spread_scale": float(SPREAD_SCALES[best])})  # fmt: skip
    scores = pd.DataFrame(scores)
    best = scores["brier"].idxmin() if scores["brier"].notna().any() else 0
    scores["chosen"] = scores.index == best
    return scores[list(SELECTION_COLUMNS)]


def _rescaled(table: pd.DataFrame, scores: pd.DataFrame, higher: Collection[str],
              level: float) -> pd.DataFrame:  # fmt: skip
    """``table`` with each candidate's rows recomputed at its ``spread_scale``."""
    table = table.copy()
    for method, scale in zip(scores["method"], scores["spread_scale"], strict=True):
        rows = (table["method"] == method).to_numpy()
        if scale == 1.0 or not rows.any():
            continue
        frame = table[rows]
        spread = frame["spread_log_ratio"].to_numpy(float) * scale
        up = frame["metric"].isin(set(higher)).to_numpy()
        for flag in (False, True):
            part = up == flag
            columns = decision_from_ratio(frame["mean_log_ratio"].to_numpy(float)[part],
                                          spread[part], frame["predicted_a"].to_numpy(float)[part],
                                          frame["predicted_b"].to_numpy(float)[part],
                                          higher_is_better=flag, level=level)  # fmt: skip
            index = frame.index[part]
            for name, values in columns.items():
                table.loc[index, name] = values
            table.loc[index, "spread_log_ratio"] = spread[part]
    return table


def _with_selected(table: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the ``selected`` rows: the chosen candidate's, each pair it cannot decide
    taken from the next candidate by nested Brier score."""
    order = scores.sort_values(["chosen", "brier"], ascending=[False, True], kind="stable")
    key = ["target", "metric", "data_a", "data_b"]
    candidates = table[table["method"].isin(order["method"])]
    candidates = candidates[np.isfinite(candidates["p_a_better"])]
    rank = {m: i for i, m in enumerate(order["method"])}
    best = candidates.assign(rank=candidates["method"].map(rank)).sort_values(
        "rank", kind="stable").drop_duplicates(key).sort_index()  # in the table's order of pairs
    selected = best.drop(columns="rank").assign(method="selected")
    return pd.concat([table, selected], ignore_index=True)


# ----------------------------------------------------------------------------- the entry point


@dataclass(frozen=True)
class Decisions:
    """The decision table (``DECISION_COLUMNS``, every method and ``selected``) and the
    selection's scores (``SELECTION_COLUMNS``)."""

    table: pd.DataFrame
    selection: pd.DataFrame

    @property
    def chosen(self) -> str:
        return str(self.selection.loc[self.selection["chosen"], "method"].iloc[0])


def _check_runs(runs: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in (*RUN_COLUMNS, *metrics) if c not in runs.columns]
    if missing:
        raise ValueError(f"the run table lacks the column(s) {', '.join(missing)}")
    runs = runs.reset_index(drop=True)
    if "M" not in runs.columns:
        runs = runs.assign(M=runs["D"] / runs["N"])
    if runs["C"].nunique() < 2:
        raise ValueError("the runs cover a single budget: nothing to extrapolate from")
    return runs


def _check_targets(targets: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("N", "D", "C") if c not in targets.columns]
    if missing:
        raise ValueError(f"the targets lack the column(s) {', '.join(missing)}")
    targets = targets.reset_index(drop=True)
    if "M" not in targets.columns:
        targets = targets.assign(M=targets["D"] / targets["N"])
    if "target" not in targets.columns:
        targets = targets.assign(target=[f"N={n:.4g} D={d:.4g} C={c:.3g}" for n, d, c in
                                         zip(targets["N"], targets["D"], targets["C"], strict=True)])  # fmt: skip
    return targets


def decide(
    runs: pd.DataFrame, metrics: Sequence[str], targets: pd.DataFrame, *,
    corpora: Sequence[str] | None = None, higher_is_better: Collection[str] = (),
    candidates: Sequence[str] = CANDIDATES, level: float = LEVEL, diagnostics: bool = False,
    progress: bool = False,
) -> Decisions:  # fmt: skip
    """The decisions of every pair of corpora, for each metric, at each target configuration.

    runs: the fitting runs, one row each, columns ``dataset``, ``N``, ``D``, ``C`` (and ``M`` =
        D / N, computed if absent) and the ``metrics`` (a missing value leaves that run out of
        that metric's fits). Only these runs are fitted: pass the grid without its targets.
    targets: the configurations to decide at, columns ``N``, ``D``, ``C`` and optionally
        ``target`` (a label; default from N, D, C).
    corpora: their order (a before b in each pair); default the datasets in ``runs``' order.
    higher_is_better: the metrics where higher wins (accuracies); the others are losses.
    candidates: the new methods to run and choose among (``CANDIDATES``); ``single_scale``
        always runs.
    diagnostics: also ``law_*_independent`` (the laws' decisions with the corpora's errors taken
        as independent) and ``single_scale_smoothed`` (the sign of ``single_scale_calibrated``'s
        uncorrected ratio), to show what the correlation and the smoothing do.
    """
    runs = _check_runs(runs, metrics)
    targets = _check_targets(targets)
    unknown = [m for m in candidates if m not in CANDIDATES]
    if unknown or not candidates:
        raise ValueError(f"unknown or no candidate method(s) {unknown}; choose among "
                         f"{', '.join(CANDIDATES)}")  # fmt: skip
    corpora = list(dict.fromkeys(runs["dataset"])) if corpora is None else list(corpora)
    if len(corpora) < 2:
        raise ValueError("a decision needs at least two corpora")
    cache = RunCache(runs)
    n_inner = len(_inner_settings(sorted(runs["C"].unique())))
    with tqdm(total=len(metrics) * (n_inner + 1), desc="decisions", unit="metric",
              disable=not progress) as bar:  # fmt: skip
        scores = select_method(cache, metrics, corpora, candidates, higher_is_better, level, bar)
        table = _decide_setting(cache, float(runs["C"].max()), metrics, targets, corpora,
                                candidates, higher_is_better, level, diagnostics, bar)  # fmt: skip
    table = _rescaled(table, scores, higher_is_better, level)
    return Decisions(_with_selected(table, scores), scores)
