"""Bootstrap over runs: parameter intervals and prediction intervals for a fitted law.

Resampling is over points (each point one training run) or, with ``groups``, over whole groups
of points (all checkpoints of one run, all runs of one model size): a cluster bootstrap, which
keeps the dependence inside a group. Each resample is refitted with the law's own form,
objective and fixed parameters; the samples then give ``law.param_intervals(level)`` and
``law.predict_interval(level, **inputs)`` as percentiles.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .fit import MemberError, group_by_size, single_threaded, solve_stacked
from .law import Law
from .problem import make_problem, stack


def bootstrap(
    law: Law,
    inputs: dict,
    target,
    *,
    n_resamples: int = 200,
    groups=None,
    seed: int = 0,
    warm_start: bool = True,
    bounds: dict[str, tuple[float, float]] | None = None,
    progress: bool = False,
) -> Law:
    """``law`` with ``n_resamples`` bootstrap parameter samples attached.

    inputs, target: the data ``law`` was fitted on.
    groups: optional label per point (run id, model size): resample whole groups.
    warm_start: polish each resample from the full-data optimum (fast, the usual choice; Epoch
        AI's bootstrap does the same); ``False`` repeats the global grid search per resample.
    bounds: bounds for the refits; default: those the law was fitted with (``law.bounds``).
    """
    if not isinstance(law, Law):
        raise ValueError(f"bootstrap needs a fitted Law, got {type(law).__name__}")
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be at least 2, got {n_resamples}")
    y = np.asarray(target, dtype=float)
    x = {k: np.asarray(v, dtype=float) for k, v in inputs.items()}
    if y.ndim != 1 or any(v.shape != y.shape for v in x.values()):
        raise ValueError("inputs and target must be one-dimensional arrays of the same length")
    if y.size != law.n_points:
        raise ValueError(f"the law was fitted on {law.n_points} points, got {y.size}")
    members = _group_members(groups, y.size)

    bounds = law.bounds if bounds is None else bounds
    _check_same_data(law, x, y, bounds)
    spec = law.form_spec
    fixed = {p: law.params[p] for p in law.fixed}
    start = {p: v for p, v in law.params.items() if p not in fixed} if warm_start else None
    rng = np.random.default_rng(seed)
    problems, failures = {}, []
    for i in range(n_resamples):
        drawn = rng.integers(0, len(members), size=len(members))
        index = np.concatenate([members[g] for g in drawn])
        try:
            problems[i] = make_problem(
                law.form,
                {k: v[index] for k, v in x.items()},
                y[index],
                objective=law.objective,
                fixed=fixed,
                bounds=bounds,
            )
        except ValueError as error:  # e.g. a resample on which a fixed parameter is impossible
            failures.append(str(error))
    # Resamples with the same number of points (all of them, without groups) are refitted
    # together; each refit is the one it would be alone.
    fitted, unconverged = {}, 0
    chunk = max(10, n_resamples // 20) if progress else n_resamples
    batches = [
        members_[lo : lo + chunk]
        for members_ in group_by_size(problems).values()
        for lo in range(0, len(members_), chunk)
    ]
    bar = tqdm(total=len(problems), desc=f"bootstrap {law.form}", unit="resample",
               disable=not progress)  # fmt: skip
    with single_threaded(), bar:
        for batch in batches:
            size = len(batch)
            while batch:
                try:
                    thetas, reports = solve_stacked(stack([problems[i] for i in batch]), start)
                except MemberError as error:  # e.g. no finite start on a degenerate resample
                    failures.append(error.message)
                    batch = batch[: error.index] + batch[error.index + 1 :]
                    continue
                for i, theta, report in zip(batch, thetas, reports, strict=True):
                    with np.errstate(over="ignore", invalid="ignore"):
                        params = {**spec.from_theta(theta), **fixed}
                    values = [params[p] for p in spec.params]
                    if not np.all(np.isfinite(values)):
                        # A log-space parameter that ran off to overflow (A = inf on a
                        # resample that wants ever steeper alpha): a failed refit, whose NaN
                        # predictions would otherwise make every interval's bound NaN.
                        failures.append(f"resample {i}: non-finite parameters {params}")
                        continue
                    unconverged += not report["success"]
                    fitted[i] = values
                break
            bar.update(size)
    samples = [fitted[i] for i in sorted(fitted)]
    if len(samples) < 2:
        raise ValueError(
            f"bootstrap failed: only {len(samples)} of {n_resamples} resamples could be fitted "
            f"(first error: {failures[0] if failures else 'none'})"
        )
    info = {
        "n_resamples": n_resamples,
        "n_failed": len(failures),
        "n_unconverged": unconverged,
        "grouped": groups is not None,
        "n_groups": len(members),
        "seed": seed,
        "warm_start": warm_start,
    }
    return law.with_samples(np.array(samples), info)


def _check_same_data(law: Law, x: dict, y: np.ndarray, bounds) -> None:
    """The law's residuals recomputed on (x, y), in any order, must be its own: resampling other
    data than the law was fitted on would give intervals of some other fit."""
    if law.residuals is None:  # a law not fitted by fit_law (translated): nothing to compare
        return
    fixed = {p: law.params[p] for p in law.fixed}
    problem = make_problem(law.form, x, y, objective=law.objective, fixed=fixed, bounds=bounds)
    with np.errstate(all="ignore"):
        residuals, _ = problem.residuals(law.form_spec.to_theta(law.params), jac=False)
    # rounding only: 1e-6 of the largest residual, or 1e-9 of the target's unit for a perfect fit
    unit = 1.0 if law.objective.log_residuals else float(np.max(np.abs(y)))
    atol = 1e-6 * float(np.max(np.abs(law.residuals), initial=0.0)) + 1e-9 * unit
    if not np.allclose(np.sort(residuals), np.sort(law.residuals), rtol=1e-6, atol=atol):
        raise ValueError(
            "these inputs and target are not the data the law was fitted on (its residuals "
            "differ): bootstrap needs the fit's own points"
        )


def _group_members(groups, n: int) -> list[np.ndarray]:
    """Indices of the points of each resampling unit (each point alone without groups)."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(f"groups must give one label per point ({n}), got shape {labels.shape}")
    _, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    if len(members) < 2:
        raise ValueError("groups must contain at least two distinct labels to resample")
    return members
