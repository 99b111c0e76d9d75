"""What every reproduction hands back: its tables (CSV, exact columns), figures (PNG) and a printout
that sets our numbers beside the paper's."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.atomic import write_atomic


@dataclass
class Reproduction:
    """The outcome of one reproduction: tables by file name, figure paths, and the printout."""

    name: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def say(self, *lines: str) -> None:
        self.lines.extend(lines)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def write_csv(frame: pd.DataFrame, out: Path, name: str, columns: Sequence[str]) -> pd.DataFrame:
    """Write exactly ``columns`` of ``frame`` to ``out/name`` (atomically); return what was written."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: internal error, columns {missing} were not computed")
    table = frame.loc[:, list(columns)].reset_index(drop=True)
    write_atomic(out / name, table.to_csv(index=False))
    return table


def save_figure(figure: Figure, out: Path, name: str) -> Path:
    """Save a matplotlib ``Figure`` (built without pyplot, so no display is needed) as a PNG."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    # No bbox_inches="tight" or constrained layout: each redraws the figure, tripling the time.
    figure.savefig(path, dpi=120)
    return path


def huber_log_objective(target, prediction, reduction: str = "mean", delta: float = 1e-3) -> float:
    """The papers' objective written out in float64, apart from the fitter that minimises it:
    Huber (``delta``) of log(target) - log(prediction), the mean over points (loss-to-loss
    notebooks) or the sum (Epoch AI); inf where a prediction has no logarithm."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(np.asarray(target, float)) - np.log(np.asarray(prediction, float))
    a = np.abs(r)
    rho = np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))
    value = float(np.mean(rho) if reduction == "mean" else np.sum(rho))
    return value if np.isfinite(value) else float("inf")


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def side_by_side(
    rows: Iterable[tuple[str, float, float | None]], *, headers=("", "ours", "paper"), digits=6
) -> list[str]:
    """Lines of a small table: label, our value, the paper's value and their relative difference."""
    rows = list(rows)
    width = max([len(headers[0]), *(len(r[0]) for r in rows)])
    lines = [f"  {headers[0]:<{width}}  {headers[1]:>12}  {headers[2]:>12}  {'rel. diff':>9}"]
    for label, ours, paper in rows:
        diff = "-" if paper in (None, 0) else f"{(ours - paper) / abs(paper):+.3%}"
        lines.append(
            f"  {label:<{width}}  {fmt(ours, digits):>12}  {fmt(paper, digits):>12}  {diff:>9}"
        )
    return lines


def frame_lines(frame: pd.DataFrame, digits: int = 4) -> list[str]:
    """A data frame as indented text lines, numbers in ``fmt``."""
    text = frame.to_string(index=False, float_format=lambda v: fmt(v, digits))
    return ["  " + line for line in text.splitlines()]
