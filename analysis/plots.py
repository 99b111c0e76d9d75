"""Figures of a fitted law: the data, the fit, its extrapolation and its interval (PNG).

Fitting stays separate from plotting: these functions only read a ``Law`` and the data. They
use matplotlib's object API with the Agg canvas, so importing them changes no global backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, NullFormatter

from .law import Law
from .workflows import compute_optimal

LOG_INPUTS = {"N", "D", "C", "M"}


def plot_law(
    law: Law,
    inputs: dict,
    target,
    path: str | Path | None = None,
    *,
    extrapolate_to: float | None = None,
    level: float = 0.9,
    interval: str = "confidence",
    flops_per_token: float = 6.0,
    title: str | None = None,
    ylabel: str | None = None,
    xlabel: str | None = None,
    sizes: list[tuple[float, float]] | None = None,
    frontier: bool = True,
) -> Figure:
    """Data (points), the fitted law over the data (solid), its extrapolation to
    ``extrapolate_to`` (dashed) and the ``level`` interval of kind ``interval`` (``confidence``:
    the law's parameter uncertainty; ``prediction``: where new runs land; see
    ``Law.predict_interval``; bootstrap if the law has samples, else delta method). Laws of (N, D) are drawn against compute C = 6 N D, one curve
    per model size plus the compute-optimal frontier; overtrain laws against C, one curve per
    token multiplier M; one-input laws against their input. Saved as PNG when ``path`` is given.
    ``ylabel``/``xlabel`` name the target and (for a one-input law) the input, e.g. by column.
    Laws of (N, D) only: ``sizes`` are further model sizes (N, largest D), such as the runs the
    law predicts, each drawn as a dashed curve with its own interval band, in the colour of its
    N on the same scale as the data; ``frontier=False`` leaves out the compute-optimal curve
    (whose band a reader would take for a target's interval when the target is not
    compute-optimal).
    """
    y = np.asarray(target, dtype=float)
    x = {k: np.asarray(v, dtype=float) for k, v in inputs.items()}
    fig = Figure(figsize=(7.0, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    spec = law.form_spec
    if spec.inputs == ("N", "D"):
        _plot_nd(ax, law, x, y, extrapolate_to, (level, interval), flops_per_token,
                 sizes or [], frontier)
    elif spec.inputs == ("C", "M"):
        _plot_grouped(ax, law, x, y, "C", "M", extrapolate_to, (level, interval))
    else:
        _plot_single(ax, law, x, y, spec.inputs[0], extrapolate_to, (level, interval))
    ax.set_ylabel(ylabel or ("target" if spec.default_objective != "huber_log" else "loss"))
    if xlabel and len(spec.inputs) == 1:
        ax.set_xlabel(xlabel)
    if ax.get_yscale() == "log":  # losses span less than a decade: 2.5, not 2.5 x 10^0
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_title(title or f"{law.form}: {spec.formula}", fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, format="png")
    return fig


def default_extrapolation(law: Law, inputs: dict, flops_per_token: float = 6.0) -> float:
    """Where a plot's extrapolation ends when none is asked for: ten times the largest compute
    of the data for laws of (N, D), C or (C, M); for laws of a loss L, a quarter of the data's
    range below its smallest loss (better models have lower losses)."""
    x = {k: np.asarray(v, dtype=float) for k, v in inputs.items()}
    spec = law.form_spec
    if spec.inputs == ("N", "D"):
        return 10.0 * float(np.max(flops_per_token * x["N"] * x["D"]))
    if spec.inputs[0] == "C":
        return 10.0 * float(np.max(x["C"]))
    loss = x[spec.inputs[0]]
    return max(0.0, float(loss.min() - 0.25 * np.ptp(loss)))


def _interval(law, level, kind, **inputs):
    try:
        return law.predict_interval(level, kind=kind, **inputs)
    except ValueError:  # neither samples nor covariance (a translated law), or no residuals
        return None


def _band(ax, xs, interval, color, label=None):
    if interval is not None and np.all(np.isfinite(interval)):
        ax.fill_between(xs, interval[0], interval[1], color=color, alpha=0.18, lw=0, label=label)


def _span(lo: float, hi: float, extrapolate_to: float | None, log: bool, count: int):
    """A grid over the data's range [lo, hi] extended to ``extrapolate_to`` on either side (a
    law of a loss L is extrapolated to lower losses, a law of N, D or C to larger ones), and the
    masks of its parts: over the data, below it and above it (sharing the ends lo and hi, so that
    the lines join)."""
    start, end = lo, hi
    if extrapolate_to is not None:
        target = float(extrapolate_to)
        if not np.isfinite(target) or (log and target <= 0):
            raise ValueError(
                f"extrapolate_to must be a finite{' positive' if log else ''} value of the plot's "
                f"x axis, got {extrapolate_to!r}"
            )
        start, end = min(lo, target), max(hi, target)
    grid = np.geomspace(start, end, count) if log else np.linspace(start, end, count)
    grid = np.unique(np.concatenate([grid, [lo, hi]]))
    return grid, (grid >= lo) & (grid <= hi), grid <= lo, grid >= hi


def _draw(ax, grid, pred, parts, color, label=None):
    """The law over the data (solid, ``label``) and beyond it (dashed, "extrapolation")."""
    inside, below, above = parts
    ax.plot(grid[inside], pred[inside], color=color, label=label)
    for side in (below, above):
        if side.sum() > 1:
            ax.plot(grid[side], pred[side], color=color, ls="--",
                    label="extrapolation" if label else None)  # fmt: skip
            label = None  # one legend entry for both sides


def _plot_single(ax, law, x, y, name, extrapolate_to, band):
    values = x[name]
    lo, hi = float(values.min()), float(values.max())
    log = name in LOG_INPUTS
    grid, *parts = _span(lo, hi, extrapolate_to, log, 200)
    ax.scatter(values, y, s=14, color="black", zorder=3, label="data")
    _draw(ax, grid, law.predict(**{name: grid}), parts, "C0", label="fit")
    _band(
        ax, grid, _interval(law, *band, **{name: grid}), "C0", f"{band[0]:.0%} {band[1]} interval"
    )
    ax.set_xlabel(name)
    if log:
        ax.set_xscale("log")
        if law.form_spec.default_objective == "huber_log":
            ax.set_yscale("log")


def _plot_nd(ax, law, x, y, extrapolate_to, band, flops_per_token, sizes, frontier):
    n, d = x["N"], x["D"]
    compute = flops_per_token * n * d
    every_n = np.concatenate([n, [size for size, _ in sizes]])
    norm = LogNorm(vmin=every_n.min(), vmax=max(every_n.max(), every_n.min() * 1.0001))
    points = ax.scatter(compute, y, c=n, norm=norm, cmap="viridis", s=14, zorder=3, label="data")
    ax.figure.colorbar(points, ax=ax, label="N (parameters)")
    for size in np.unique(n):
        tokens = np.geomspace(d[n == size].min(), d[n == size].max(), 50)
        ax.plot(
            flops_per_token * size * tokens,
            law.predict(N=size, D=tokens),
            color=points.cmap(norm(size)),
            lw=0.8,
        )
    for size, end in sizes:  # the law where it predicts, beyond the data
        tokens = np.geomspace(min(d.min(), end), end, 80)
        color = points.cmap(norm(size))
        ax.plot(flops_per_token * size * tokens, law.predict(N=size, D=tokens), color=color,
                ls="--", lw=1.2, label=f"law at N = {size:.3g}")
        _band(ax, flops_per_token * size * tokens,
              _interval(law, *band, N=np.full_like(tokens, size), D=tokens), color,
              f"{band[0]:.0%} {band[1]} interval at N = {size:.3g}")
    if frontier:
        budgets, *parts = _span(compute.min(), compute.max(), extrapolate_to, True, 200)
        optimal = compute_optimal(law, budgets, flops_per_token=flops_per_token)
        _draw(ax, budgets, optimal["loss"].to_numpy(), parts, "C3", label="compute-optimal fit")
        interval = _interval(law, *band, N=optimal["N"].to_numpy(), D=optimal["D"].to_numpy())
        _band(ax, budgets, interval, "C3", f"{band[0]:.0%} {band[1]} interval")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a decade or two overlap
    ax.set_xlabel(f"compute C = {flops_per_token:g} N D (FLOPs)")


def _plot_grouped(ax, law, x, y, axis, group, extrapolate_to, band):
    values, groups = x[axis], x[group]
    lo, hi = float(values.min()), float(values.max())
    grid, *parts = _span(lo, hi, extrapolate_to, True, 150)
    labels = np.unique(groups)
    for i, label in enumerate(labels):
        color = f"C{i % 10}"
        mask = groups == label
        ax.scatter(values[mask], y[mask], s=14, color=color, zorder=3, label=f"{group} = {label:g}")
        _draw(ax, grid, law.predict(**{axis: grid, group: label}), parts, color)
        _band(
            ax, grid, _interval(law, *band, **{axis: grid, group: np.full_like(grid, label)}), color
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(axis)
