"""``l2l fit`` and ``l2l predict``: the laws of a study, fitted on its grid, and what they say of
its target runs, beside what those runs measured.

Three kinds of predicted quantity (``Quantity``), each first by the method of the paper it
comes from (method ``paper``):

- single corpus (Hoffmann et al. 2022, as fitted by Brandfonbrener et al.): the Chinchilla form
  ``L = E + A / N^alpha + B / D^beta`` of each corpus' validation loss over (N, D), Huber on log
  residuals, bootstrapped over runs;
- train-to-train (Brandfonbrener et al. 2024): ``L_y = K (L_x - E_x)^kappa + E_y`` between the
  validation losses of models trained on two corpora at the same (N, D), E's from the
  single-corpus fits, kappa and K by OLS in log space;
- train-to-test: the same form between a model's own validation loss and a test loss (another
  corpus' validation set, a downstream task's test loss), E_y from a Chinchilla fit of that test
  loss.

A loss-to-loss prediction of a target takes the target's *measured* x loss as given, as the
paper uses it: it predicts the loss on y from a run on x. The paper rows' 90% intervals combine
bootstrap parameter draws with the fit's residuals (``Law.predict_interval``); they hold the
fit's noise only. Then the methods of ``l2l.methods``: ``calibrated``, ``selected`` and
``multi_source``, whose intervals are sized by nested backtests inside the grid.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from l2l.layout import DECISIONS, LAWS_DIR, PREDICTIONS
from l2l.quantities import (
    PREDICTION_COLUMNS,
    Quantity,
    loss_column,
    prediction_row,
    task_column,
)

METHODS = ("selected", "paper", "calibrated", "multi_source")  # the report's order


@dataclass
class StudyFits:
    laws: dict = field(default_factory=dict)
    """name -> Law (the paper's method)"""
    inputs: dict = field(default_factory=dict)
    """name -> (inputs dict, target array, x label, y label): the data each law was fitted on"""
    drawn: list[str] = field(default_factory=list)
    """The laws that predict targets (the report draws these; the rest give E's)."""
    predictions: pd.DataFrame | None = None
    selection: dict = field(default_factory=dict)
    """kind -> the nested backtests' scores of every candidate (``select_predictor``)."""
    decisions: pd.DataFrame | None = None
    """Which corpus wins each comparable metric at the targets, with odds (``l2l.decisions``)."""
    decision_selection: pd.DataFrame | None = None
    missing: list[str] = field(default_factory=list)
    """What could not be fitted or predicted, in words."""
    warnings: list[str] = field(default_factory=list)


def _table(rows: pd.DataFrame, y: str, x: str | None = None) -> pd.DataFrame:
    """A fit table: the runs' coordinates, ``actual`` = y, ``actual_x`` = x (when given)."""
    table = rows[["run", "dataset", "N", "D", "C"]].assign(
        M=rows["D"] / rows["N"], actual=rows[y] if y in rows else np.nan)
    if x is not None:
        table["actual_x"] = rows[x] if x in rows else np.nan
    return table.reset_index(drop=True)


def quantities_of(results: pd.DataFrame, labels: list[str], targets: list[str], tasks: list[str],
                  missing: list[str]) -> list[Quantity]:
    """Every quantity the study predicts, with its grid and target tables."""
    from analysis.workflows import pair_runs

    grid = results[~results.run.isin(targets)]
    aim = results[results.run.isin(targets)]
    found = []
    for corpus in labels:
        own = loss_column(corpus)
        mine, theirs = grid[grid.dataset == corpus], aim[aim.dataset == corpus]
        found.append(Quantity("single corpus", corpus, own, f"chinchilla-{corpus}",
                              _table(mine, own), _table(theirs, own)))
        tests = [loss_column(o) for o in labels if o != corpus] + [task_column(t) for t in tasks]
        for column in tests:
            found.append(Quantity(
                "train-to-test", corpus, column, f"train-to-test-{corpus}-{_slug(column)}",
                _table(mine, column, own), _table(theirs, column, own),
                given=f"its own {corpus} loss"))
    for a in labels:
        for b in labels:
            if a == b:
                continue
            xa, yb = grid[grid.dataset == a], grid[grid.dataset == b]
            pairs = _pairs(pair_runs, xa, yb, loss_column(a), loss_column(b), missing, a, b)
            aims = _pairs(pair_runs, aim[aim.dataset == a], aim[aim.dataset == b],
                          loss_column(a), loss_column(b), None, a, b)
            if pairs is None:
                continue
            found.append(Quantity("train-to-train", b, loss_column(b),
                                  f"train-to-train-{a}-to-{b}", pairs, aims, source=a,
                                  given=f"the {a} run's measured loss at the same (N, D)"))
    return [q for q in found if _usable(q, missing)]


def _pairs(pair_runs, xa, yb, x, y, missing, a, b) -> pd.DataFrame | None:
    """Runs of corpus b (their y loss) paired with those of corpus a at equal (N, D) (x loss)."""
    try:
        pairs = pair_runs(xa[["run", "dataset", "N", "D", "C", x]],
                          yb[["run", "dataset", "N", "D", "C", y]])
    except ValueError as exc:
        if missing is not None:
            missing.append(f"train-to-train {a} -> {b}: {exc}")
        return None if missing is not None else pd.DataFrame(
            columns=["run", "dataset", "N", "D", "C", "M", "actual", "actual_x"])
    return pd.DataFrame({"run": pairs["run_y"], "dataset": b, "N": pairs["N"], "D": pairs["D"],
                         "C": pairs["C_y"], "M": pairs["D"] / pairs["N"],
                         "actual": pairs[f"{y}_y" if f"{y}_y" in pairs else y],
                         "actual_x": pairs[f"{x}_x" if f"{x}_x" in pairs else x]}
                        ).reset_index(drop=True)


def _usable(q: Quantity, missing: list[str]) -> bool:
    """Grid rows with every value a law needs; a metric nobody measured is reported."""
    needed = ["actual"] + (["actual_x"] if "actual_x" in q.fit else [])
    finite = np.isfinite(q.fit[needed].astype(float).to_numpy()).all(axis=1)
    dropped = int((~finite).sum())
    if dropped:
        missing.append(f"{q.name}: {dropped} grid run(s) without {q.column}"
                       + (" or the given loss" if len(needed) > 1 else "") + ": left out")
    q.fit = q.fit[finite].reset_index(drop=True)
    if len(q.fit) < 3:
        missing.append(f"{q.name}: {len(q.fit)} grid runs with {q.column}: too few to fit")
        return False
    return True


def check_grid_schedules(study_dir: str | Path, results: pd.DataFrame, targets: list[str],
                         spec) -> None:
    """Refuse (ValueError) a grid whose runs were trained with different learning-rate schedules
    (cosine runs beside WSD branches) unless the spec asks for it (``prediction.mixed_schedules``);
    the targets are never fitted, so theirs may differ."""
    from training.branches import check_one_schedule
    from training.study import run_schedule

    grid = sorted(set(results.run) - set(targets))
    check_one_schedule({run: run_schedule(Path(study_dir) / run) for run in grid},
                       allow_mixed=spec.prediction.mixed_schedules)


def fit_study(results: pd.DataFrame, spec, targets: list[str], *, progress: bool = True
              ) -> StudyFits:  # fmt: skip
    """Fit every law of the study on its grid (all runs but ``targets``) and predict the
    targets with every method. Missing points are reported in ``StudyFits.missing``, never
    filled in."""
    from l2l.methods import new_methods
    from l2l.paper_laws import paper_predictions

    labels = list(spec.corpora)
    fits = StudyFits()
    for name in targets:
        if name not in set(results.run):
            fits.missing.append(f"target {name}: no results (not trained or not evaluated)")
    quantities = quantities_of(results, labels, targets, list(spec.evaluation.tasks),
                               fits.missing)
    level = spec.prediction.level
    rows = paper_predictions(quantities, fits, spec.prediction.bootstrap, level, progress)
    new, fits.selection = new_methods(quantities, level, bool(spec.grid.budgets), fits.missing)
    for quantity, result in new:
        for i, target in enumerate(quantity.targets.to_dict("records")):
            rows.append(prediction_row(quantity, target, result.method, result.choice,
                                       quantity.name, result.point[i], result.lower[i],
                                       result.upper[i], result.note))
    from l2l.decisions import study_decisions

    fits.decisions, fits.decision_selection = study_decisions(
        results, spec, targets, progress=progress, missing=fits.missing)
    frame = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    order = {m: i for i, m in enumerate(METHODS)}
    fits.predictions = frame.assign(_o=frame["method"].map(order)).sort_values(
        ["run", "kind", "quantity", "given", "_o"], kind="stable").drop(columns="_o").reset_index(
        drop=True)
    return fits


def _slug(column: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in column).strip("-")


def save_fits(fits: StudyFits, study_dir: str | Path) -> list[Path]:
    """Each law under ``STUDY/laws/<name>/`` (``Law.save_pretrained``) and the predictions as
    ``STUDY/predictions.csv``. The laws folder is replaced as a whole, after the new one is
    complete: a law of an earlier fit that this one could not make does not stay behind."""
    from analysis.atomic import write_atomic

    study = Path(study_dir)
    fresh = Path(tempfile.mkdtemp(prefix=f".{LAWS_DIR}-new-", dir=study))
    try:
        for name, law in fits.laws.items():
            law.save_pretrained(fresh / name)
        laws, old = study / LAWS_DIR, study / f".{LAWS_DIR}-old"
        if old.exists():
            shutil.rmtree(old)
        if laws.exists():
            laws.rename(old)
        fresh.rename(laws)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if fresh.exists():
            shutil.rmtree(fresh, ignore_errors=True)
    write_atomic(study / PREDICTIONS, fits.predictions.to_csv(index=False))
    written = [study / LAWS_DIR / name for name in fits.laws] + [study / PREDICTIONS]
    if fits.decisions is not None:
        write_atomic(study / DECISIONS, fits.decisions.to_csv(index=False))
        written.append(study / DECISIONS)
    return written
