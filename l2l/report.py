"""``l2l report``: ``report.md`` and the PNG figures of a fitted study.

The report leads with what the study is for: each target run's value as the methods predicted
it (the selected method first, the paper's beside it), with its interval and how that interval
was made, against the value it measured. Then the laws, and what the grid can and cannot
identify: a small grid pins down predictions near it long before it pins down exponents, and
the report says which parameters sit at a bound rather than quote them. Every file is written
atomically: a report or figure is the old one or the new one, never half of one.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from l2l.layout import FIGURES_DIR, LAWS_DIR, PREDICTIONS, REPORT, RESULTS, SPEC_FILE

SIGN = ("error = predicted / measured - 1: positive when the prediction is above the measured "
        "value")


def metric_label(column: str, corpora: list[str] = ()) -> str:
    """A results-table metric in words: ``eval/python_prose_val/CrossEntropyLoss`` -> "loss on
    python-prose" (the corpus by its label), ``eval/downstream_ce_loss/arc_easy_test_ce_loss``
    -> "arc_easy test loss"."""
    from l2l.quantities import loss_column

    for corpus in corpora:
        if column == loss_column(corpus):
            return f"loss on {corpus}"
    if column.startswith("eval/downstream_ce_loss/") and column.endswith("_test_ce_loss"):
        return column.removeprefix("eval/downstream_ce_loss/").removesuffix("_ce_loss").replace(
            "_test", " test") + " loss"
    if column.startswith("eval/") and column.endswith("_val/CrossEntropyLoss"):
        return "loss on " + column.removeprefix("eval/").removesuffix("_val/CrossEntropyLoss")
    return column


def _number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}"
    return str(value)


def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join("| " + " | ".join(_number(v) for v in row) + " |\n"
                   for row in frame.itertuples(index=False))
    return head + body


def save_png(fig, path: Path) -> Path:
    """The figure as a PNG, written atomically (a killed report leaves the old figure or none)."""
    from analysis.atomic import write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
    return path


def draw_figures(fits, results: pd.DataFrame, targets: list[str], study_dir: str | Path,
                 level: float = 0.9, corpora: list[str] = ()) -> list[Path]:
    """Per law that predicts targets: the grid (points), the law and its extrapolation to the
    targets with the law's band at each target's size, and the targets: predicted (the paper's
    method, black; the selected method, blue; with their intervals) and measured (red)."""
    from analysis.plots import plot_law

    out = Path(study_dir) / FIGURES_DIR
    out.mkdir(exist_ok=True)
    written = []
    measured = results[results.run.isin(targets)]
    preds = fits.predictions if fits.predictions is not None else pd.DataFrame()
    for name in fits.drawn:
        law = fits.laws[name]
        inputs, y, xlabel, ylabel = fits.inputs[name]
        rows = preds[preds.law == name]
        is_nd = law.form == "chinchilla"
        if is_nd:
            aims = measured[measured.run.isin(rows.run)]
            sizes = [(float(r.N), float(r.D)) for r in aims.itertuples()]
            fig = plot_law(law, inputs, y, interval="prediction", level=level, sizes=sizes,
                           frontier=False, ylabel=metric_label(ylabel, corpora),
                           title=f"{name}: the grid, the law, and the target runs")
            where = {r.run: 6 * float(r.N) * float(r.D) for r in aims.itertuples()}
        else:
            xs = inputs["L"]
            given = rows.given.str.extract(r"loss ([0-9.]+)")[0].astype(float)
            low = float(min(xs.min(), given.min())) if len(given) else None
            # y measured on the predicted corpus' models, x on its source's (the same N, D)
            fig = plot_law(law, inputs, y, extrapolate_to=low, interval="prediction",
                           level=level, xlabel=xlabel,
                           ylabel=metric_label(ylabel, corpora) + (
                               f" (models trained on {rows.dataset.iloc[0]})" if len(rows) else ""),
                           title=f"{name}: the grid, the law, and the target runs")
            where = dict(zip(rows.run, given, strict=True))
        ax = fig.axes[0]
        for method, style, color in (("paper", "s", "black"), ("selected", "D", "C0")):
            for row in rows[rows.method == method].itertuples():
                if row.run not in where:
                    continue
                ax.errorbar([where[row.run]], [row.prediction],
                            yerr=[[row.prediction - row.lower], [row.upper - row.prediction]],
                            fmt=style, color=color, capsize=3, ms=5,
                            label=f"target, {method} ({level:.0%} interval)")
        for row in rows.drop_duplicates("run").itertuples():
            if row.run in where and np.isfinite(row.actual):
                ax.plot([where[row.run]], [row.actual], "*", color="red", markersize=11,
                        label="target, measured")
        seen = np.concatenate([np.asarray(y, float), rows.lower.to_numpy(float),
                               rows.upper.to_numpy(float), rows.actual.to_numpy(float)])
        seen = seen[np.isfinite(seen)]
        ax.set_ylim(float(seen.min()) * 0.95, float(seen.max()) * 1.05)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
        written.append(save_png(fig, out / f"{name}.png"))
    decisions = getattr(fits, "decisions", None)
    if decisions is not None and len(decisions):
        from analysis.decide import gap_figure

        metrics = list(dict.fromkeys(decisions.metric))
        shown = decisions.assign(metric=[metric_label(m, corpora) for m in decisions.metric])
        fig = gap_figure(shown, [metric_label(m, corpora) for m in metrics], "selected",
                         title="predicted gap between corpora at the target (selected method), "
                               f"{level:.0%} interval")
        written.append(save_png(fig, out / "decisions.png"))
    return written


def _target_table(preds: pd.DataFrame, bpb: dict[str, float], corpora: list[str]) -> str:
    """The predictions, one line per target, quantity and method: selected first, then the
    paper's, then the others."""
    shown = preds.assign(
        quantity=[metric_label(q, corpora) for q in preds.quantity],
        interval=[f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(preds.lower, preds.upper,
                                                            strict=True)],
        error=[f"{e:+.2%}" if np.isfinite(e) else "-" for e in preds.relative_error],
        inside=[("yes" if c else "no") if c is not None and not pd.isna(c) else "-"
                for c in preds.covered],
        bpb=[f"{p * bpb[q]:.4g}" if q in bpb else "-" for p, q in zip(preds.prediction,
                                                                     preds.quantity,
                                                                     strict=True)])
    columns = ["run", "quantity", "given", "method", "prediction", "interval", "bpb", "actual",
               "error", "inside"]
    return _markdown(shown[columns].rename(columns={
        "prediction": "predicted", "interval": "90% interval", "actual": "measured",
        "bpb": "predicted, bits/byte", "inside": "inside the interval"}))


