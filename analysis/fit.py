"""``fit_law``: the global optimum of a law's objective, reliably, fast and deterministically;
``fit_laws``: many independent fits of one form at once, each identical to its ``fit_law``.

Method (one path for every form and objective):

1. Variable projection over a grid (``varpro``). For each point of a grid over the form's
   nonlinear parameters (exponents, offsets) the remaining coefficients enter linearly and are
   solved in closed form by weighted, non-negative least squares; weights 1/y make those
   residuals approximate log residuals. With a Huber objective this linear step is not the exact
   inner optimum, so it only proposes starts: the grid is ranked by its linear residual and the
   best ``N_SCORED`` points are scored with the true objective in one vectorised evaluation.
2. Polish the ``N_POLISH`` best distinct starts together (``solvers.levenberg_marquardt``) on
   the internal parameters (log space for positive scale parameters, laws computed with
   log-sum-exp) with analytic Jacobians, to a certified stationary point: the majoriser step
   must gain less than 1e-10 of the objective (scale-free, unlike scipy's default tolerances,
   which stop early on objectives near 1e-3). When that cannot be certified, L-BFGS-B with the
   analytic gradient and tight tolerances on the rescaled objective takes over.
3. Report the objective, convergence, the number of points, the residuals and sandwich
   (delta-method) standard errors, and warn when a parameter sits at a bound or is not
   identifiable.

Every step runs on a stack of problems (``problem.stack``): ``fit_law`` is a stack of one, and
``fit_laws`` stacks the problems that share a number of points, so that each numpy call serves
all of them (as the loss-to-loss notebooks ``vmap`` over fits). A problem's arithmetic never
mixes with another's, so its result does not depend on the batch it was fitted in.

``log_ols`` (loss-to-loss with fixed E's) is a straight line in log-log space, solved exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
from threadpoolctl import ThreadpoolController

from .law import Law
from .objectives import Objective
from .problem import Problem, make_problem, stack
from .solvers import lbfgs_polish, levenberg_marquardt

_controller = None

__all__ = ["FitWarning", "Problem", "fit_law", "fit_laws", "make_problem", "solve", "solve_stacked"]


def single_threaded():
    """Context in which BLAS/LAPACK run on one thread: the problems are tiny, so threads only
    add hand-off latency (L-BFGS-B was 40x slower on 2 busy cores), and one thread keeps a
    problem's arithmetic the same whatever batch it is solved in."""
    global _controller
    if _controller is None:  # created lazily: numpy's and scipy's BLAS are loaded by now
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


N_SCORED = 32
"""How many grid points (best linear residual first) are scored with the true objective."""
N_POLISH = 3
"""How many distinct scored starts are polished (together); the best polished fit wins."""
DISTINCT = 0.05
"""Starts closer than this (max norm of internal parameters) are the same basin."""
GRID_ELEMENTS = 2**21
"""Problems share one grid evaluation while (problems x grid points x points) stays below this."""
POLISH_ELEMENTS = 2**23
"""Problems share one polish while (problems x starts x points x parameters) stays below this."""


UNMOVED = 1e-8
"""A parameter whose unit change (a factor e for a log-space one) moves the predictions by less
than this (RMS, relative to the target for plain residuals) is not identifiable."""


class FitWarning(UserWarning):
    """A fit finished but something about it deserves attention (bound, identifiability)."""


