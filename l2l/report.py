"""``l2l report``: ``report.md`` and the PNG figures of a fitted study.

The report leads with what the study is for: each target run's loss as the laws predicted it
(with its 90% prediction interval) beside the loss it measured. Then the laws, and what the
grid can and cannot identify: a small grid pins down predictions near it long before it pins
down exponents, and the report says which parameters sit at a bound rather than quote them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from l2l.layout import FIGURES_DIR, LAWS_DIR, PREDICTIONS, REPORT, RESULTS


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join("| " + " | ".join(_fmt(v) for v in row) + " |\n"
                   for row in frame.itertuples(index=False))
    return head + body


def draw_figures(fits, results: pd.DataFrame, targets: list[str], study_dir: str | Path) -> list[Path]:
    """Loss against compute (grid, law, extrapolation to the targets, 90% prediction band, the
    targets as measured) per corpus, and every loss-to-loss law with its target points."""
    from analysis.plots import plot_law

    out = Path(study_dir) / FIGURES_DIR
    out.mkdir(exist_ok=True)
    written = []
    measured = results[results.run.isin(targets)]
    preds = fits.predictions if fits.predictions is not None else pd.DataFrame()
    for name in fits.drawn:
        law = fits.laws[name]
        inputs, y, xlabel, ylabel = fits.inputs[name]
        is_nd = law.form == "chinchilla"
        rows = preds[preds.law == name]
        if is_nd:
            farthest = float(measured.C.max()) if len(measured) else None
            fig = plot_law(law, inputs, y, extrapolate_to=farthest, interval="prediction",
                           ylabel=ylabel, title=f"{name}: grid (points), law, 90% prediction")
            ax = fig.axes[0]
            for _, row in rows.iterrows():
                c = float(results.loc[results.run == row.run, "C"].iloc[0])
                ax.errorbar([c], [row.prediction], yerr=[[row.prediction - row.lower],
                            [row.upper - row.prediction]], fmt="s", color="black", capsize=3,
                            label="target: predicted")
                ax.plot([c], [row.actual], "*", color="red", markersize=11,
                        label="target: measured")
            # A band of a weakly identified law can span decades far from the data; the
            # figure is about the data and the targets.
            seen = np.concatenate([y, rows.lower.to_numpy(float), rows.upper.to_numpy(float)])
            ax.set_ylim(float(np.nanmin(seen)) * 0.93, float(np.nanmax(seen)) * 1.03)
        else:
            xs = inputs["L"]
            extent = rows.given.str.extract(r"loss ([0-9.]+)")[0].astype(float)
            low = float(min(xs.min(), extent.min())) if len(extent) else None
            fig = plot_law(law, inputs, y, extrapolate_to=low, interval="prediction",
                           xlabel=xlabel, ylabel=ylabel, title=f"{name} (90% prediction)")
            ax = fig.axes[0]
            for (_, row), x in zip(rows.iterrows(), extent, strict=True):
                ax.errorbar([x], [row.prediction], yerr=[[row.prediction - row.lower],
                            [row.upper - row.prediction]], fmt="s", color="black", capsize=3,
                            label="target: predicted")
                ax.plot([x], [row.actual], "*", color="red", markersize=11,
                        label="target: measured")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
        path = out / f"{name}.png"
        fig.savefig(path, format="png")
        written.append(path)
    return written


def write_report(study_dir: str | Path, *, preset, record: dict, results: pd.DataFrame, fits,
                 figures: list[Path], failures: dict[str, str]) -> Path:
    from analysis.atomic import write_atomic
    from training.study import read_plan

    study = Path(study_dir)
    plan = read_plan(study)
    targets = record["targets"]
    grid_runs = results[~results.run.isin(targets)]
    lines = [f"# Study `{study.name}`: preset `{preset.name}`\n",
             f"{preset.description}.\n",
             f"- planned runs: {len(plan)} ({len(plan) - len(targets)} in the grid, "
             f"{len(targets)} targets that no fit sees); evaluated: {len(results)}",
             f"- corpora: {', '.join(record['corpora'])}; tokenizer `{preset.tokenizer}`, "
             f"context {preset.seq_len}, batch {preset.global_batch_size}",
             f"- grid: C from {grid_runs.C.min():.3g} to {grid_runs.C.max():.3g} FLOPs, N from "
             f"{grid_runs.N.min():.3g} to {grid_runs.N.max():.3g}, D/N from "
             f"{(grid_runs.D / grid_runs.N).min():.3g} to {(grid_runs.D / grid_runs.N).max():.3g}"
             if len(grid_runs) else "- grid: no evaluated run",
             f"- intervals: 90% prediction intervals (bootstrap over the grid's runs, "
             f"{preset.bootstrap} resamples, with the fit's residual scatter)\n"]
    preds = fits.predictions
    lines.append("## Target runs: predicted against measured\n")
    if preds is not None and len(preds):
        shown = preds.assign(
            interval=[f"[{lo:.4f}, {hi:.4f}]" for lo, hi in zip(preds.lower, preds.upper, strict=True)],
            error=[f"{e:+.1%}" if np.isfinite(e) else "-" for e in preds.relative_error])
        lines.append(_table(shown[["run", "quantity", "law", "given", "prediction", "interval",
                                   "actual", "error", "covered"]]))
        covered = preds.covered.dropna()
        if len(covered):
            lines.append(f"\n{int(covered.sum())} of {len(covered)} measured targets lie inside "
                         "their 90% interval; mean absolute error "
                         f"{preds.relative_error.abs().mean():.2%}.\n")
    else:
        lines.append("No target could be predicted (see Missing below).\n")
    lines.append("## Laws\n")
    rows = []
    for name, law in fits.laws.items():
        rows.append({"law": name, "form": law.form, "points": law.n_points,
                     "parameters": ", ".join(f"{k}={v:.4g}" for k, v in law.params.items()),
                     "fixed": ", ".join(law.fixed) or "-",
                     "warnings": "; ".join(law.warnings) or "-"})
    lines.append(_table(pd.DataFrame(rows)))
    at_bounds = [name for name, law in fits.laws.items() if any("bound" in w for w in law.warnings)]
    lines += ["\n## What this grid can and cannot identify\n",
              f"{len(at_bounds)} of {len(fits.laws)} laws have a parameter at a bound of its "
              "fit or not identifiable (listed under warnings above)" + (
                  f": {', '.join(at_bounds)}." if at_bounds else "."),
              "A grid spanning one decade of compute or less constrains the loss near the grid "
              "and a little beyond it, not the exponents: many (E, A, alpha, B, beta) fit it "
              "equally well. Read the predictions with their intervals; do not read the "
              "exponents of these laws as the scaling of the corpora.\n"]
    missing = list(fits.missing) + [f"{k}: {v}" for k, v in failures.items()]
    lines.append("## Missing and failed\n")
    lines += [f"- {m}" for m in missing] if missing else ["Nothing: every run was trained, "
                                                          "evaluated and fitted."]
    if fits.warnings:
        lines += ["", "Fit warnings:", *[f"- {w}" for w in fits.warnings]]
    lines.append("\n## Figures\n")
    lines += [f"![{p.stem}]({FIGURES_DIR}/{p.name})" for p in figures]
    lines += ["\n## Files\n",
              f"- `{RESULTS}`: the tidy results table (run, dataset, N, D, C, metric, value)",
              f"- `{PREDICTIONS}`: every prediction above", f"- `{LAWS_DIR}/<name>/`: each fitted "
              "law (`analysis.load_law`)", "- `<run>/`: each run folder (model, config, metrics)"]
    path = study / REPORT
    write_atomic(path, "\n".join(lines) + "\n")
    return path