def _method_summary(preds: pd.DataFrame) -> pd.DataFrame:
    """Per method: targets measured, mean absolute error, how many inside their interval, and
    the mean interval width (relative to the prediction)."""
    rows = []
    for method, mine in preds.groupby("method", sort=False):
        measured = mine[np.isfinite(mine.actual)]
        if measured.empty:
            continue
        rows.append({"method": method, "predictions": len(measured),
                     "mean absolute error": f"{measured.relative_error.abs().mean():.2%}",
                     "inside their interval": f"{int(measured.covered.astype(bool).sum())} of "
                                              f"{len(measured)}",
                     "mean interval width": f"{((measured.upper - measured.lower) / measured.prediction).mean():.2%}"})
    return pd.DataFrame(rows)


def bits_per_byte_factors(results: pd.DataFrame, corpora: list[str]) -> dict[str, float]:
    """Per held-out loss column, bits per byte per nat per token (evaluation's two metrics of
    the same split: their ratio is the split's tokens per byte over ln 2)."""
    from evaluation.losses import loss_metric_names

    factors = {}
    for corpus in corpora:
        names = loss_metric_names(corpus)
        if names["ce"] in results and names["bpb"] in results:
            ratio = (results[names["bpb"]] / results[names["ce"]]).dropna()
            if len(ratio):
                factors[names["ce"]] = float(ratio.median())
    return factors


