"""A validated fitting problem, alone or stacked with others of the same shape.

``make_problem`` checks everything up front (a bad input is a ValueError naming it, never a NaN
fit) and precomputes what every evaluation needs (the logarithms of inputs and target).
``stack`` puts problems of the same form, objective, fixed parameters and number of points
side by side, so that one vectorised evaluation serves all of them (``fit.fit_laws``, the
bootstrap): inputs and target become (B, n) arrays, bounds (B, p).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .laws import Form, get_form
from .objectives import Objective, get_objective

BOUND_TOL = 1e-12
"""A parameter this close (relative) to a bound is on it."""


@dataclass(frozen=True, eq=False)
class Problem:
    """What ``fit_law`` optimises: one problem (inputs and target (n,)), or B stacked problems
    (inputs and target (B, n), bounds (B, p)) that share form, objective and fixed parameters."""

    form: Form
    x: dict[str, np.ndarray]
    y: np.ndarray
    objective: Objective
    fixed: dict[str, float]
    lower: np.ndarray  # bounds on theta (internal parameters)
    upper: np.ndarray
    free: np.ndarray  # indices of the fitted parameters

    @property
    def n_points(self) -> int:
        return self.y.shape[-1]

    @property
    def stacked(self) -> bool:
        return self.y.ndim == 2

    @property
    def n_problems(self) -> int:
        return self.y.shape[0] if self.stacked else 1

    @cached_property
    def box(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Bounds of the free parameters and the thresholds within rounding of them (a value
        past a threshold is on its bound): lower, upper, near_lower, near_upper; (q,) or (B, q)."""
        lo, hi = self.lower[..., self.free], self.upper[..., self.free]
        with np.errstate(invalid="ignore"):
            near_lo = np.where(np.isfinite(lo), lo + BOUND_TOL * (1 + np.abs(lo)), lo)
            near_hi = np.where(np.isfinite(hi), hi - BOUND_TOL * (1 + np.abs(hi)), hi)
        return lo, hi, near_lo, near_hi

    def residuals(self, theta: np.ndarray, jac: bool = True, x: dict | None = None):
        """Residuals (..., n) and d residuals / d theta (..., n, p) in the objective's space.

        ``x`` replaces the problem's inputs (arrays broadcastable against theta's leading
        dimensions; the solvers pass each row's own problem's inputs)."""
        x = self.x if x is None else x
        theta = np.asarray(theta, float)
        if self.objective.name == "log_ols":
            return _log_ols_residuals(theta, x)
        value, dvalue = self.form.evaluate(theta, x, log=self.objective.log_residuals, jac=jac)
        target = x["log_target"] if self.objective.log_residuals else x["target"]
        return target - value, (-dvalue if jac else None)

    def objective_value(self, theta: np.ndarray, x: dict | None = None) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # far-off candidates score inf
            r, _ = self.residuals(theta, jac=False, x=x)
            value, _ = self.objective.value_and_grad(r)
        return np.where(np.all(np.isfinite(r), axis=-1), value, np.inf)

    def select(self, index: int | slice) -> Problem:
        """Part of a stack: problem ``index`` alone (an int) or a smaller stack (a slice)."""
        if not self.stacked:
            return self
        return Problem(
            self.form,
            {k: v[index] for k, v in self.x.items()},
            self.y[index],
            self.objective,
            self.fixed,
            self.lower[index],
            self.upper[index],
            self.free,
        )


def stack(problems: list[Problem]) -> Problem:
    """B single problems of the same form, objective, fixed parameters and number of points as
    one stacked problem."""
    first = problems[0]
    for other in problems[1:]:
        if (
            other.form is not first.form
            or other.objective != first.objective
            or other.fixed != first.fixed
            or other.n_points != first.n_points
            or other.stacked
        ):
            raise ValueError(
                "only single problems of the same form, objective, fixed parameters and number of "
                "points can be stacked"
            )
    return Problem(
        first.form,
        {k: np.stack([p.x[k] for p in problems]) for k in first.x},
        np.stack([p.y for p in problems]),
        first.objective,
        first.fixed,
        np.stack([p.lower for p in problems]),
        np.stack([p.upper for p in problems]),
        first.free,
    )


