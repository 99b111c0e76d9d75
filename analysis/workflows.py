"""Workflows on fitted laws: compute-optimal allocation, loss-to-loss settings, translating a law to
a new dataset, and the OLMo-ladder two-step chain (N, D) -> task loss -> accuracy.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .fit import fit_law
from .law import Law, _check_level, load_law
from .objectives import Objective, huber_log

# --- compute-optimal allocation ---------------------------------------------------------------


def compute_optimal(law: Law, flop_budget, *, flops_per_token: float = 6.0) -> pd.DataFrame:
    """Loss-minimising model size N and data D for each FLOP budget C = flops_per_token N D.

    Closed forms, from setting dL/dN = 0 along D = C / (k N) (k = flops_per_token):
    - chinchilla: N = G (C/k)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta))
      (Hoffmann et al. 2022, eq. 4);
    - kaplan: N^(alpha/beta + 1) = (alpha/beta) A^(alpha/beta) C / (k B);
    - overtrain (inputs C, M = D/N): M* = (b/a)^(1/(2 eta)) whatever C, N = sqrt(C / (k M*)).
    Returns a tidy table: C, N, D, tokens_per_param, loss.
    """
    budget = np.atleast_1d(np.asarray(flop_budget, dtype=float))
    if not np.all(budget > 0):
        raise ValueError("FLOP budgets must be positive")
    p = law.params
    if law.form == "chinchilla":
        a, b, alpha, beta = p["A"], p["B"], p["alpha"], p["beta"]
        scale = (alpha * a / (beta * b)) ** (1.0 / (alpha + beta))
        n = scale * (budget / flops_per_token) ** (beta / (alpha + beta))
    elif law.form == "kaplan":
        a, b, alpha, beta = p["A"], p["B"], p["alpha"], p["beta"]
        ratio = alpha / beta
        log_n = (np.log(ratio) + ratio * np.log(a) + np.log(budget / (flops_per_token * b))) / (
            ratio + 1.0
        )
        n = np.exp(log_n)
    elif law.form == "overtrain":
        m_star = (p["b"] / p["a"]) ** (1.0 / (2.0 * p["eta"]))
        n = np.sqrt(budget / (flops_per_token * m_star))
    else:
        raise ValueError(
            f"compute_optimal needs a law of N and D (chinchilla, kaplan) or of C and M "
            f"(overtrain), not {law.form!r}"
        )
    d = budget / (flops_per_token * n)
    if law.form == "overtrain":
        loss = law.predict(C=budget, M=d / n)
    else:
        loss = law.predict(N=n, D=d)
    return pd.DataFrame({"C": budget, "N": n, "D": d, "tokens_per_param": d / n, "loss": loss})


# --- loss-to-loss ------------------------------------------------------------------------------


def _irreducible(value) -> float:
    """An E given as a number or as a fitted loss law (its E)."""
    if isinstance(value, Law):
        if "E" not in value.params:
            raise ValueError(f"a {value.form} law has no irreducible loss E")
        return float(value.params["E"])
    return float(value)


def fit_loss_to_loss(
    x,
    y,
    *,
    E_x=None,
    E_y=None,
    objective: str | Objective | None = None,
    metadata: dict | None = None,
) -> Law:
    """L_y = K (L_x - E_x)^kappa + E_y between two losses of the same models.

    With E_x and E_y given (numbers, or loss laws whose E is taken, as the loss-to-loss paper
    takes them from each dataset's Kaplan fit), kappa and K come from ordinary least squares of
    log(L_y - E_y) on log(L_x - E_x) (objective ``log_ols``, the paper's method); otherwise all
    four parameters are fitted with the Huber objective. The law's metadata carries the R^2 of
    the straight line in log-log space (``r_squared_log``).
    """
    fixed = {}
    if E_x is not None:
        fixed["E_x"] = _irreducible(E_x)
    if E_y is not None:
        fixed["E_y"] = _irreducible(E_y)
    if objective is None:
        objective = "log_ols" if len(fixed) == 2 else "huber_log"
    law = fit_law("loss_to_loss", {"L": x}, y, objective=objective, fixed=fixed, metadata=metadata)
    x, y = np.asarray(x, float), np.asarray(y, float)
    p = law.params
    if np.all(x > p["E_x"]) and np.all(y > p["E_y"]):
        v = np.log(y - p["E_y"])
        fitted = np.log(p["K"]) + p["kappa"] * np.log(x - p["E_x"])
        r2 = 1.0 - np.sum((v - fitted) ** 2) / np.sum((v - v.mean()) ** 2)
        law = replace(law, metadata={**law.metadata, "r_squared_log": float(r2)})
    return law


def pair_runs(left: pd.DataFrame, right: pd.DataFrame, on=("N", "D")) -> pd.DataFrame:
    """Rows of two run tables matched on equal ``on`` columns (suffixes _x, _y): the models
    trained on two datasets at the same size and budget."""
    on = list(on)
    missing = [c for c in on if c not in left.columns or c not in right.columns]
    if missing:
        raise ValueError(f"both run tables need the pairing column(s) {missing}")
    pairs = left.merge(right, on=on, suffixes=("_x", "_y"))
    if pairs.empty:
        raise ValueError(f"no runs of the two tables share the same {on}")
    return pairs


def train_to_train(
    x_runs: pd.DataFrame,
    y_runs: pd.DataFrame,
    *,
    x: str = "loss",
    y: str | None = None,
    on=("N", "D"),
    E_x=None,
    E_y=None,
    objective=None,
) -> Law:
    """Train-to-train: models trained on dataset x and dataset y, paired by equal ``on`` (size
    and budget); x-loss of the first against y-loss of the second (same column by default)."""
    return _paired_models(x_runs, y_runs, x, y, on, E_x, E_y, objective, "train_to_train")


def train_to_test(runs: pd.DataFrame, *, x: str, y: str, E_x=None, E_y=None, objective=None) -> Law:
    """Train-to-test: each model's own validation loss ``x`` against a test loss ``y``."""
    for column in (x, y):
        if column not in runs.columns:
            raise ValueError(f"no column {column!r} in the runs table")
    return fit_loss_to_loss(
        runs[x].to_numpy(float),
        runs[y].to_numpy(float),
        E_x=E_x,
        E_y=E_y,
        objective=objective,
        metadata={"setting": "train_to_test", "x": x, "y": y, "n_pairs": len(runs)},
    )


def test_to_test(
    x_runs: pd.DataFrame,
    y_runs: pd.DataFrame,
    *,
    x: str,
    y: str | None = None,
    on=("N", "D"),
    E_x=None,
    E_y=None,
    objective=None,
) -> Law:
    """Test-to-test: a test loss of models trained on dataset x against the same test loss (or
    ``y``) of models trained on dataset y, paired by equal ``on`` as in train-to-train ("the
    test losses of two models trained on two separate train datasets", Brandfonbrener et al.
    2024). E's: those of each dataset's fit of that test loss."""
    return _paired_models(x_runs, y_runs, x, y, on, E_x, E_y, objective, "test_to_test")


test_to_test.__test__ = False  # a workflow, not a pytest test


def _paired_models(x_runs, y_runs, x, y, on, E_x, E_y, objective, setting) -> Law:
    pairs = pair_runs(x_runs, y_runs, on)
    y = x if y is None else y
    for column, runs in ((x, x_runs), (y, y_runs)):
        if column not in runs.columns:
            raise ValueError(f"no column {column!r} in the runs table")
    meta = {"setting": setting, "x": x, "y": y, "paired_on": list(on), "n_pairs": len(pairs)}
    x_values = pairs[f"{x}_x" if f"{x}_x" in pairs else x].to_numpy(float)
    y_values = pairs[f"{y}_y" if f"{y}_y" in pairs else y].to_numpy(float)
    return fit_loss_to_loss(
        x_values, y_values, E_x=E_x, E_y=E_y, objective=objective, metadata=meta
    )


def translate_law(law: Law, loss_to_loss: Law, *, rtol: float = 1e-6) -> Law:
    """The Kaplan law of dataset y implied by dataset x's law and the x -> y loss-to-loss law.

    With E_x equal to the law's E, K ((A/N)^(alpha/beta) + B/D)^(kappa beta) + E_y is again a
    Kaplan law: A' = A K^(1/(kappa alpha)), B' = B K^(1/(kappa beta)), alpha' = kappa alpha,
    beta' = kappa beta, E' = E_y (the loss-to-loss paper's translation). Exact for the Kaplan
    form only: a sum of two powers raised to kappa is not a sum of powers.
    """
    if law.form != "kaplan" or loss_to_loss.form != "loss_to_loss":
        raise ValueError(
            "translate_law takes a kaplan law and a loss_to_loss law, got "
            f"{law.form!r} and {loss_to_loss.form!r}"
        )
    p, q = law.params, loss_to_loss.params
    if not np.isclose(q["E_x"], p["E"], rtol=rtol, atol=0.0):
        warnings.warn(
            f"translate_law: E_x={q['E_x']:.6g} differs from the law's E={p['E']:.6g}; the "
            "translation is exact only when they are equal",
            stacklevel=2,
        )
    k, kappa = q["K"], q["kappa"]
    params = {
        "A": p["A"] * k ** (1.0 / (kappa * p["alpha"])),
        "B": p["B"] * k ** (1.0 / (kappa * p["beta"])),
        "E": q["E_y"],
        "alpha": kappa * p["alpha"],
        "beta": kappa * p["beta"],
    }
    return Law(
        form="kaplan",
        params=params,
        objective=law.objective,
        message="translated from a fitted law through a loss-to-loss law, not fitted",
        metadata={"translated_from": dict(p), "loss_to_loss": dict(q)},
    )


# --- the OLMo-ladder two-step chain ------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TwoStepLaw:
    """(N, D) -> task loss -> accuracy (Bhagia et al. 2024): ``step1`` a law of N and D (task
    loss in bits per byte), ``step2`` a law of the task loss L (accuracy, sigmoid)."""

    step1: Law
    step2: Law

    def predict(self, **inputs) -> np.ndarray:
        return self.step2.predict(L=self.step1.predict(**inputs))

    def predict_interval(self, level: float = 0.9, **inputs) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval with both steps' bootstrap samples propagated together (sample i
        of step 1 through sample i of step 2; a step without samples uses its fit)."""
        _check_level(level)
        if self.step1.samples is None and self.step2.samples is None:
            raise ValueError("neither step has bootstrap samples; run analysis.bootstrap on them")
        loss = (
            self.step1.predict_samples(**inputs)
            if self.step1.samples is not None
            else self.step1.predict(**inputs)[None]
        )
        count = max(len(loss), 1 if self.step2.samples is None else len(self.step2.samples))
        spec2 = self.step2.form_spec
        accuracy = []
        for i in range(count):
            params = self.step2.params
            if self.step2.samples is not None:
                sample = self.step2.samples[i % len(self.step2.samples)]
                params = dict(zip(spec2.params, sample, strict=True))
            accuracy.append(spec2.predict(params, {"L": np.ravel(loss[i % len(loss)])}))
        shape = np.shape(loss[0])
        tail = (1.0 - level) / 2.0
        lower, upper = np.nanquantile(np.array(accuracy), [tail, 1.0 - tail], axis=0)
        return lower.reshape(shape)[()], upper.reshape(shape)[()]  # a scalar for one point, as Law

    def save_pretrained(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.step1.save_pretrained(path / "step1")
        self.step2.save_pretrained(path / "step2")
        (path / "two_step.json").write_text(json.dumps({"l2l_two_step_law": 1}) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> TwoStepLaw:
        path = Path(path)
        if not (path / "two_step.json").exists():
            raise ValueError(f"{path} is not a saved two-step law (no two_step.json)")
        return cls(load_law(path / "step1"), load_law(path / "step2"))


def fit_two_step(
    inputs: dict,
    task_loss,
    step2_loss,
    accuracy,
    *,
    step1_form: str = "chinchilla",
    step1_objective: str | Objective | None = None,
    step2_bounds: dict | None = None,
    step2_start: dict | None = None,
) -> TwoStepLaw:
    """Fit the chain: step 1, ``step1_form`` of ``inputs`` (N, D) to the task loss with the
    summed Huber objective on log residuals (OLMo-ladder); step 2, a sigmoid of the task loss
    ``step2_loss`` to ``accuracy`` by least squares (typically all intermediate checkpoints).
    ``step2_bounds``/``step2_start`` reproduce OLMo-ladder's curve_fit setup when given."""
    step1 = fit_law(
        step1_form,
        inputs,
        task_loss,
        objective=huber_log(reduction="sum") if step1_objective is None else step1_objective,
    )
    step2 = fit_law(
        "sigmoid",
        {"L": step2_loss},
        accuracy,
        objective="least_squares",
        bounds=step2_bounds,
        start=step2_start,
    )
    return TwoStepLaw(step1, step2)