def _decision_section(fits, results: pd.DataFrame, spec) -> list[str]:
    """The study's answer first: which corpus wins each metric at the target scale, and how
    sure that is; then the compute-optimal allocation at the targets' budgets."""
    from l2l.decisions import allocation, decision_lines

    corpora = list(spec.corpora)
    lines = []
    decisions = fits.decisions
    if decisions is not None and len(decisions):
        chosen = ""
        if fits.decision_selection is not None:
            picked = fits.decision_selection.loc[fits.decision_selection.chosen, "method"]
            chosen = f" (the selected method is `{picked.iloc[0]}`" if len(picked) else ""
            chosen += ", chosen by how its odds scored on decisions inside the grid)" if chosen else ""
        lines += ["## Which corpus wins at the target scale\n",
                  "Each metric measured on every model (never a corpus' loss on its own "
                  "validation set against another's), the corpora ranked by the probability that "
                  f"a model trained on one has the lower value at the target{chosen}; "
                  "single-scale: the ranking at the grid's largest budget. `decisions.csv` "
                  "holds every pair and method.\n",
                  *decision_lines(decisions, corpora, lambda m: metric_label(m, corpora)), ""]
        measured = decisions.dropna(subset=["actual_a", "actual_b"])
        if len(measured):
            right = {}
            for method, rows in measured.groupby("method", sort=False):
                a_won = rows.actual_a < rows.actual_b
                right[method] = f"{int(((rows.p_a_better >= 0.5) == a_won).sum())} of {len(rows)}"
            lines += ["Measured at the targets, decisions right: "
                      + "; ".join(f"{m} {v}" for m, v in right.items()) + ".\n"]
    budgets = sorted(set(results[results.run.isin(fits.predictions.run)].C)) if (
        fits.predictions is not None and len(fits.predictions)) else []
    table, left_out = (allocation(fits, results, spec, budgets, spec.prediction.level)
                       if budgets else (None, []))
    if table is not None and (len(table) or left_out):
        lines += ["## Compute-optimal allocation at the targets' budgets\n",
                  "N* and D* (and the loss there) of each corpus' law, by Chinchilla's "
                  "approach 3 (the paper's fitted law; interval from its bootstrap) and "
                  "approach 2 (iso-FLOP parabolas of the grid; interval from resampling runs "
                  "within each budget). `l2l predict STUDY --budget C` gives them at any C.\n",
                  _markdown(table.assign(
                      N=[f"{v:.3g} [{lo:.3g}, {hi:.3g}]" for v, lo, hi in
                         zip(table.N, table.N_lower, table.N_upper, strict=True)],
                      D=[f"{v:.3g} [{lo:.3g}, {hi:.3g}]" for v, lo, hi in
                         zip(table.D, table.D_lower, table.D_upper, strict=True)],
                      loss=[f"{v:.4g} [{lo:.4g}, {hi:.4g}]" for v, lo, hi in
                            zip(table.loss, table.loss_lower, table.loss_upper, strict=True)],
                  )[["data", "approach", "C", "N", "D", "loss"]]) if len(table) else
                  "No approach could place the optimum on this grid.", ""]
        if left_out:
            lines += ["Left out:\n", *[f"- {line}" for line in left_out], ""]
    return lines


def schedule_line(record: dict, plan: list) -> str:
    """The study's learning-rate schedule and what it saved, as a bullet of the report (the
    plan's ``train_flops`` against ``grid_flops``, from ``l2l_study.json``)."""
    from training.branches import grid_flops, is_branch, saving_line, train_flops

    schedule = record.get("schedule", "cosine")
    train = record.get("train_flops", train_flops(plan))
    grid = record.get("grid_flops", grid_flops(plan))
    if schedule != "wsd":
        return f"- schedule: {schedule} (every run trained alone): {train:.3g} FLOPs"
    branches = sum(is_branch(run) for run in plan)
    trunks = sum(run.schedule == "wsd" and not is_branch(run) for run in plan)
    how = (f"warmup-stable-decay, {trunks} trunks and {branches} decay branches, a "
           f"{record.get('decay_shape', '')} decay over the last "
           f"{record.get('decay_fraction', 0):.0%} of each run; targets "
           f"{record.get('target_schedule', schedule)}")
    return f"- {saving_line(train, grid, schedule)} ({how})"