def fit_law(
    form: str,
    inputs: dict,
    target,
    *,
    objective: str | Objective | dict | None = None,
    fixed: dict[str, float] | None = None,
    bounds: dict[str, tuple[float, float]] | None = None,
    start: dict[str, float] | list[dict[str, float]] | None = None,
    metadata: dict | None = None,
) -> Law:
    """Fit ``form`` to ``target`` at ``inputs`` (a dict input name -> array).

    objective: ``"huber_log"`` (default for the loss laws, delta 1e-3, mean over points),
        ``"least_squares"`` (default for ``loss_to_error`` and ``sigmoid``), ``"log_ols"``, or an
        ``Objective`` (e.g. ``huber_log(reduction="sum")`` for Epoch AI's and OLMo-ladder's sum).
    fixed: parameters pinned to values (e.g. ``{"E_x": 1.2, "E_y": 0.9}``).
    bounds: per-parameter (lower, upper) in natural units, replacing the form's defaults.
    start: skip the grid and polish from these starting values (one dict, or a list of dicts);
        to reproduce a paper's single-start method exactly.
    metadata: provenance saved with the law.
    """
    problem = make_problem(form, inputs, target, objective=objective, fixed=fixed, bounds=bounds)
    with single_threaded():
        theta, info = solve(problem, start)
        law = _finish(stack([problem]), theta[None], [info], [metadata or {}], bounds)[0]
    overflowed = [p for p, v in law.params.items() if not np.isfinite(v)]
    if overflowed:
        # The objective is fine in log space, but a law whose A is inf predicts nothing: say
        # which parameters ran off and what pins them, rather than return it.
        raise ValueError(
            f"{form} fit ran off: {', '.join(overflowed)} overflowed float64, so these points "
            "do not pin the law; fix or bound its exponent (fixed=..., bounds=...) or fit more "
            "of the grid"
        )
    return law


def fit_laws(
    form: str,
    inputs: list[dict],
    targets: list,
    *,
    objective=None,
    fixed: dict[str, float] | None = None,
    bounds: dict[str, tuple[float, float]] | None = None,
    start: dict[str, float] | list[dict[str, float]] | None = None,
    metadata: list[dict] | None = None,
) -> list[Law]:
    """``[fit_law(form, inputs[i], targets[i], ...) for i]``, fitted together: one Law per
    problem, identical to its own ``fit_law``, many times faster for many small fits.

    Problems with the same number of points are stacked and solved by the same vectorised
    calls; ``objective``, ``fixed``, ``bounds`` and ``start`` apply to every problem (the
    default bounds still follow each problem's data). ``metadata``: one dict per problem.
    Validation errors name the problem's index.
    """
    inputs, targets = list(inputs), list(targets)
    if len(inputs) != len(targets):
        raise ValueError(f"fit_laws got {len(inputs)} inputs but {len(targets)} targets")
    if metadata is not None and len(metadata) != len(targets):
        raise ValueError(f"fit_laws got {len(metadata)} metadata dicts for {len(targets)} fits")
    problems = []
    for i, (x, y) in enumerate(zip(inputs, targets, strict=True)):
        try:
            problems.append(
                make_problem(form, x, y, objective=objective, fixed=fixed, bounds=bounds)
            )
        except ValueError as error:
            raise ValueError(f"fit {i}: {error}") from None
    laws: list[Law | None] = [None] * len(problems)
    with single_threaded():
        for members in group_by_size(dict(enumerate(problems))).values():
            stacked = stack([problems[i] for i in members])
            try:
                thetas, infos = solve_stacked(stacked, start)
            except MemberError as error:
                raise ValueError(f"fit {members[error.index]}: {error.message}") from None
            meta = [metadata[i] if metadata is not None else {} for i in members]
            for i, law in zip(members, _finish(stacked, thetas, infos, meta, bounds), strict=True):
                laws[i] = law
    return laws


def group_by_size(problems: dict) -> dict[int, list]:
    """Keys of ``problems`` grouped by number of points (the problems that can be stacked)."""
    groups: dict[int, list] = {}
    for key, problem in problems.items():
        groups.setdefault(problem.n_points, []).append(key)
    return groups


def solve(problem: Problem, start=None) -> tuple[np.ndarray, dict]:
    """The optimum of a validated problem: internal parameters theta and the optimiser's report
    (objective ``fun``, ``success``, ``message``, ``nit``, ``start``). No diagnostics."""
    try:
        thetas, infos = solve_stacked(stack([problem]), start)
    except MemberError as error:
        raise ValueError(error.message) from None
    return thetas[0], infos[0]


