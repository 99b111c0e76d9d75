"""Benchmark: data decisions with odds (``analysis.decide``) against single-scale ranking, on the
loss-to-loss sweep (``../shared/data/l2l/sweep.csv``).

The question of issue 21: at a larger budget, does a model trained on corpus a have a lower
loss than one trained on corpus b, and with what probability? Backtested at the sweep's largest
budget, 4.84e19 FLOPs, from the runs up to 1e19 (two budgets short) and up to 2.2e19 (one
short): six corpora, the 15 pairs, every loss column comparable across training corpora (the 34
``eval/`` losses: the shared validation sets' cross-entropies, the downstream test losses and
context losses), and every configuration (N, D) of 4.84e19 trained on both corpora of a pair: a
decision is right when it names the corpus whose run measured the lower loss there.

``analysis.decide_methods.decide`` sees only the runs up to the cut; the 4.84e19 runs enter
only to score. Its ``selected`` method is chosen by nested decisions inside the fitting data
(for the 2.2e19 cut: how each method predicted 2.2e19 from the runs up to 4.6e18 and up to
1e19), never by the outcomes scored here. Reported per method: accuracy, Brier score, the
decisions made with p >= 0.9 or <= 0.1 and how many of them were right, the calibration table
(predicted probability of the favourite against the fraction right), the same on the
configurations near the compute-optimal shape (10 <= D / N <= 40; the paper's depth-40 run at
1e21 has D / N = 15), and the selected method's misses, each classified by the pair's smoothed
log-ratio (a parabola in log M through the pair's runs at a budget):

- ``run scatter``: the smoothed ratio at 4.84e19 is on the side the method chose; this run's
  pair fell on the other (run-to-run noise no method can call);
- ``crossing missed``: the smoothed ranking at 4.84e19 differs from the one at the cut's
  largest budget (a corpus overtook the other) and the method kept the old ranking;
- ``against both smoothed rankings``: the method chose against the smoothed ranking at both
  budgets (for an extrapolating method: a change that did not come, or a drift correction that
  flipped the call; for single-scale ranking: the one run it ranks by fell on the wrong side).

Diagnostics in the same run: ``single_scale_smoothed`` (single-scale ranking on the smoothed
ratio, no odds), ``law_*_independent`` (the per-corpus laws with their errors taken as
independent) beside ``law_*_untempered`` (the same laws with the measured correlation, before
the nested decisions' spread scale), to show what smoothing and the correlation do.

Also (``--part allocation``): each corpus' compute-optimal N*, D* and val_loss at 1e21 by
Chinchilla's approaches 2 and 3 (``analysis.allocation``), with bootstrap intervals.

    python benchmarks/bench_decide.py [--data ../shared/data] [--out results/bench_decide]
        [--markdown out.md] [--part all|decisions|allocation]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from analysis.decide import (
    calibration_table,
    decision_from_ratio,
    score_decisions,
    with_outcomes,
)
from analysis.decide_methods import CANDIDATES, LAW_METHODS, attach_actuals, decide, shapes_at
from analysis.reproduce.l2l_decisions import decision_metrics
from analysis.testbeds import load_l2l, wide
from analysis.testbeds.l2l import CORPORA

TARGET = 4.84e19
CUTS = (1e19, 2.2e19)
NEAR_OPTIMAL = (10.0, 40.0)


FAMILIES = ("validation-set cross-entropy", "downstream test loss", "downstream context loss")


def metric_family(metric: str) -> str:
    if metric.endswith("_val/CrossEntropyLoss"):
        return FAMILIES[0]
    return FAMILIES[2] if metric.endswith("_ctx_ce_loss") else FAMILIES[1]


def smoothed_log_ratios(runs: pd.DataFrame, budget: float, metrics: list[str]) -> pd.DataFrame:
    """Per metric and pair, the parabola in log M of log(y_a / y_b) through the pair's runs at
    ``budget``; returns its coefficients (columns metric, data_a, data_b, c2, c1, c0)."""
    at = runs[runs["C"] == budget]
    rows = []
    for metric in metrics:
        wide_ = at.pivot_table(index=["N", "D"], columns="dataset", values=metric)
        log_m = np.log(wide_.index.get_level_values("D") / wide_.index.get_level_values("N"))
        for i, a in enumerate(CORPORA):
            for b in CORPORA[i + 1:]:
                both = wide_[[a, b]].notna().all(axis=1).to_numpy()
                if both.sum() < 3:
                    continue
                coef = np.polyfit(log_m[both], np.log(wide_[a] / wide_[b]).to_numpy()[both], 2)
                rows.append({"metric": metric, "data_a": a, "data_b": b, "c2": coef[0],
                             "c1": coef[1], "c0": coef[2]})  # fmt: skip
    return pd.DataFrame(rows)


def classify_misses(table: pd.DataFrame, runs: pd.DataFrame, cut: float, metrics: list[str],
                    targets: pd.DataFrame) -> pd.DataFrame:  # fmt: skip
    """Each decision of ``table`` with the smoothed sign at the target and at the cut's largest
    budget (at the target's M), whether it is a crossing, and for a miss, why."""
    log_m = np.log(targets.set_index("target")["M"])
    frame = table.assign(log_m=table["target"].map(log_m).to_numpy())
    key = ["metric", "data_a", "data_b"]
    for name, budget in (("target", TARGET), ("fit", cut)):
        coef = smoothed_log_ratios(runs, budget, metrics)
        frame = frame.merge(coef.rename(columns={c: f"{c}_{name}" for c in ("c2", "c1", "c0")}),
                            on=key, how="left")  # fmt: skip
        x = frame["log_m"]
        frame[f"smooth_{name}"] = (frame[f"c2_{name}"] * x * x + frame[f"c1_{name}"] * x
                                   + frame[f"c0_{name}"])  # fmt: skip
    chose_a = frame["p_a_better"] > 0.5
    a_at_target = frame["smooth_target"] < 0
    a_at_fit = frame["smooth_fit"] < 0
    frame["crossing"] = a_at_target != a_at_fit
    why = np.where(chose_a == a_at_target, "run scatter",
                   np.where(frame["crossing"], "crossing missed",
                            "against both smoothed rankings"))  # fmt: skip
    frame["why"] = np.where(frame["right"] < 1, why, "")
    return frame


def untempered(table: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """The law methods' rows before their spread scale, as ``law_*_untempered``."""
    scale = dict(zip(selection["method"], selection["spread_scale"], strict=True))
    parts = []
    for method in LAW_METHODS:
        rows = table[table["method"] == method]
        spread = rows["spread_log_ratio"].to_numpy(float) / scale[method]
        columns = decision_from_ratio(rows["mean_log_ratio"].to_numpy(float), spread,
                                      rows["predicted_a"], rows["predicted_b"])  # fmt: skip
        parts.append(rows.assign(method=f"{method}_untempered", **columns))
    return pd.concat(parts, ignore_index=True)


def markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)

    def cell(value):
        if isinstance(value, float | np.floating):
            return "" if np.isnan(value) else f"{value:.{digits}g}"
        return str(value)

    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def run(data: Path, out: Path | None) -> list[str]:
    lines = []
    tidy = load_l2l(data / "l2l")
    metrics = decision_metrics(tidy)
    runs = wide(tidy, metrics)
    runs = runs.assign(M=runs["D"] / runs["N"])
    targets = shapes_at(runs, TARGET)
    order = ["single_scale", "selected", *CANDIDATES, "single_scale_smoothed",
             *(f"{m}_untempered" for m in LAW_METHODS), *(f"{m}_independent" for m in LAW_METHODS)]  # fmt: skip
    for cut in CUTS:
        start, cpu = time.perf_counter(), time.process_time()
        decisions = decide(runs[runs["C"] <= cut], metrics, targets, corpora=CORPORA,
                           diagnostics=True, progress=True)  # fmt: skip
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        table = pd.concat([decisions.table, untempered(decisions.table, decisions.selection)],
                          ignore_index=True)  # fmt: skip
        table = with_outcomes(attach_actuals(table, runs, targets))
        table = table[table["right"].notna() | table["p_a_better"].isna()]
        lines += [f"### Decisions at 4.84e19 from the runs up to {cut:.2g} FLOPs", "",
                  f"{metrics.__len__()} metrics x 15 pairs x the configurations of 4.84e19 run on "
                  f"both corpora of a pair; decide() took {wall:.0f} s wall, {cpu:.0f} s CPU. "
                  f"Selected method: **{decisions.chosen}**, by the nested decisions:", "",
                  markdown(decisions.selection), ""]  # fmt: skip
        scored = table[table["right"].notna()]
        scores = score_decisions(scored).set_index("method").reindex(order).reset_index()
        base = scores.set_index("method").loc["single_scale"]
        scores["brier_vs_single"] = scores["brier"] / base["brier"]
        lines += ["All configurations:", "", markdown(scores), ""]
        near = scored[scored["target"].map(targets.set_index("target")["M"]).between(*NEAR_OPTIMAL)]
        near_scores = score_decisions(near).set_index("method").reindex(order).reset_index()
        lines += [f"Configurations with {NEAR_OPTIMAL[0]:g} <= D/N <= {NEAR_OPTIMAL[1]:g} "
                  f"({near['target'].nunique()} shapes):", "", markdown(near_scores), ""]  # fmt: skip
        family = scored["metric"].map(metric_family)
        by_family = [score_decisions(scored[family == f]).set_index("method")
                     .loc[["single_scale", "selected"], ["n", "accuracy", "brier"]]
                     .reset_index().assign(family=f) for f in FAMILIES]  # fmt: skip
        by_family = pd.concat(by_family)[["family", "method", "n", "accuracy", "brier"]]
        lines += ["By kind of metric:", "", markdown(by_family), ""]
        calibration = calibration_table(scored)
        for method in ("selected", "single_scale_calibrated", "law_kaplan",
                       "law_kaplan_independent"):  # fmt: skip
            mine = calibration[calibration["method"] == method].drop(columns="method")
            mine = mine.sort_values("mean_p")
            lines += [f"Calibration of {method} (favourite's probability, binned):", "",
                      markdown(mine), ""]  # fmt: skip
        classified = classify_misses(scored, runs, cut, metrics, targets)
        for method in ("selected", "single_scale"):
            mine = classified[classified["method"] == method]
            counts = mine.loc[mine["why"] != "", "why"].value_counts()
            crossings = mine[mine["crossing"]]
            lines.append(f"{method}: {int((mine['right'] < 1).sum())} misses of {len(mine)} "
                         f"({', '.join(f'{n} {w}' for w, n in counts.items())}); smoothed "
                         f"crossings between {cut:.2g} and 4.84e19: {len(crossings)}, called "
                         f"right {int(crossings['right'].sum())}")  # fmt: skip
        lines.append("")
        selected = classified[(classified["method"] == "selected") & (classified["why"] != "")]
        worst = (selected.groupby(["metric", "data_a", "data_b"])
                 .agg(misses=("why", "size"), why=("why", lambda w: w.value_counts().index[0]),
                      measured_gap=("actual_a", "size"))
                 .sort_values("misses", ascending=False).head(12).reset_index())  # fmt: skip
        gaps = classified[classified["method"] == "selected"].assign(
            gap=lambda f: f["actual_a"] / f["actual_b"] - 1).groupby(
            ["metric", "data_a", "data_b"])["gap"].apply(lambda g: float(np.median(g)))  # fmt: skip
        worst["median_gap_at_4.84e19"] = [gaps[tuple(k)] for k in
                                          worst[["metric", "data_a", "data_b"]].to_numpy()]  # fmt: skip
        worst = worst.drop(columns="measured_gap")
        worst["metric"] = worst["metric"].str.removeprefix("eval/")
        lines += ["The (metric, pair) with the most misses of the selected method:", "",
                  markdown(worst), ""]  # fmt: skip
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            classified.to_csv(out / f"decisions_{cut:.2g}.csv", index=False)
            decisions.selection.to_csv(out / f"selection_{cut:.2g}.csv", index=False)
    return lines


def allocation(data: Path, budget: float = 1e21, resamples: int = 100) -> list[str]:
    """Item 4 of issue 21 on the sweep: each corpus' compute-optimal N*, D* and val_loss at
    ``budget`` by approach 2 (iso-FLOP parabolas) and approach 3 (its Chinchilla law), with
    90% bootstrap intervals; and the paper's depth-40 shape for comparison."""
    import warnings

    from analysis import bootstrap, fit_law
    from analysis.allocation import isoflop_optimum, parametric_optimum
    from analysis.reproduce.l2l_paper import largest_run

    runs = wide(load_l2l(data / "l2l"), ["val_loss"])
    rows = []
    start = time.perf_counter()
    for corpus in CORPORA:
        mine = runs[runs["dataset"] == corpus]
        inputs = {"N": mine["N"].to_numpy(), "D": mine["D"].to_numpy()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            law = fit_law("chinchilla", inputs, mine["val_loss"].to_numpy())
            law = bootstrap(law, inputs, mine["val_loss"].to_numpy(), n_resamples=resamples)
        for table in (isoflop_optimum(mine, budget, loss="val_loss", n_resamples=resamples),
                      parametric_optimum(law, budget)):  # fmt: skip
            r = table.iloc[0]
            rows.append({"data": corpus, "approach": r["approach"].split(" (")[1].rstrip(")"),
                         "N*": f"{r['N']:.3g} [{r['N_lower']:.3g}, {r['N_upper']:.3g}]",
                         "D*": f"{r['D']:.3g} [{r['D_lower']:.3g}, {r['D_upper']:.3g}]",
                         "D*/N*": f"{r['D'] / r['N']:.1f}",
                         "val_loss": f"{r['loss']:.4f} [{r['loss_lower']:.4f}, "
                                     f"{r['loss_upper']:.4f}]"})  # fmt: skip
    depth40 = largest_run().iloc[0]
    return [f"### Compute-optimal allocation at C = {budget:.0e} (val_loss, every run of the "
            f"sweep; {resamples} bootstrap resamples, 90% intervals; "
            f"{time.perf_counter() - start:.0f} s)", "",
            markdown(pd.DataFrame(rows)), "",
            f"The paper's depth-40 run at 1e21: N = {depth40['N']:.3g}, D = {depth40['D']:.3g}, "
            f"D/N = {depth40['M']:.1f}.", ""]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
                        / "data")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="folder for the scored decisions")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--part", choices=("all", "decisions", "allocation"), default="all")
    args = parser.parse_args()
    header = [f"bench_decide: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"{platform.machine()} {platform.processor() or ''}, Python "
              f"{platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
              f"pandas {pd.__version__}", ""]  # fmt: skip
    lines = header
    if args.part in ("all", "decisions"):
        lines += run(args.data, args.out)
    if args.part in ("all", "allocation"):
        lines += allocation(args.data)
    text = "\n".join(lines)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
