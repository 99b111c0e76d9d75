"""What a study predicts of its target runs (``Quantity``: a corpus' held-out loss from (N, D), a
translation between corpora, a test loss), the results-table columns it reads, and the row of
``predictions.csv`` that every method writes. Below ``l2l.fits`` (which fits them),
``l2l.paper_laws`` and ``l2l.methods`` (which predict them) and ``l2l.decisions`` (which ranks
corpora on them), so that none of those imports another to share these."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

PREDICTION_COLUMNS = ("run", "dataset", "quantity", "kind", "law", "method", "choice", "given",
                      "prediction", "lower", "upper", "actual", "relative_error", "covered",
                      "interval")


def loss_column(corpus: str) -> str:
    """The results-table metric of the held-out loss on ``corpus`` (evaluation's name)."""
    from evaluation.losses import loss_metric_names

    return loss_metric_names(corpus)["ce"]


def task_column(task: str) -> str:
    """The results-table metric of a downstream task's test loss (evaluation's name)."""
    from evaluation.tasks import test_loss_metric

    return test_loss_metric(task)


@dataclass
class Quantity:
    """One thing the study predicts of its target runs, and the tables it is fitted on."""

    kind: str
    """``single corpus``, ``train-to-train`` or ``train-to-test``."""
    corpus: str
    """The corpus the predicted runs were trained on."""
    column: str
    """The predicted metric."""
    name: str
    """The law's name (``laws/<name>/``, figures)."""
    fit: pd.DataFrame
    """Grid runs: run, dataset, N, D, C, M, ``actual`` (the metric), ``actual_x`` (the given loss)."""
    targets: pd.DataFrame
    """Target runs, the same columns (``actual`` NaN where not measured)."""
    source: str | None = None
    """Train-to-train: the corpus whose runs give the x loss."""
    given: str = "N, D"
    """What the prediction is made from, in words."""


def prediction_row(quantity: Quantity, target: dict, method: str, choice: str, law: str,
                   point, lower, upper, note: str) -> dict:
    """One row of ``predictions.csv``: a target run's prediction by one method, its interval
    and, where measured, the actual value (relative error = predicted / actual - 1)."""
    actual = float(target["actual"]) if np.isfinite(target.get("actual", np.nan)) else math.nan
    point, lower, upper = float(point), float(lower), float(upper)
    given = quantity.given
    if "actual_x" in target and np.isfinite(target["actual_x"]) and quantity.source:
        given = f"{quantity.source} loss {target['actual_x']:.4f}"
    elif "actual_x" in target and np.isfinite(target["actual_x"]):
        given = f"{quantity.corpus} loss {target['actual_x']:.4f}"
    return {"run": target["run"], "dataset": quantity.corpus, "quantity": quantity.column,
            "kind": quantity.kind, "law": law, "method": method, "choice": choice,
            "given": given, "prediction": point, "lower": lower, "upper": upper,
            "actual": actual,
            "relative_error": (point - actual) / actual if np.isfinite(actual) else math.nan,
            "covered": bool(lower <= actual <= upper) if np.isfinite(actual) else None,
            "interval": note}


def quiet(function, *args, caught: list[str], label: str, **kwargs):
    """``function(*args, **kwargs)`` with its warnings collected into ``caught`` as text."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        value = function(*args, **kwargs)
    caught += [f"{label}: {w.message}" for w in seen]
    return value