def solve_stacked(problem: Problem, start=None) -> tuple[np.ndarray, list[dict]]:
    """``solve`` for each problem of a stack: theta (B, p) and one report per problem. The
    bootstrap refits its resamples through here."""
    with single_threaded():
        if problem.objective.name == "log_ols":
            return _fit_log_ols(problem)
        # Memory stays bounded for big stacks: chunks of problems, each solved independently.
        size = max(1, POLISH_ELEMENTS // (N_POLISH * problem.n_points * len(problem.form.params)))
        if problem.n_problems <= size:
            return _fit_general(problem, start)
        thetas, infos = [], []
        for lo in range(0, problem.n_problems, size):
            part = problem.select(slice(lo, lo + size))
            try:
                theta, info = _fit_general(part, start)
            except MemberError as error:
                raise MemberError(lo + error.index, error.message) from None
            thetas.append(theta)
            infos += info
        return np.concatenate(thetas), infos


class MemberError(Exception):
    """A problem of a stack cannot be fitted (raised as a ValueError naming it)."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index, self.message = index, message


# --- general path: grid of variable-projection starts, then Levenberg-Marquardt ---------------


def _fit_general(problem: Problem, start) -> tuple[np.ndarray, list[dict]]:
    spec, fixed, free = problem.form, problem.fixed, problem.free
    count = problem.n_problems
    if free.size == 0:  # every parameter pinned: the law at those values, scored
        theta = np.repeat(spec.to_theta(fixed)[None], count, axis=0)
        message = "every parameter is fixed: nothing to fit"
        return theta, [
            {"fun": float(v), "success": True, "message": message, "nit": 0, "start": row}
            for v, row in zip(problem.objective_value(theta), theta, strict=True)
        ]
    if start is None:
        candidates = _grid_starts(problem)
    else:
        rows = [spec.to_theta({**s, **fixed}) for s in _check_starts(spec, start, free)]
        candidates = np.repeat(np.array(rows)[None], count, axis=0)
    fixed_theta = spec.to_theta({**dict.fromkeys(spec.params, 1.0), **fixed})
    fixed_idx = [j for j, p in enumerate(spec.params) if p in fixed]
    candidates[..., fixed_idx] = fixed_theta[fixed_idx]
    candidates[..., free] = np.clip(
        candidates[..., free], problem.lower[:, None, free], problem.upper[:, None, free]
    )
    scores = problem.objective_value(candidates, x={k: v[:, None] for k, v in problem.x.items()})
    order = np.argsort(scores, axis=1, kind="stable")
    candidates = np.take_along_axis(candidates, order[..., None], axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    hopeless = ~np.isfinite(scores[:, 0])
    if hopeless.any():
        raise MemberError(
            int(np.argmax(hopeless)),
            f"no starting point gives a finite objective for form {spec.name!r}",
        )
    starts, valid = _distinct(
        candidates, np.isfinite(scores), free, N_POLISH if start is None else candidates.shape[1]
    )
    # Given starts are usually near an optimum (warm starts): begin close to Newton's step.
    damping = 1.0 if start is None else 1e-2
    thetas, values, converged, iterations = levenberg_marquardt(
        problem, starts, valid, damping=damping
    )
    best = np.argmin(np.where(valid, values, np.inf), axis=1)
    results, infos = [], []
    for b, k in enumerate(best):
        theta = thetas[b, k]
        info = {
            "fun": float(values[b, k]),
            "success": bool(converged[b, k]),
            "message": "Levenberg-Marquardt: converged (majoriser step gains < 1e-10 of the objective)",
            "nit": int(iterations[b, k]),
            "start": starts[b, k],
        }
        if not info["success"]:
            # Levenberg-Marquardt could not certify a stationary point (iteration cap, rough
            # objective): L-BFGS-B with tight tolerances takes over from its best point.
            theta, lbfgs = lbfgs_polish(problem.select(b), theta)
            info = {**lbfgs, "nit": lbfgs["nit"] + info["nit"], "start": starts[b, k]}
        results.append(theta)
        infos.append(info)
    return np.array(results), infos


def _check_starts(spec, start, free) -> list[dict[str, float]]:
    """The caller's starting point(s): every free parameter, each a finite number."""
    starts = [start] if isinstance(start, dict) else list(start)
    checked = []
    for s in starts:
        if not isinstance(s, dict):
            raise ValueError(
                f"start must be a dict of parameter values (or a list of them), got {s!r}"
            )
        missing = [spec.params[j] for j in free if spec.params[j] not in s]
        unknown = [k for k in s if k not in spec.params]
        if missing or unknown:
            raise ValueError(
                f"start must give every free parameter; missing {missing}, unknown {unknown}"
            )
        values = {}
        for name, value in s.items():
            try:
                values[name] = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"start value of {name!r} must be a number, got {value!r}"
                ) from None
            if not np.isfinite(values[name]):
                raise ValueError(f"start value of {name!r} must be finite, got {value!r}")
        checked.append(values)
    return checked


