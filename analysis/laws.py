"""The seven law forms: formulas, parameters, analytic Jacobians and variable-projection starts.

Every form is evaluated on an internal parameter vector ``theta`` in which positive scale
parameters (A, B, K, ...) live in log space, so that the loss laws are sums of exponentials
computed with log-sum-exp (Epoch AI's ``log_sum_exp(a, b, e, alpha, beta, N, D)``). The
irreducible losses E and E_y stay in natural units with bound >= 0 (see ``offset_params``). ``theta``
may carry leading batch dimensions: ``theta[..., j]`` is parameter j, so one call scores a whole
grid of candidate parameters.

Each form also knows how to generate excellent starting points by variable projection: for a
grid of its nonlinear parameters (exponents, offsets) the remaining coefficients enter linearly
and are solved in closed form by (non-negative, weighted) least squares. The weights make the
linear residuals approximate the objective's residuals (relative residuals for a log objective).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.special import expit

from .varpro import Grid, linear_fit

Inputs = dict[str, np.ndarray]


def _unpack(theta: np.ndarray, p: int):
    """Parameters as scalars (one theta) or as (G, 1) columns (a batch of G thetas)."""
    if theta.ndim == 1:
        return tuple(float(t) for t in theta)
    return tuple(theta[..., j, None] for j in range(p))


def _log(value):
    """log of a non-negative offset E (log 0 = -inf: a law without floor)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(value)


