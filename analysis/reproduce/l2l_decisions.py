"""Which of the loss-to-loss paper's six corpora gives the better model at 1e21 FLOPs, with
odds (item 7 of ``analysis.reproduce.l2l``): ``decisions_1e21.csv``.

For every loss column of the sweep that compares models trained on different corpora on the
same data (every ``eval/`` loss: the held-out losses on the shared validation sets, the
downstream tasks' test losses and their context losses; never ``val_loss``, each model on its
own corpus), and every pair of the six corpora, the probability that the paper's depth-40 model
at 1e21 FLOPs (``l2l_paper.largest_run``, absent from the released sweep) has the lower loss
when trained on ``data_a`` than when trained on ``data_b``, by each method of
``analysis.decide_methods``: ``single_scale`` (the ranking of the depth-matched runs at the
sweep's largest budget, p 0 or 1), the calibrated methods, and ``selected`` (the one whose
decisions, made from the runs up to each of the two budgets below the largest, best predicted
the largest: Brier score). ``max_flops`` restricts every fit to the runs of at most that many
FLOPs, so that the same output can be backtested from a smaller grid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.decide import rank_corpora
from analysis.decide_methods import NESTED_MIN_LEVELS, SELECTION_COLUMNS, Decisions, decide
from analysis.reproduce.l2l_paper import LARGEST_C, largest_run
from analysis.testbeds.l2l import CORPORA

DECISIONS_COLUMNS = ("metric", "data_a", "data_b", "method", "p_a_better")
DECISION_DETAIL_COLUMNS = (*DECISIONS_COLUMNS, "predicted_a", "predicted_b", "gap", "gap_lower",
                           "gap_upper", "regret")  # fmt: skip
DECISION_SELECTION_COLUMNS = SELECTION_COLUMNS
# the budgets the decisions need: a nested decision below the largest budget, fitted on at least
# NESTED_MIN_LEVELS + 1 budgets (one nested cut of its own to calibrate on)
MIN_BUDGETS = NESTED_MIN_LEVELS + 2


def decision_metrics(tidy: pd.DataFrame) -> list[str]:
    """Every ``eval/`` loss column of the sweep (names ending in "loss"; the perplexities repeat
    the cross-entropies), in sorted order."""
    return sorted(m for m in tidy["metric"].unique()
                  if m.startswith("eval/") and m.lower().endswith("loss"))  # fmt: skip


def decisions_at_1e21(runs: pd.DataFrame, metrics: list[str], progress: bool = False) -> Decisions:
    """``decide_methods.decide`` for the depth-40 1e21 run on the six corpora from ``runs``
    (the sweep, one row per run, the ``metrics`` as columns)."""
    if runs["C"].nunique() < MIN_BUDGETS:
        raise ValueError(f"the decisions need at least {MIN_BUDGETS} budgets (a nested "
                         f"decision below the largest); the runs have {runs['C'].nunique()}")  # fmt: skip
    target = largest_run().assign(target=f"depth-40 at C = {LARGEST_C:.0e}")
    return decide(runs, metrics, target, corpora=[c for c in CORPORA if c in set(runs["dataset"])],
                  progress=progress)  # fmt: skip


def summary_lines(decisions: Decisions, metrics: list[str]) -> list[str]:
    """The printout: the selection and, per validation-set loss, the selected ranking."""
    scores = decisions.selection
    chosen = scores[scores["chosen"]].iloc[0]
    lines = [f"decisions at C = {LARGEST_C:.0e} (depth 40): selected method {chosen['method']} "
             f"(nested decisions: Brier {chosen['brier']:.4f}, accuracy {chosen['accuracy']:.1%}"
             f", spread scale {chosen['spread_scale']:.2f}; candidates: " + ", ".join(
                 f"{r.method} {r.brier:.4f}" for r in scores.itertuples()) + ")"]  # fmt: skip
    selected = decisions.table[decisions.table["method"] == "selected"]
    ranking = rank_corpora(selected)
    for metric in (m for m in metrics if m.endswith("_val/CrossEntropyLoss")):
        mine = ranking[ranking["metric"] == metric]
        chain = " > ".join(f"{r.data}" + (f" ({r.p_beats_next:.2f})" if np.isfinite(r.p_beats_next)
                                          else "") for r in mine.itertuples())  # fmt: skip
        lines.append(f"  {metric.removeprefix('eval/')}: {chain}")
    lines.append("  (best first; in parentheses P(it beats the next one))")
    return lines