def make_problem(form, inputs, target, *, objective=None, fixed=None, bounds=None) -> Problem:
    """Validate everything up front: a bad input is a ValueError naming it, never a NaN fit."""
    spec = get_form(form)
    objective = get_objective(objective, spec.default_objective)
    if not isinstance(inputs, dict):
        raise ValueError(
            f"inputs must be a dict of input name -> array, got {type(inputs).__name__}"
        )
    missing = [k for k in spec.inputs if k not in inputs]
    unknown = [k for k in inputs if k not in spec.inputs]
    if missing or unknown:
        raise ValueError(
            f"form {spec.name!r} takes inputs {list(spec.inputs)}; "
            + "; ".join(
                part
                for part in (
                    f"missing {missing}" if missing else "",
                    f"unknown {unknown}" if unknown else "",
                )
                if part
            )
        )
    y = _vector("target", target)
    x = {k: _vector(f"input {k!r}", inputs[k]) for k in spec.inputs}
    for k, v in x.items():
        if v.size != y.size:
            raise ValueError(f"input {k!r} has {v.size} values but the target has {y.size}")
    spec.check_domain(x)
    for name in spec.positive_inputs:  # logs the law takes at every evaluation, computed once
        x[f"log_{name}"] = np.log(x[name])
    if objective.log_residuals:
        with np.errstate(divide="ignore", invalid="ignore"):
            x["log_target"] = np.log(y)
        bad = ~(y > 0)
        if bad.any():
            raise ValueError(
                f"objective {objective.name!r} takes log(target), but the target has "
                f"{int(bad.sum())} non-positive value(s), e.g. {float(y[bad][0])!r}"
            )
    else:
        x["target"] = y

    fixed = dict(fixed or {})
    for name, value in fixed.items():
        if name not in spec.params:
            raise ValueError(
                f"unknown parameter {name!r} in fixed; form {spec.name!r} has {list(spec.params)}"
            )
        fixed[name] = _finite_number(value, f"fixed parameter {name!r}")

    natural = spec.default_bounds(x, y)
    for name, pair in (bounds or {}).items():
        if name not in spec.params:
            raise ValueError(
                f"unknown parameter {name!r} in bounds; form {spec.name!r} has {list(spec.params)}"
            )
        try:
            lo, hi = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(
                f"bounds for {name!r} must be a (lower, upper) pair of numbers, got {pair!r}"
            ) from None
        if not lo < hi:
            raise ValueError(f"bounds for {name!r} must satisfy lower < upper, got {pair!r}")
        if name in spec.log_params | spec.offset_params and lo < 0:
            raise ValueError(f"{name!r} is positive by construction; its lower bound must be >= 0")
        natural[name] = (lo, hi)
    for name, value in fixed.items():
        lo, hi = natural[name]
        if not lo <= value <= hi:
            raise ValueError(
                f"fixed {name}={value!r} is outside its allowed range [{lo!r}, {hi!r}] for form "
                f"{spec.name!r} on these data: the fit would be impossible"
            )
    with np.errstate(divide="ignore"):
        to_internal = [
            (np.log(natural[p][0]), np.log(natural[p][1])) if p in spec.log_params else natural[p]
            for p in spec.params
        ]
    lower, upper = (np.array(col, dtype=float) for col in zip(*to_internal, strict=True))
    free = np.array([j for j, p in enumerate(spec.params) if p not in fixed], dtype=int)
    if y.size < free.size:
        raise ValueError(
            f"{y.size} point(s) cannot determine {free.size} free parameter(s) "
            f"({', '.join(spec.params[j] for j in free)}) of form {spec.name!r}"
        )
    for name in spec.offset_params & fixed.keys():
        # The law is its floor plus non-negative terms: a floor at or above every target leaves
        # nothing to fit but terms pushed to zero.
        if fixed[name] >= y.max():
            raise ValueError(
                f"fixed {name}={fixed[name]!r} is not below any target (the largest is "
                f"{float(y.max())!r}); form {spec.name!r} never predicts less than {name}: the fit would "
                "be impossible"
            )
    if spec.name == "loss_to_loss" and "E_x" in fixed and not np.any(x["L"] > fixed["E_x"]):
        raise ValueError(f"fixed E_x={fixed['E_x']!r} is not below any input loss: nothing to fit")
    if objective.name == "log_ols":
        x.update(_log_ols_data(spec, x["L"] if "L" in x else None, y, fixed))
    return Problem(spec, x, y, objective, fixed, lower, upper, free)


def _finite_number(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def _vector(what: str, values) -> np.ndarray:
    if np.iscomplexobj(values):  # numpy would silently drop the imaginary part
        raise ValueError(f"{what} must be real numbers, got complex values")
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be numeric: {error}") from None
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {np.shape(values)}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(
            f"{what} has {int(bad.sum())} NaN or infinite value(s) at {np.flatnonzero(bad)[:5].tolist()}"
        )
    return array


# --- log_ols: loss-to-loss with fixed E's, a straight line in log-log space --------------------


def _log_ols_data(spec: Form, loss, y, fixed) -> dict[str, np.ndarray]:
    """u = log(L_x - E_x) and v = log(L_y - E_y), the line's abscissa and ordinate."""
    if spec.name != "loss_to_loss" or "E_x" not in fixed or "E_y" not in fixed:
        raise ValueError(
            "objective 'log_ols' fits log(L_y - E_y) = log K + kappa log(L_x - E_x): it needs form "
            "'loss_to_loss' with both E_x and E_y fixed"
        )
    e_x, e_y = fixed["E_x"], fixed["E_y"]
    for what, values, e in (("L (x)", loss, e_x), ("target (y)", y, e_y)):
        bad = ~(values > e)
        if bad.any():
            raise ValueError(
                f"log_ols takes log({what} - E): {int(bad.sum())} point(s) are not above the fixed "
                f"E={e!r} (e.g. {float(values[bad][0])!r}); the fit is impossible"
            )
    return {"log_excess": np.log(loss - e_x), "log_target_excess": np.log(y - e_y)}


def _log_ols_residuals(theta: np.ndarray, x: dict) -> tuple[np.ndarray, np.ndarray]:
    u, v = x["log_excess"], x["log_target_excess"]
    log_k, kappa = theta[..., 0, None], theta[..., 1, None]
    residuals = v - log_k - kappa * u
    jac = np.zeros((*residuals.shape, 4))
    jac[..., 0], jac[..., 1] = -1.0, -u
    return residuals, jac