def _softmax_lse(terms: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """log(sum(exp(terms))) and the softmax weights d lse / d term_j, all broadcast together."""
    top = terms[0]
    for t in terms[1:]:
        top = np.maximum(top, t)
    top = np.where(np.isfinite(top), top, 0.0)  # all terms -inf: a zero prediction
    exps = [np.exp(t - top) for t in terms]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    with np.errstate(divide="ignore"):
        lse = top + np.log(total)
    return lse, [e / total for e in exps]


class Form:
    """A law: its inputs, parameters, evaluation with Jacobian, bounds and starting grid."""

    name: ClassVar[str]
    formula: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    params: ClassVar[tuple[str, ...]]
    log_params: ClassVar[frozenset[str]]  # positive parameters, fitted as their logarithm
    # Additive floors of the target (E, E_y): kept in natural units with bound >= 0, since their
    # optimum is often exactly 0 on downstream losses, where log E would crawl towards -inf.
    offset_params: ClassVar[frozenset[str]] = frozenset()
    positive_inputs: ClassVar[frozenset[str]]  # inputs whose logarithm the law takes
    output_is_log: ClassVar[bool]  # whether _evaluate returns log(prediction)
    default_objective: ClassVar[str]

    # --- evaluation -------------------------------------------------------------------------
    def _evaluate(
        self, theta: np.ndarray, x: Inputs, jac: bool = True
    ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Prediction (or its log when output_is_log) and, if ``jac``, its derivative per
        parameter (arrays broadcastable to the prediction's shape)."""
        raise NotImplementedError

    def evaluate(
        self, theta: np.ndarray, x: Inputs, *, log: bool, jac: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Prediction in log or linear space and (if ``jac``) its Jacobian (..., n, p)."""
        value, grads = self._evaluate(np.asarray(theta, float), x, jac)
        if log == self.output_is_log:
            out = value
        elif self.output_is_log:
            out = np.exp(value)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                out = np.where(value > 0, np.log(np.where(value > 0, value, 1.0)), -np.inf)
        if not jac:
            return out, None
        jacobian = np.empty((*np.shape(value), len(grads)))
        for j, grad in enumerate(grads):
            jacobian[..., j] = grad
        if log == self.output_is_log:
            return out, jacobian
        if self.output_is_log:
            return out, jacobian * out[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return out, jacobian / value[..., None]

    def predict(self, params: dict[str, float], x: Inputs) -> np.ndarray:
        value, _ = self._evaluate(self.to_theta(params), x, jac=False)
        return np.exp(value) if self.output_is_log else value

    # --- parameterisation -------------------------------------------------------------------
    def to_theta(self, params: dict[str, float]) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.array(
                [np.log(params[p]) if p in self.log_params else params[p] for p in self.params],
                dtype=float,
            )

    def from_theta(self, theta: np.ndarray) -> dict[str, float]:
        return {
            p: float(np.exp(t)) if p in self.log_params else float(t)
            for p, t in zip(self.params, theta, strict=True)
        }

    def default_bounds(self, x: Inputs, y: np.ndarray) -> dict[str, tuple[float, float]]:
        """Bounds in natural units; log-space parameters are positive by construction."""
        return {
            p: (0.0, np.inf) if p in self.log_params | self.offset_params else (-np.inf, np.inf)
            for p in self.params
        }

    def check_domain(self, x: Inputs) -> None:
        for name in self.positive_inputs:
            bad = ~(x[name] > 0)
            if bad.any():
                raise ValueError(
                    f"form {self.name!r} takes the logarithm of input {name!r}, but it has "
                    f"{int(bad.sum())} non-positive value(s), e.g. {float(x[name][bad][0])!r}"
                )

    # --- variable projection ----------------------------------------------------------------
    def candidates(
        self, x: Inputs, y: np.ndarray, fixed: dict[str, float], log_residuals: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidate theta (B, G, p) for a batch of B problems (inputs and target (B, n)) from a
        grid over the nonlinear parameters with the linear ones solved (``varpro``), and each
        candidate's weighted residual sum of squares (B, G), a proxy of the objective for
        ranking them."""
        raise NotImplementedError

    def _candidates(self, grid, y, cols, names, fixed, log_residuals, nonlinear):
        """The common case: target y (B, n), columns over the grid, coefficients named ``names``;
        ``nonlinear`` maps the grid's parameters to their grid-shaped values."""
        fixed_coef = {j: fixed[n] for j, n in enumerate(names) if n in fixed}
        nonneg = [n in self.log_params | self.offset_params for n in names]
        weights = _log_weights(grid.points(y), log_residuals)
        coef, rss = linear_fit(grid, grid.points(y), cols, weights, nonneg, fixed_coef)
        values = {name: coef[..., j] for j, name in enumerate(names)}
        values.update({k: grid.flat(v) for k, v in nonlinear.items()})
        return self._assemble(values, np.mean(np.abs(y), axis=-1, keepdims=True)), rss

    def _assemble(self, values: dict[str, np.ndarray], z_scale) -> np.ndarray:
        """theta (B, G, p) from natural values (B, G); zero log-space coefficients get a
        negligible floor (``z_scale``: (B, 1), the size of each problem's target)."""
        columns = []
        for p in self.params:
            v = np.asarray(values[p], float)
            if p in self.log_params:
                with np.errstate(invalid="ignore"):
                    v = np.log(np.maximum(v, 1e-12 * z_scale))
            columns.append(v)
        return np.stack(np.broadcast_arrays(*columns), axis=-1)


def log_input(x: Inputs, name: str) -> np.ndarray:
    """log of an input, precomputed by the fitter under the key ``log_<name>`` when available."""
    cached = x.get("log_" + name)
    return cached if cached is not None else np.log(x[name])


def _log_weights(y: np.ndarray, log_residuals: bool) -> np.ndarray:
    # log(y) - log(pred) ~ (y - pred) / y: relative weights turn linear residuals into log ones.
    return 1.0 / np.abs(y) if log_residuals else np.ones_like(y)


# Grids of the variable-projection starts. They only need to land in the right basin: the
# local solver does the rest.
EXPONENTS = np.geomspace(0.01, 4.0, 28)
"""Power-law exponents alpha, beta of the Chinchilla form."""
RATIOS = np.geomspace(0.05, 8.0, 12)
"""alpha / beta of the Kaplan form."""
BETAS = np.geomspace(0.02, 3.0, 12)
"""beta of the Kaplan form."""
E_FRACTIONS = np.array([0.0, 0.4, 0.65, 0.8, 0.9, 0.97])
"""Irreducible loss E as a fraction of the smallest target (Kaplan form)."""
E_FRACTIONS_X = np.array([0.0, 0.2, 0.4, 0.6, 0.75, 0.85, 0.9, 0.95, 0.98, 0.995])
"""E_x as a fraction of the smallest x-loss (loss-to-loss form)."""


class Chinchilla(Form):
    name = "chinchilla"
    formula = "L = E + A / N^alpha + B / D^beta"
    inputs = ("N", "D")
    params = ("A", "B", "E", "alpha", "beta")
    log_params = frozenset({"A", "B"})
    offset_params = frozenset({"E"})
    positive_inputs = frozenset({"N", "D"})
    output_is_log = True
    default_objective = "huber_log"

    def _evaluate(self, theta, x, jac=True):
        log_a, log_b, e, alpha, beta = _unpack(theta, 5)
        log_n, log_d = log_input(x, "N"), log_input(x, "D")
        lse, (s_a, s_b, _) = _softmax_lse([log_a - alpha * log_n, log_b - beta * log_d, _log(e)])
        if not jac:
            return lse, None
        return lse, [s_a, s_b, np.exp(-lse), -s_a * log_n, -s_b * log_d]

    def default_bounds(self, x, y):
        return {**super().default_bounds(x, y), "alpha": (0.0, np.inf), "beta": (0.0, np.inf)}

    def candidates(self, x, y, fixed, log_residuals):
        grid = Grid(len(y), fixed, alpha=EXPONENTS, beta=EXPONENTS)
        alpha, beta = grid.on("alpha"), grid.on("beta")
        log_n, log_d = grid.points(log_input(x, "N")), grid.points(log_input(x, "D"))
        cols = [np.exp(-alpha * log_n), np.exp(-beta * log_d), np.ones(1)]
        nonlinear = {"alpha": alpha[..., 0], "beta": beta[..., 0]}
        return self._candidates(grid, y, cols, ["A", "B", "E"], fixed, log_residuals, nonlinear)


class Kaplan(Form):
    name = "kaplan"
    formula = "L = ((A / N)^(alpha / beta) + B / D)^beta + E"
    inputs = ("N", "D")
    params = ("A", "B", "E", "alpha", "beta")
    log_params = frozenset({"A", "B"})
    offset_params = frozenset({"E"})
    positive_inputs = frozenset({"N", "D"})
    output_is_log = True
    default_objective = "huber_log"

    def _evaluate(self, theta, x, jac=True):
        log_a, log_b, e, alpha, beta = _unpack(theta, 5)
        log_n, log_d = log_input(x, "N"), log_input(x, "D")
        ratio = alpha / beta
        # u = log((A/N)^(alpha/beta) + B/D); log(L - E) = beta u; log L = logaddexp(beta u, log E)
        u, (w_n, w_d) = _softmax_lse([ratio * (log_a - log_n), log_b - log_d])
        lse, (s_u, _) = _softmax_lse([beta * u, _log(e)])
        if not jac:
            return lse, None
        d_ratio = w_n * (log_a - log_n)  # du / d(alpha/beta)
        return lse, [
            s_u * w_n * alpha,
            s_u * beta * w_d,
            np.exp(-lse),
            s_u * d_ratio,
            s_u * (u - d_ratio * ratio),
        ]

    def default_bounds(self, x, y):
        # beta divides alpha: keep it away from zero.
        return {**super().default_bounds(x, y), "alpha": (0.0, np.inf), "beta": (1e-4, np.inf)}

    def candidates(self, x, y, fixed, log_residuals):
        # For fixed (alpha/beta, beta, E): (L - E)^(1/beta) = A^(alpha/beta) N^-(alpha/beta) + B/D
        # is linear in (A^(alpha/beta), B).
        y_min = np.min(y, axis=-1)
        axes = dict(ratio=RATIOS, beta=BETAS, E=y_min[:, None] * E_FRACTIONS)
        if "alpha" in fixed:  # then the ratio follows beta: one axis for both
            del axes["ratio"]
        grid = Grid(len(y), {k: v for k, v in fixed.items() if k in ("beta", "E")}, **axes)
        beta, e = grid.on("beta"), grid.on("E")
        ratio = fixed["alpha"] / beta if "alpha" in fixed else grid.on("ratio")
        target = grid.points(y)
        excess = np.maximum(target - e, 1e-12 * grid.per_problem(y_min))
        z = excess ** (1.0 / beta)
        # d log L = beta (L - E) / (L z) dz turns residuals in z into (approximately) log residuals.
        weights = beta * excess / (target * z) if log_residuals else beta * excess / z
        cols = [np.exp(-ratio * grid.points(log_input(x, "N"))), grid.points(1.0 / x["D"])]
        fixed_coef = {}
        if "A" in fixed:
            fixed_coef[0] = fixed["A"] ** ratio[..., 0]
        if "B" in fixed:
            fixed_coef[1] = fixed["B"]
        coef, _ = linear_fit(grid, z, cols, weights, [True, True], fixed_coef)
        # The linearisation is only first order: far from the data (beta -> 0 makes z span many
        # decades) its residual misranks candidates, so rank by the law's own log residuals.
        # Only a ranking, so single precision (log residuals to ~1e-7, 4x faster), on scaled
        # quantities: z spans many decades and N^-(alpha/beta) underflows float32, so each column
        # is divided by its largest value and the fitted z by the data's largest z (per grid
        # point); the fitted z of a sensible law is then O(1). A law that still overflows
        # predicts losses far beyond the data and drops out of the ranking.
        f32 = np.float32
        shape = (grid.batch, *grid.axis_shape, 1)
        col_top = [np.max(c, axis=-1, keepdims=True) for c in cols]
        z_top = np.max(z, axis=-1, keepdims=True)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            scaled = [
                (coef[..., j].reshape(shape) * (col_top[j] / z_top)).astype(f32) for j in (0, 1)
            ]
            pred = scaled[0] * (cols[0] / col_top[0]).astype(f32)  # fitted z / z_top
            pred += scaled[1] * (cols[1] / col_top[1]).astype(f32)
            # in place from here: L = exp(beta log z) + E = exp(beta log(z / z_top) + c) + E
            np.log(pred, out=pred)
            pred *= beta.astype(f32)
            pred += (beta * np.log(z_top)).astype(f32)
            np.exp(pred, out=pred)
            pred += e.astype(f32)
            if log_residuals:
                np.log(pred, out=pred)
                pred -= np.log(target).astype(f32)
            else:
                pred -= target.astype(f32)
            rss = grid.flat(np.einsum("...n,...n->...", pred, pred))  # pred: -residuals
            log_a = np.log(np.maximum(coef[..., 0], 1e-300)) / grid.flat(ratio[..., 0])
        values = dict(
            A=1.0,
            B=coef[..., 1],
            E=grid.flat(e[..., 0]),
            alpha=grid.flat((ratio * beta)[..., 0]),
            beta=grid.flat(beta[..., 0]),
        )
        theta = self._assemble(values, np.mean(y, axis=-1, keepdims=True))
        theta[..., 0] = log_a  # A = coef^(beta/alpha) overflows in natural units; stay in logs
        return theta, np.where(np.isfinite(rss), rss, np.inf)


class Compute(Form):
    name = "compute"
    formula = "L = E + A C^-alpha"
    inputs = ("C",)
    params = ("A", "E", "alpha")
    log_params = frozenset({"A"})
    offset_params = frozenset({"E"})
    positive_inputs = frozenset({"C"})
    output_is_log = True
    default_objective = "huber_log"

    def _evaluate(self, theta, x, jac=True):
        log_a, e, alpha = _unpack(theta, 3)
        log_c = log_input(x, "C")
        lse, (s_a, _) = _softmax_lse([log_a - alpha * log_c, _log(e)])
        if not jac:
            return lse, None
        return lse, [s_a, np.exp(-lse), -s_a * log_c]

    def default_bounds(self, x, y):
        return {**super().default_bounds(x, y), "alpha": (0.0, np.inf)}

    def candidates(self, x, y, fixed, log_residuals):
        grid = Grid(len(y), fixed, alpha=np.geomspace(0.005, 4.0, 96))
        alpha = grid.on("alpha")
        cols = [np.exp(-alpha * grid.points(log_input(x, "C"))), np.ones(1)]
        nonlinear = {"alpha": alpha[..., 0]}
        return self._candidates(grid, y, cols, ["A", "E"], fixed, log_residuals, nonlinear)


class Overtrain(Form):
    name = "overtrain"
    formula = "L = E + (a M^eta + b M^-eta) C^-eta   (M = D / N)"
    inputs = ("C", "M")
    params = ("E", "a", "b", "eta")
    log_params = frozenset({"a", "b"})
    offset_params = frozenset({"E"})
    positive_inputs = frozenset({"C", "M"})
    output_is_log = True
    default_objective = "huber_log"

    def _evaluate(self, theta, x, jac=True):
        e, log_a, log_b, eta = _unpack(theta, 4)
        log_c, log_m = log_input(x, "C"), log_input(x, "M")
        lse, (_, s_a, s_b) = _softmax_lse(
            [_log(e), log_a + eta * (log_m - log_c), log_b - eta * (log_m + log_c)]
        )
        if not jac:
            return lse, None
        return lse, [np.exp(-lse), s_a, s_b, s_a * (log_m - log_c) - s_b * (log_m + log_c)]

    def default_bounds(self, x, y):
        return {**super().default_bounds(x, y), "eta": (0.0, np.inf)}

    def candidates(self, x, y, fixed, log_residuals):
        grid = Grid(len(y), fixed, eta=np.geomspace(0.005, 2.0, 96))
        eta = grid.on("eta")
        log_c, log_m = grid.points(log_input(x, "C")), grid.points(log_input(x, "M"))
        cols = [np.ones(1), np.exp(eta * (log_m - log_c)), np.exp(-eta * (log_m + log_c))]
        nonlinear = {"eta": eta[..., 0]}
        return self._candidates(grid, y, cols, ["E", "a", "b"], fixed, log_residuals, nonlinear)


class LossToLoss(Form):
    name = "loss_to_loss"
    formula = "L_y = K max(L - E_x, 0)^kappa + E_y"
    inputs = ("L",)
    params = ("K", "kappa", "E_x", "E_y")
    log_params = frozenset({"K"})
    offset_params = frozenset({"E_y"})
    positive_inputs = frozenset()
    output_is_log = True
    default_objective = "huber_log"

    def _evaluate(self, theta, x, jac=True):
        log_k, kappa, e_x, e_y = _unpack(theta, 4)
        excess = x["L"] - e_x
        positive = excess > 0
        with np.errstate(divide="ignore"):
            log_excess = np.where(positive, np.log(np.where(positive, excess, 1.0)), -np.inf)
        with np.errstate(invalid="ignore"):  # 0 * -inf where kappa = 0 and L <= E_x
            power = np.where(positive, log_k + kappa * log_excess, -np.inf)
        lse, (s_p, _) = _softmax_lse([power, _log(e_y)])
        if not jac:
            return lse, None
        with np.errstate(invalid="ignore"):
            d_kappa = np.where(positive, s_p * log_excess, 0.0)
            d_ex = np.where(positive, -s_p * kappa / np.where(positive, excess, 1.0), 0.0)
        return lse, [s_p, d_kappa, d_ex, np.exp(-lse)]

    def check_domain(self, x):
        bad = ~(x["L"] >= 0)
        if bad.any():
            first = float(x["L"][bad][0])
            raise ValueError(f"loss_to_loss input 'L' must be a loss >= 0; got {first!r}")

    def default_bounds(self, x, y):
        # E_x stays strictly below the smallest x-loss: every point then informs the fit.
        upper = float(np.min(x["L"])) * (1.0 - 1e-9)
        return {**super().default_bounds(x, y), "kappa": (0.0, np.inf), "E_x": (0.0, upper)}

    def candidates(self, x, y, fixed, log_residuals):
        l_min = np.min(x["L"], axis=-1)
        grid = Grid(
            len(y), fixed, kappa=np.geomspace(0.05, 20.0, 32), E_x=l_min[:, None] * E_FRACTIONS_X
        )
        kappa, e_x = grid.on("kappa"), grid.on("E_x")
        with np.errstate(divide="ignore"):
            log_excess = np.log(np.maximum(grid.points(x["L"]) - e_x, 0.0))
        cols = [np.exp(kappa * log_excess), np.ones(1)]
        nonlinear = {"kappa": kappa[..., 0], "E_x": e_x[..., 0]}
        return self._candidates(grid, y, cols, ["K", "E_y"], fixed, log_residuals, nonlinear)


class LossToError(Form):
    name = "loss_to_error"
    formula = "Err = epsilon - k exp(-gamma L)"
    inputs = ("L",)
    params = ("epsilon", "k", "gamma")
    log_params = frozenset({"k"})
    positive_inputs = frozenset()
    output_is_log = False
    default_objective = "least_squares"

    def _evaluate(self, theta, x, jac=True):
        epsilon, log_k, gamma = _unpack(theta, 3)
        decay = np.exp(log_k - gamma * x["L"])
        if not jac:
            return epsilon - decay, None
        return epsilon - decay, [np.ones_like(decay), -decay, decay * x["L"]]

    def default_bounds(self, x, y):
        return {**super().default_bounds(x, y), "gamma": (0.0, np.inf)}

    def candidates(self, x, y, fixed, log_residuals):
        # Shifted decay exp(-gamma (L - min L)) keeps the column O(1); k absorbs exp(gamma min L).
        l_min = np.min(x["L"], axis=-1)
        spread = np.ptp(x["L"], axis=-1)
        spread = np.where(spread > 0, spread, 1.0)
        grid = Grid(len(y), fixed, gamma=np.geomspace(1e-3, 50.0, 96) / spread[:, None])
        gamma = grid.on("gamma")
        shifted = grid.points(x["L"]) - grid.per_problem(l_min)
        cols = [np.ones(1), -np.exp(-gamma * shifted)]
        fixed_coef = {}
        if "epsilon" in fixed:
            fixed_coef[0] = fixed["epsilon"]
        if "k" in fixed:
            fixed_coef[1] = fixed["k"] * np.exp(-(gamma * grid.per_problem(l_min))[..., 0])
        weights = _log_weights(grid.points(y), log_residuals)
        coef, rss = linear_fit(grid, grid.points(y), cols, weights, [False, True], fixed_coef)
        gamma_flat = grid.flat(gamma[..., 0])
        k = coef[..., 1] * np.exp(gamma_flat * l_min[:, None])
        return self._assemble(dict(epsilon=coef[..., 0], k=k, gamma=gamma_flat), 1.0), rss


class Sigmoid(Form):
    name = "sigmoid"
    formula = "Acc = a / (1 + exp(-k (L - L0))) + b"
    inputs = ("L",)
    params = ("a", "b", "k", "L0")
    log_params = frozenset()
    positive_inputs = frozenset()
    output_is_log = False
    default_objective = "least_squares"

    def _evaluate(self, theta, x, jac=True):
        a, b, k, l0 = _unpack(theta, 4)
        shifted = x["L"] - l0
        s = expit(k * shifted)
        if not jac:
            return a * s + b, None
        ds = s * (1.0 - s)
        return a * s + b, [s, np.ones_like(s), a * ds * shifted, -a * ds * k]

    def default_bounds(self, x, y):
        # k >= 0 removes the mirror symmetry (a, b, k) -> (-a, a + b, -k) of the logistic.
        return {**super().default_bounds(x, y), "k": (0.0, np.inf)}

    def candidates(self, x, y, fixed, log_residuals):
        lo, hi = np.min(x["L"], axis=-1), np.max(x["L"], axis=-1)
        spread = np.where(hi > lo, hi - lo, 1.0)
        grid = Grid(
            len(y),
            fixed,
            k=np.geomspace(0.1, 200.0, 32) / spread[:, None],
            L0=np.linspace(lo - spread, hi + spread, 31, axis=-1),
        )
        k, l0 = grid.on("k"), grid.on("L0")
        cols = [expit(k * (grid.points(x["L"]) - l0)), np.ones(1)]
        nonlinear = {"k": k[..., 0], "L0": l0[..., 0]}
        return self._candidates(grid, y, cols, ["a", "b"], fixed, log_residuals, nonlinear)


FORMS: dict[str, Form] = {
    form.name: form
    for form in (
        Chinchilla(),
        Kaplan(),
        Compute(),
        Overtrain(),
        LossToLoss(),
        LossToError(),
        Sigmoid(),
    )
}


def get_form(name: str) -> Form:
    """The registered form called ``name`` (ValueError listing the known forms otherwise)."""
    if isinstance(name, Form):
        return name
    try:
        return FORMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown form {name!r}; known forms: {', '.join(FORMS)}") from None
