"""A study's data decisions with odds, and its compute-optimal allocations.

``decisions.csv``: for every target configuration, every metric that compares across corpora
(each corpus' held-out loss, measured on every model; each task's test loss; never a model's
loss on its own corpus against another's) and every pair of corpora, the probability that a
model trained on ``data_a`` has the lower value than one trained on ``data_b``, by each method of
``analysis.decide`` (``single_scale``: the sign at the grid's largest budget, the baseline;
the calibrated methods and the ``selected`` one), the predicted values and, where the target
runs were trained, what they measured.

``allocation(...)``: at a budget C, the N*, D* and loss of each corpus' law by Chinchilla's
approaches 2 (iso-FLOP parabolas) and 3 (the parametric fit), with intervals
(``analysis.allocation``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

COLUMNS = ("target", "metric", "data_a", "data_b", "method", "p_a_better", "predicted_a",
           "predicted_b", "actual_a", "actual_b")
EXTRA_COLUMNS = ("gap", "gap_lower", "gap_upper", "regret")
"""After the contract's columns: the predicted relative gap a / b - 1 with its interval, and the
expected regret of choosing the favourite (the metric given up if it is wrong)."""
ALLOCATION_COLUMNS = ("data", "approach", "C", "N", "N_lower", "N_upper", "D", "D_lower",
                      "D_upper", "loss", "loss_lower", "loss_upper")


def comparable_metrics(results: pd.DataFrame, corpora: list[str], tasks: list[str]) -> list[str]:
    """The metrics measured on every model whatever it was trained on: the held-out losses on
    each corpus' validation set and the downstream test losses (those the table holds)."""
    from l2l.quantities import loss_column, task_column

    wanted = [loss_column(c) for c in corpora] + [task_column(t) for t in tasks]
    return [m for m in wanted if m in results.columns and results[m].notna().any()]


def study_decisions(results: pd.DataFrame, spec, targets: list[str], *, progress: bool = False,
                    missing: list[str]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The decision table (``COLUMNS``) of a study and the selection's scores; with fewer than
    two corpora or no comparable metric, an empty table and the reason in ``missing``."""
    from analysis.decide_methods import attach_actuals, decide

    grid = results[~results.run.isin(targets)]
    corpora = [c for c in spec.corpora if (grid.dataset == c).any()]  # with grid runs evaluated
    metrics = comparable_metrics(results, corpora, list(spec.evaluation.tasks))
    empty = pd.DataFrame(columns=list(COLUMNS) + list(EXTRA_COLUMNS))
    if len(corpora) < 2 or not metrics:
        missing.append("decisions: a decision compares two corpora on a metric both are "
                       "measured on; this study has " + (
                           f"{len(corpora)} corpus with evaluated grid runs" if len(corpora) < 2
                           else "no such metric"))
        return empty, None
    aims = results[results.run.isin(targets)]
    configs = aims[["N", "D", "C"]].drop_duplicates().sort_values("C").reset_index(drop=True)
    if configs.empty:  # no target evaluated yet: decide at the spec's targets as planned
        from l2l.plan import plan_runs

        runs, names = plan_runs(spec)
        configs = pd.DataFrame([{"N": r.N, "D": r.D, "C": r.C} for r in runs if r.run in names]
                               ).drop_duplicates().reset_index(drop=True)
    configs["target"] = [f"N={r.N:.3g}, D={r.D:.3g}, C={r.C:.3g}" for r in configs.itertuples()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            made = decide(grid[["dataset", "N", "D", "C", *metrics]], metrics, configs,
                          corpora=corpora, level=spec.prediction.level, progress=progress)
    except ValueError as exc:
        missing.append(f"decisions: {exc}")
        return empty, None
    table = attach_actuals(made.table, results[["dataset", "N", "D", *metrics]], configs)
    return table[list(COLUMNS) + list(EXTRA_COLUMNS)], made.selection


def decision_lines(table: pd.DataFrame, corpora: list[str], label) -> list[str]:
    """The report's opening: per target and metric, the corpora ranked by the selected method
    with the probability that each beats the next, and what single-scale ranking says."""
    from analysis.decide import rank_corpora

    if table.empty:
        return []
    lines = []
    for method, title in (("selected", "selected method"), ("single_scale", "single-scale")):
        mine = table[table.method == method]
        if mine.empty:
            continue
        ranking = rank_corpora(mine.rename(columns={}))
        keys = ["target", "metric"] if "target" in ranking else ["metric"]
        for key, group in ranking.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            target, metric = (None, *key) if len(key) == 1 else key
            order = []
            for row in group.itertuples():
                odds = (f" (p {row.p_beats_next:.2f} of beating {group.data.iloc[row.rank]})"
                        if np.isfinite(row.p_beats_next) and method != "single_scale" else "")
                order.append(f"{row.data}{odds}")
            where = f" at {target}" if target and table.target.nunique() > 1 else ""
            lines.append(f"- {label(metric)}{where}, {title}: " + " > ".join(order))
    return lines


def identified(law) -> bool:
    """Whether a law's parameters are pinned by its data: none at a bound of its fit, none in a
    flat direction of the objective. An optimum N* of a law with an exponent at 0 says nothing."""
    return not any("bound" in w or "not identifiable" in w for w in law.warnings)


def allocation(fits, results: pd.DataFrame, spec, budgets,
               level: float) -> tuple[pd.DataFrame, list[str]]:  # fmt: skip
    """N*, D* and the loss at each budget, per corpus, by approaches 2 and 3 (``ALLOCATION_
    COLUMNS``), and one line for each (corpus, approach) the grid cannot support, saying why:
    approach 2 needs three budgets whose runs bracket their optimum, approach 3 a law whose
    parameters its data pin."""
    from analysis.allocation import isoflop_optimum, parametric_optimum
    from l2l.quantities import loss_column

    frames, left_out = [], []
    for corpus in spec.corpora:
        law = fits.laws.get(f"chinchilla-{corpus}")
        runs = results[results.dataset == corpus]
        column = loss_column(corpus)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if law is None:
                    left_out.append(f"{corpus}, approach 3: no Chinchilla law of its loss was "
                                    "fitted (see the missing laws)")
                elif not identified(law):
                    left_out.append(f"{corpus}, approach 3: the law's data do not pin its "
                                    f"parameters ({'; '.join(law.warnings)}), so its optimum "
                                    "says nothing")
                else:
                    frames.append(parametric_optimum(law, budgets, level).assign(data=corpus))
            except ValueError as exc:  # an optimum that runs off the law's range
                left_out.append(f"{corpus}, approach 3: {exc}")
            try:
                if column not in runs:
                    left_out.append(f"{corpus}, approach 2: no run measured {column}")
                else:
                    frames.append(isoflop_optimum(runs[["N", "C", column]], budgets,
                                                  loss=column, level=level).assign(data=corpus))
            except ValueError as exc:  # fewer than three budgets bracket their optimum
                left_out.append(f"{corpus}, approach 2: {str(exc).removeprefix('approach 2 ')}")
    if not frames:
        return pd.DataFrame(columns=list(ALLOCATION_COLUMNS)), left_out
    return pd.concat(frames, ignore_index=True)[list(ALLOCATION_COLUMNS)], left_out