def _grid_starts(problem: Problem) -> np.ndarray:
    """The ``N_SCORED`` best grid candidates of each problem by their linear residual (B, K, p).

    A full scoring with the true objective would cost as much as the rest of the fit."""
    spec = problem.form
    size = max(1, GRID_ELEMENTS // (1024 * problem.n_points))
    chosen = []
    for lo in range(0, problem.n_problems, size):
        part = slice(lo, lo + size)
        candidates, proxy = spec.candidates(
            {k: v[part] for k, v in problem.x.items()},
            problem.y[part],
            problem.fixed,
            problem.objective.log_residuals,
        )
        proxy = np.where(np.isfinite(proxy), proxy, np.inf)
        keep = np.argsort(proxy, axis=1, kind="stable")[:, :N_SCORED]
        chosen.append(np.take_along_axis(candidates, keep[..., None], axis=1))
    return np.concatenate(chosen)


def _distinct(candidates, finite, free, k) -> tuple[np.ndarray, np.ndarray]:
    """Per problem, the first ``k`` finite candidates (in order) that differ from every one
    already chosen (different basins): starts (B, k, p) and which of them are real (B, k)."""
    count, total, p = candidates.shape
    starts = np.zeros((count, k, p))
    valid = np.zeros((count, k), bool)
    taken = np.zeros(count, int)
    rows = np.arange(count)
    for j in range(total):
        theta = candidates[:, j]
        distance = np.max(np.abs(starts[..., free] - theta[:, None, free]), axis=-1)
        new = finite[:, j] & (taken < k) & np.all((distance > DISTINCT) | ~valid, axis=1)
        if new.any():
            slot = taken[new]
            starts[rows[new], slot] = theta[new]
            valid[rows[new], slot] = True
            taken += new
        if (taken == k).all():
            break
    return starts, valid


# --- log_ols: loss-to-loss with fixed E's, a straight line in log-log space --------------------


def _fit_log_ols(problem: Problem) -> tuple[np.ndarray, list[dict]]:
    """Ordinary least squares of v = log(L_y - E_y) on u = log(L_x - E_x), per problem."""
    spec, fixed = problem.form, problem.fixed
    u, v = problem.x["log_excess"], problem.x["log_target_excess"]
    if "K" in fixed and "kappa" in fixed:
        log_k, kappa = np.full(len(u), np.log(fixed["K"])), np.full(len(u), fixed["kappa"])
    elif "K" in fixed:  # slope through the fixed intercept
        log_k = np.full(len(u), np.log(fixed["K"]))
        kappa = np.sum(u * (v - log_k[:, None]), axis=1) / np.sum(u * u, axis=1)
    elif "kappa" in fixed:
        kappa = np.full(len(u), fixed["kappa"])
        log_k = np.mean(v - kappa[:, None] * u, axis=1)
    else:  # centred: exact in floating point even when log(L_x - E_x) is far from 0
        du = u - u.mean(axis=1, keepdims=True)
        kappa = np.sum(du * (v - v.mean(axis=1, keepdims=True)), axis=1) / np.sum(du * du, axis=1)
        log_k = v.mean(axis=1) - kappa * u.mean(axis=1)
    theta = np.empty((len(u), len(spec.params)))
    theta[:, 0], theta[:, 1] = log_k, kappa
    theta[:, 2], theta[:, 3] = fixed["E_x"], fixed["E_y"]
    values = problem.objective_value(theta)
    infos = [
        {
            "fun": float(value),
            "success": True,
            "message": "closed-form ordinary least squares",
            "nit": 0,
            "start": row,
        }
        for value, row in zip(values, theta, strict=True)
    ]
    return theta, infos


# --- diagnostics ----------------------------------------------------------------------------


def _finish(
    problem: Problem,
    thetas: np.ndarray,
    infos: list[dict],
    metadata: list[dict],
    bounds: dict | None,
    stacklevel=3,
) -> list[Law]:
    """One Law per problem of the stack, with residuals, standard errors and warnings;
    ``bounds``: the caller's, recorded on each Law."""
    spec, free = problem.form, problem.free
    r, dr = problem.residuals(thetas)
    covariances, unidentified = _sandwich(problem, r, dr)
    # Per positive scale parameter: the most a factor e on it moves any prediction (its term's
    # share, for the log objectives). Below UNMOVED the term has vanished: the fit lies on the
    # bound 0 that log space cannot reach.
    reach = np.max(np.abs(dr), axis=1) / _residual_unit(problem)[:, None]
    value, _ = spec._evaluate(thetas, problem.x, jac=False)
    prediction = np.exp(value) if spec.output_is_log else value
    laws = []
    for b, (theta, info) in enumerate(zip(thetas, infos, strict=True)):
        with np.errstate(over="ignore"):  # named below, not numpy's anonymous warning
            params = spec.from_theta(theta)
        params.update(problem.fixed)  # exact fixed values, no exp(log(v)) round trip
        notes = [
            f"{p} = exp({theta[j]:.4g}) overflows float64: the fit ran off where the data do not "
            "bound it (a term that is a step at the grid's edge), so the law predicts nothing"
            for j, p in enumerate(spec.params) if not np.isfinite(params[p])
        ]
        lower, upper = problem.lower[b], problem.upper[b]
        for j in free:
            p = spec.params[j]
            for side, bound in (("lower", lower[j]), ("upper", upper[j])):
                if np.isfinite(bound) and abs(theta[j] - bound) <= 1e-6 * max(1.0, abs(bound)):
                    natural = float(np.exp(bound)) if p in spec.log_params else float(bound)
                    zero = (
                        " (the data show no floor)"
                        if p in spec.offset_params and side == "lower"
                        else ""
                    )
                    notes.append(f"{p} sits at its {side} bound {natural:.6g}{zero}")
            if p in spec.log_params and reach[b, j] <= UNMOVED:
                notes.append(
                    f"{p}={params[p]:.3g} is effectively 0: its term moves no prediction by "
                    f"{UNMOVED:g}, so the fit lies on the bound {p} = 0 (the data show no such term)"
                )
        covariance = covariances[b]
        if unidentified[b]:
            notes.append(
                f"parameter(s) {', '.join(unidentified[b])} not identifiable from these "
                f"{problem.n_points} points (flat direction of the objective); their values are "
                "arbitrary"
            )
        if problem.n_points <= len(free):
            notes.append(
                f"exactly determined: {problem.n_points} points for {len(free)} free parameters, "
                "so the law passes through every point and nothing measures its error (no "
                "residual scatter; its intervals and any extrapolation are unchecked)"
            )
        if not info["success"]:
            notes.append(f"optimiser did not converge: {info['message']}")
        for note in notes:
            warnings.warn(f"{spec.name} fit: {note}", FitWarning, stacklevel=stacklevel)

        sd = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
        stderr = {}
        for j in free:
            p = spec.params[j]
            stderr[p] = float(sd[j] * params[p]) if p in spec.log_params else float(sd[j])
        y = problem.y[b]
        sst = float(np.sum((y - y.mean()) ** 2))
        ssr = float(np.sum((y - prediction[b]) ** 2))
        laws.append(
            Law(
                form=spec.name,
                params={p: params[p] for p in spec.params},
                objective=problem.objective,
                objective_value=float(info["fun"]),
                n_points=problem.n_points,
                converged=bool(info["success"]),
                message=info["message"],
                n_iterations=info["nit"],
                fixed=tuple(p for p in spec.params if p in problem.fixed),
                bounds={k: (float(lo), float(hi)) for k, (lo, hi) in (bounds or {}).items()},
                start=spec.from_theta(info["start"]),
                r_squared=1.0 - ssr / sst if sst > 0 else float("nan"),
                stderr=stderr,
                covariance=tuple(tuple(float(v) for v in row) for row in covariance),
                warnings=tuple(notes),
                residuals=r[b].copy(),
                metadata={**metadata[b], "input_ranges": {
                    k: [float(np.min(problem.x[k][b] if problem.stacked else problem.x[k])),
                        float(np.max(problem.x[k][b] if problem.stacked else problem.x[k]))]
                    for k in spec.inputs}},
            )
        )
    return laws


def _sandwich(problem: Problem, r: np.ndarray, dr: np.ndarray) -> tuple[np.ndarray, list]:
    """Robust covariances H^-1 M H^-1 of the internal parameters (fixed ones: zero), one per
    problem of the stack (r: (B, n), dr: (B, n, p)), and the parameters each cannot identify.

    Identifiability is structural: a direction in which the law's predictions at these points do
    not change (J^T J numerically singular) cannot be estimated, whatever the objective.
    H = sum rho''(r_i) J_i J_i^T and M = sum rho'(r_i)^2 J_i J_i^T, times n / (n - p). When a
    Huber fit leaves too few points in its quadratic zone for that H to be invertible, the IRLS
    weights rho'(r)/r (the curvature of Huber's quadratic majoriser) stand in for rho''; the
    bootstrap is then the better interval.
    """
    spec, free = problem.form, problem.free
    count, n = r.shape
    p, k = len(spec.params), free.size
    cov = np.zeros((count, p, p))
    if k == 0:
        return cov, [[] for _ in range(count)]
    objective = problem.objective
    jac = dr[..., free]
    jac_t = jac.transpose(0, 2, 1)
    flat = _flat_directions(jac_t @ jac, UNMOVED * np.sqrt(n) * _residual_unit(problem))
    unidentified = [[spec.params[free[j]] for j in np.flatnonzero(row)] for row in flat]
    _, psi, curvature, irls = objective.pieces(r)
    meat = jac_t @ (psi[..., None] ** 2 * jac)
    hess = jac_t @ (curvature[..., None] * jac)
    singular = _flat_directions(hess).any(axis=1)
    if singular.any():
        majoriser = jac_t @ (irls[..., None] * jac)
        hess = np.where(singular[:, None, None], majoriser, hess)
    inv = np.linalg.pinv(hess)
    inner = inv @ meat @ inv * (n / (n - k) if n > k else np.nan)
    cov[:, free[:, None], free[None, :]] = np.where(flat.any(axis=1)[:, None, None], np.nan, inner)
    return cov, unidentified


def _residual_unit(problem: Problem) -> np.ndarray:
    """Per problem of the stack (B,): the residuals' unit. Log residuals are relative already;
    plain ones are in the target's units (its root mean square)."""
    if problem.objective.log_residuals:
        return np.ones(problem.n_problems)
    return np.sqrt(np.mean(problem.y**2, axis=-1))


def _flat_directions(matrix: np.ndarray, floor=None) -> np.ndarray:
    """Per matrix of a stack of PSD matrices J^T J (B, q, q): which parameters take part in a
    numerically flat direction (B, q). ``floor`` (B,): a column norm of J at or below it is flat
    whatever the other columns (every term of the law collapsed, e.g. to a coefficient ~ 0)."""
    diag = np.sqrt(np.clip(np.einsum("bii->bi", matrix), 0.0, None))
    top = np.maximum(diag.max(axis=1, keepdims=True), 1e-300)
    flat = diag <= 1e-12 * top
    if floor is not None:
        flat |= diag <= np.asarray(floor)[:, None]
    safe = np.where(flat, 1.0, diag)
    eigval, eigvec = np.linalg.eigh(matrix / (safe[:, :, None] * safe[:, None, :]))
    weak = eigval <= 1e-10 * np.maximum(eigval.max(axis=1, keepdims=True), 1e-300)
    return flat | np.any(weak[:, None, :] & (np.abs(eigvec) > 0.3), axis=2)