def write_report(study_dir: str | Path, *, spec, record: dict, results: pd.DataFrame, fits,
                 figures: list[Path], failures: dict[str, str]) -> Path:
    from analysis.atomic import write_atomic
    from training.study import read_plan

    study = Path(study_dir)
    plan = read_plan(study)
    targets = record["targets"]
    grid_runs = results[~results.run.isin(targets)]
    preds = fits.predictions
    tokenizer = record.get("tokenizer", {})
    lines = [f"# Study `{study.name}` ({spec.name})\n",
             f"{spec.description or 'A study of ' + ', '.join(spec.corpora)}.\n",
             f"- planned runs: {len(plan)} ({len(plan) - len(targets)} in the grid, "
             f"{len(targets)} targets that no fit sees); evaluated: {len(results)}",
             f"- corpora: {', '.join(f'{k} ({v})' for k, v in record['corpora'].items())}",
             f"- tokenizer: {tokenizer.get('name', spec.tokenizer)}"
             + (f", trained on {sum(tokenizer['sample_chars'].values()):,} characters of the "
                "corpora (after their held-out text)" if tokenizer.get("sample_chars") else "")
             + f"; context {spec.recipe.data.seq_len}, batch {spec.recipe.batch.global_batch_size}",
             f"- grid: C from {grid_runs.C.min():.3g} to {grid_runs.C.max():.3g} FLOPs, N from "
             f"{grid_runs.N.min():.3g} to {grid_runs.N.max():.3g}, D/N from "
             f"{(grid_runs.D / grid_runs.N).min():.3g} to {(grid_runs.D / grid_runs.N).max():.3g}"
             if len(grid_runs) else "- grid: no evaluated run",
             schedule_line(record, plan),
             f"- {SIGN}\n"]
    lines += _decision_section(fits, results, spec)
    lines.append("## Target runs: predicted against measured\n")
    if preds is not None and len(preds):
        summary = _method_summary(preds)
        if len(summary):
            lines += ["How each method did on the measured targets:\n", _markdown(summary)]
        lines += ["How the intervals are made: `paper`: the law's own bootstrap over the grid's "
                  "runs with its residual scatter (the fit's noise only); `calibrated`: the "
                  "paper's procedure refitted on the grid cut at each budget, its extrapolation "
                  "errors measured on the runs above the cut and extrapolated to the target's "
                  "distance (drift corrected, spread widened); `selected`: the same for the "
                  "fitting choice those nested backtests favour for the whole study; "
                  "`multi_source`: every source corpus' calibrated translation combined.\n",
                  _target_table(preds, bits_per_byte_factors(results, list(spec.corpora)),
                                list(spec.corpora))]
        for kind, scores in fits.selection.items():
            chosen = scores.loc[scores.chosen, "choice"]
            lines.append(f"\nSelected for {kind}: **{chosen.iloc[0] if len(chosen) else '-'}** "
                         f"(mean |log error| of the nested backtests, candidates: "
                         + "; ".join(f"{r.choice} {_number(r.mean_abs_log_error)}"
                                     for r in scores.itertuples()) + ")")
        lines.append("")
    else:
        lines.append("No target could be predicted (see Missing below).\n")
    lines.append("## The paper's laws\n")
    rows = [{"law": name, "form": law.form, "points": law.n_points,
             "parameters": ", ".join(f"{k}={v:.4g}" for k, v in law.params.items()),
             "fixed": ", ".join(law.fixed) or "-", "warnings": "; ".join(law.warnings) or "-"}
            for name, law in fits.laws.items()]
    lines.append(_markdown(pd.DataFrame(rows)))
    at_bounds = [name for name, law in fits.laws.items()
                 if any("bound" in w or "exactly determined" in w for w in law.warnings)]
    lines += ["\n## What this grid can and cannot identify\n",
              f"{len(at_bounds)} of {len(fits.laws)} laws have a parameter at a bound of its "
              "fit, not identifiable, or no point to spare (listed under warnings above)"
              + (f": {', '.join(at_bounds)}." if at_bounds else "."),
              "A grid of a decade or two of compute constrains the loss near the grid and a "
              "little beyond it, not the exponents: many (E, A, alpha, B, beta) fit it equally "
              "well. Read the predictions with their intervals; do not read the exponents of "
              "these laws as the scaling of the corpora.\n"]
    missing = list(fits.missing) + [f"{k}: {v}" for k, v in failures.items()]
    lines.append("## Missing and failed\n")
    lines += [f"- {m}" for m in missing] if missing else ["Nothing: every run was trained, "
                                                          "evaluated and fitted."]
    if fits.warnings:
        lines += ["", "Fit warnings:", *[f"- {w}" for w in fits.warnings]]
    lines.append("\n## Figures\n")
    lines += [f"![{p.stem}]({FIGURES_DIR}/{p.name})" for p in figures]
    lines += ["\n## Files\n",
              f"- `{SPEC_FILE}`: the study's spec (`l2l study --config {SPEC_FILE}` runs it "
              "again)",
              f"- `{RESULTS}`: the tidy results table (run, dataset, N, D, C, metric, value)",
              f"- `{PREDICTIONS}`: every prediction above, with its method and interval",
              f"- `{LAWS_DIR}/<name>/`: each of the paper's fitted laws (`analysis.load_law`)",
              "- `<run>/`: each run folder (model, config, metrics)"]
    path = study / REPORT
    write_atomic(path, "\n".join(lines) + "\n")
    return path
