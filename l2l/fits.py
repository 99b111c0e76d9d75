"""``l2l fit`` and ``l2l predict``: the laws of a study, fitted on its grid, and what they say
of its target runs, beside what those runs measured.

Three kinds of law, each by the method of the paper it comes from:

- single corpus (Hoffmann et al. 2022, as fitted by Brandfonbrener et al.): the Chinchilla form
  ``L = E + A / N^alpha + B / D^beta`` of each corpus' validation loss over (N, D), Huber on log
  residuals, bootstrapped over runs;
- train-to-train (Brandfonbrener et al. 2024): ``L_y = K (L_x - E_x)^kappa + E_y`` between the
  validation losses of models trained on two corpora at the same (N, D), E's from the
  single-corpus fits, kappa and K by OLS in log space;
- train-to-test: the same form between a model's own validation loss and a test loss (the
  other corpus' validation set, a downstream task's test loss), E_y from a Chinchilla fit of
  that test loss.

Every target run gets, from every law that reaches it, a prediction with its 90% prediction
interval (bootstrap parameter draws combined with the fit's residuals, ``Law.predict_interval``).
A loss-to-loss prediction of a target takes the target's *measured* x loss as given, as the
paper uses it: it predicts the loss on y from a run on x.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

LEVEL = 0.9
PREDICTION_COLUMNS = ("run", "dataset", "quantity", "law", "given", "prediction", "lower",
                      "upper", "actual", "relative_error", "covered")


def loss_column(corpus: str) -> str:
    """The results-table metric of the held-out loss on ``corpus`` (evaluation's name)."""
    from evaluation.losses import loss_metric_names

    return loss_metric_names(corpus)["ce"]


def task_column(task: str) -> str:
    """The results-table metric of a downstream task's test loss (evaluation's name)."""
    from evaluation.tasks import test_loss_metric

    return test_loss_metric(task)


@dataclass
class StudyFits:
    laws: dict = field(default_factory=dict)
    """name -> Law"""
    inputs: dict = field(default_factory=dict)
    """name -> (inputs dict, target array, x label, y label): the data each law was fitted on"""
    drawn: list[str] = field(default_factory=list)
    """The laws that predict targets (the report draws these; the rest give E's)."""
    predictions: pd.DataFrame | None = None
    missing: list[str] = field(default_factory=list)
    """What could not be fitted or predicted, in words."""
    warnings: list[str] = field(default_factory=list)


def fit_study(results: pd.DataFrame, corpora: list[str], targets: list[str], tasks: list[str],
              *, n_resamples: int = 200, progress: bool = True) -> StudyFits:
    """Fit every law of the study on its grid (all runs but ``targets``) and predict the
    targets. Missing points are reported in ``StudyFits.missing``, never filled in."""
    from tqdm.auto import tqdm

    from analysis import bootstrap, fit_law
    from analysis.workflows import fit_loss_to_loss, pair_runs
    from training.corpora import corpus_label

    labels = [corpus_label(c) for c in corpora]
    fits = StudyFits()
    grid = results[~results.run.isin(targets)]
    target_rows = results[results.run.isin(targets)]
    for name in targets:
        if name not in set(results.run):
            fits.missing.append(f"target {name}: no results (not trained or not evaluated)")
    chinchilla: dict[tuple[str, str], object] = {}
    predictions: list[dict] = []
    jobs = [(c, loss_column(c)) for c in labels]
    jobs += [(c, loss_column(o)) for c in labels for o in labels if o != c]
    jobs += [(c, task_column(t)) for c in labels for t in tasks]
    # Chinchilla fits, then train-to-train pairs, then train-to-test laws (one per test loss).
    total = len(jobs) + len(labels) * (len(labels) - 1) + (len(jobs) - len(labels))
    bar = tqdm(total=total, desc="fits", disable=not progress)

    def fit_chinchilla(corpus: str, column: str):
        key = (corpus, column)
        if key in chinchilla:
            return chinchilla[key]
        rows = grid[grid.dataset == corpus]
        rows = rows[np.isfinite(rows[column])] if column in rows else rows.iloc[0:0]
        law = None
        if len(rows) < 6:
            fits.missing.append(f"chinchilla {column} of {corpus}: {len(rows)} grid runs with "
                                "that metric, 6 at least are needed for its 5 parameters")
        else:
            inputs = {"N": rows.N.to_numpy(float), "D": rows.D.to_numpy(float)}
            y = rows[column].to_numpy(float)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                law = fit_law("chinchilla", inputs, y)
                law = bootstrap(law, inputs, y, n_resamples=n_resamples)
            fits.warnings += [f"chinchilla {column} of {corpus}: {w.message}" for w in caught]
            own = column == loss_column(corpus)
            name = f"chinchilla-{corpus}" if own else f"chinchilla-{corpus}-{_slug(column)}"
            if own:
                fits.drawn.append(name)
            fits.laws[name] = law
            fits.inputs[name] = (inputs, y, "C = 6ND", column)
        chinchilla[key] = law
        bar.update(1)
        return law

    # Single corpus: each corpus' own validation loss over (N, D).
    for corpus in labels:
        law = fit_chinchilla(corpus, loss_column(corpus))
        if law is None:
            continue
        for _, row in target_rows[target_rows.dataset == corpus].iterrows():
            predict_one(predictions, law, f"chinchilla-{corpus}", loss_column(corpus), corpus,
                        target_rows[target_rows.run == row.run], "N, D", N=row.N, D=row.D)
    for corpus, column in jobs[len(labels):]:
        fit_chinchilla(corpus, column)  # the E_y of the train-to-test laws

    def loss_to_loss(name, x, y, E_x, E_y, setting, meta):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            law = fit_loss_to_loss(x, y, E_x=E_x, E_y=E_y, metadata={"setting": setting, **meta})
            law = bootstrap(law, {"L": x}, y, n_resamples=n_resamples)
        fits.warnings += [f"{name}: {w.message}" for w in caught]
        fits.laws[name] = law
        fits.drawn.append(name)
        fits.inputs[name] = ({"L": x}, y, meta["x"], meta["y"])
        bar.update(1)
        return law

    # Train-to-train: source corpus a, target corpus b, paired at equal (N, D).
    for a in labels:
        for b in labels:
            if a == b:
                continue
            E_a, E_b = chinchilla.get((a, loss_column(a))), chinchilla.get((b, loss_column(b)))
            if E_a is None or E_b is None:
                fits.missing.append(f"train-to-train {a} -> {b}: a single-corpus fit is missing")
                continue
            xa, yb = grid[grid.dataset == a], grid[grid.dataset == b]
            try:
                pairs = pair_runs(xa[["N", "D", loss_column(a)]].dropna(),
                                  yb[["N", "D", loss_column(b)]].dropna())
            except ValueError as exc:
                fits.missing.append(f"train-to-train {a} -> {b}: {exc}")
                continue
            name = f"train-to-train-{a}-to-{b}"
            law = loss_to_loss(name, pairs[loss_column(a)].to_numpy(float),
                               pairs[loss_column(b)].to_numpy(float), E_a, E_b, "train_to_train",
                               {"x": f"{a} trained, {a} loss", "y": f"{b} trained, {b} loss"})
            # Predict each target of b from the target of a at the same (N, D), measured.
            for _, row in target_rows[target_rows.dataset == b].iterrows():
                source = target_rows[(target_rows.dataset == a) & (target_rows.N == row.N)
                                     & (target_rows.D == row.D)]
                if source.empty or not np.isfinite(source.iloc[0][loss_column(a)]):
                    fits.missing.append(f"{name} at {row.run}: no measured {a} target")
                    continue
                given = float(source.iloc[0][loss_column(a)])
                single = target_rows[target_rows.run == row.run]
                predict_one(predictions, law, name, loss_column(b), b, single,
                            f"{a} loss {given:.4f}", L=given)

    # Train-to-test: a model's own validation loss against its test losses.
    for a in labels:
        E_x = chinchilla.get((a, loss_column(a)))
        for column in [loss_column(o) for o in labels if o != a] + [task_column(t) for t in tasks]:
            E_y = chinchilla.get((a, column))
            if E_x is None or E_y is None:
                fits.missing.append(f"train-to-test {a}: {column}: a Chinchilla fit is missing")
                continue
            rows = grid[grid.dataset == a][[loss_column(a), column]].dropna()
            name = f"train-to-test-{a}-{_slug(column)}"
            law = loss_to_loss(name, rows[loss_column(a)].to_numpy(float),
                               rows[column].to_numpy(float), E_x, E_y, "train_to_test",
                               {"x": f"{a} loss", "y": column})
            for _, row in target_rows[target_rows.dataset == a].iterrows():
                given = float(row[loss_column(a)])
                predict_one(predictions, law, name, column, a,
                            target_rows[target_rows.run == row.run], f"{a} loss {given:.4f}",
                            L=given)
    bar.close()
    fits.predictions = pd.DataFrame(predictions, columns=list(PREDICTION_COLUMNS))
    return fits


def predict_one(predictions: list, law, law_name: str, quantity: str, corpus: str,
                rows: pd.DataFrame, given: str, **at) -> None:
    """Append the prediction of ``law`` at ``at`` for each row (a target run), with its 90%
    prediction interval and, where measured, the actual value."""
    for _, row in rows.iterrows():
        point = float(law.predict(**at))
        lower, upper = law.predict_interval(level=LEVEL, kind="prediction", **at)
        actual = float(row[quantity]) if quantity in row and np.isfinite(row[quantity]) else math.nan
        predictions.append({
            "run": row.run, "dataset": corpus, "quantity": quantity, "law": law_name,
            "given": given, "prediction": point, "lower": float(lower), "upper": float(upper),
            "actual": actual,
            "relative_error": (point - actual) / actual if np.isfinite(actual) else math.nan,
            "covered": bool(lower <= actual <= upper) if np.isfinite(actual) else None})


def _slug(column: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in column).strip("-")


def save_fits(fits: StudyFits, study_dir: str | Path) -> list[Path]:
    """Each law under ``STUDY/laws/<name>/`` (``Law.save_pretrained``) and the predictions as
    ``STUDY/predictions.csv``."""
    from analysis.atomic import write_atomic

    study = Path(study_dir)
    written = []
    for name, law in fits.laws.items():
        folder = study / "laws" / name
        law.save_pretrained(folder)
        written.append(folder)
    write_atomic(study / "predictions.csv", fits.predictions.to_csv(index=False))
    written.append(study / "predictions.csv")
    return written
