"""Downstream task metrics from scored questions: the papers' task losses and accuracies.

For each question the scorer gives every choice's log-likelihood (sum over its tokens, in nats).
As in OLMo's in-loop evaluator (``ICLMetric`` in ``olmo/eval/downstream.py``, ai2-olmo 0.6.0),
each metric is computed **per question and then averaged over questions** (``compute`` returns
``sum(per-document values) / number of documents``); nothing is pooled over tokens or bytes:

- ``ce_loss``: the loss-to-loss paper's test loss, -loglik(correct answer) / its number of
  *tokens*. Upstream OLMo's ``ce_loss`` divides by the answer's *characters* (``cont_str_len``),
  but the paper's fork did not: its released ``eval/downstream_ce_loss/*_test_ce_loss`` values
  (sweep.csv) lie between 2.5 and 5.0 nats on HellaSwag, whose endings are ordinary web-like
  text (the same models' C4 loss is 2.7 to 5.2 nats per token); per character that would be
  about 10 to 20 nats per token. Only the correct answer is scored in OLMo (``ArcEasyCELoss``,
  ``MMLU`` with ``metric_type="ce_loss"``); scoring every choice, as here, gives the same value.
  For Winogrande the correct answer is the shared rest of the sentence after the correct option
  (upstream OLMo has no Winogrande ``ce_loss``; its ``compute`` would take choice 0).
- ``acc``: the choice with the highest log-likelihood is the correct one (first of ties, as
  ``torch.argmax``);
- ``len_norm``: the same with each log-likelihood divided by its answer's length in characters,
  without the separating space (OLMo's ``cont_str_len = len(continuation) - 1``; OLMES's
  ``acc_per_char``, which OLMo maps to ``len_norm``);
- ``bpb``: OLMo-ladder's task loss, -loglik(correct answer) / ln 2 / its UTF-8 bytes, again
  without the separating space (OLMo's ``cont_byte_len = len(continuation[1:].encode())``).

Prompts longer than the model's context are truncated from the left (the issue's rule, and
lm-eval's). OLMo's in-loop datasets truncate at their ``model_ctx_len`` argument instead, 2048
unless the caller passes the model's context (KempnerInstitute/OLMo's
``build_downstream_evaluator`` does not); if the paper's fork kept that default, its 512-token
models read longer prompts whole, past their trained context. By length in characters (over
2000) that concerns about 3% of MMLU humanities questions (professional law) and 0.5% of BoolQ
passages; everything else is far shorter. A question whose *answer* is longer than the context
is still scored (in windows, see ``evaluation.scorer``); rows count such questions in
``n_windowed`` and a warning names them.

These are computed here directly: the ``evaluate`` library's ``accuracy`` would add nothing but a
download (``evaluate.load`` fetches metric scripts from the Hub, which fails offline), and it has
no per-token loss or bits per byte.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .scorer import Loglikelihood, LoglikelihoodScorer
from .task_data import rc_questions, zero_shot_questions
from .tasks import MultipleChoice, TaskSpec, metric_names

logger = logging.getLogger(__name__)

FAMILIES = ("zero_shot", "rc_5shot")


def answer_text(continuation: str) -> str:
    """The answer without the single separating space that precedes it in the continuation."""
    return continuation[1:] if continuation.startswith(" ") else continuation


def score_questions(
    scorer: LoglikelihoodScorer, questions: Sequence[MultipleChoice], desc: str = "scoring"
) -> list[list[Loglikelihood]]:
    """Every choice of every question, one call: choices of a question share a packed row."""
    requests, groups = [], []
    for q, question in enumerate(questions):
        requests.extend(zip(question.contexts, question.continuations, strict=True))
        groups.extend([q] * len(question.continuations))
    flat = scorer.score(requests, groups, desc=desc)
    out, start = [], 0
    for question in questions:
        n = len(question.continuations)
        out.append(flat[start : start + n])
        start += n
    return out


def ranked_metrics(continuations: Sequence[str], gold: int, logliks: Sequence[float]) -> dict:
    """acc, len_norm and bpb of one question from its choices' log-likelihoods (nats)."""
    logliks = np.asarray(logliks, dtype=float)
    chars = np.array([len(answer_text(c)) for c in continuations], dtype=float)
    gold_bytes = len(answer_text(continuations[gold]).encode("utf-8"))
    return {
        # np.argmax takes the first of tied maxima, as torch.argmax in OLMo's ICLMetric does.
        "acc": float(np.argmax(logliks) == gold),
        "len_norm": float(np.argmax(logliks / chars) == gold),
        "bpb": -float(logliks[gold]) / gold_bytes / math.log(2),
    }


def question_metrics(question: MultipleChoice, scores: Sequence[Loglikelihood]) -> dict[str, float]:
    """Per-question values; averaging them over questions gives the task metrics."""
    gold = scores[question.gold]
    metrics = ranked_metrics(question.continuations, question.gold, [s.logprob for s in scores])
    metrics["ce_loss"] = -gold.logprob / gold.n_tokens
    return metrics


def aggregate(questions, scores) -> dict[str, float]:
    """Task metrics: the per-question values averaged over questions."""
    per_question = [question_metrics(q, s) for q, s in zip(questions, scores, strict=True)]
    return {k: float(np.mean([m[k] for m in per_question])) for k in per_question[0]}


def count_windowed(scores: Sequence[Sequence[Loglikelihood]]) -> int:
    """Questions with a choice longer than the model's context (scored in windows)."""
    return sum(any(s.windows > 1 for s in choices) for choices in scores)


@dataclass(frozen=True)
class TaskMetric:
    """One value of the results table, before run columns are attached."""

    metric: str
    value: float
    n: int
    """Number of questions averaged."""
    source: str
    """Where the questions came from (file, ai2-olmo folder or Hub id)."""
    n_windowed: int = 0
    """Questions among ``n`` with an answer longer than the model's context, scored in windows."""


def evaluate_task(
    scorer: LoglikelihoodScorer,
    spec: TaskSpec,
    families: Sequence[str] = FAMILIES,
    data_dir=None,
    allow_hub: bool = True,
    limit: int | None = None,
    skip: set[str] = frozenset(),
) -> Iterator[list[TaskMetric]]:
    """Yield the metrics of one task, one list per (family, split) as soon as it is computed.

    ``limit`` keeps the first questions of each split (for quick looks; the rows say how many).
    Metric names in ``skip`` (already in the results table) are not recomputed when a whole group
    of them is present."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown metric families {sorted(unknown)}; known: {FAMILIES}")
    if limit is not None and limit < 1:  # questions[:0] is none, questions[:-2] all but two
        raise ValueError(f"limit must be at least 1 question, got {limit}")
    names = metric_names(spec)
    if "zero_shot" in families:
        wanted = {m: names[f"test_{m}"] for m in ("ce_loss", "acc", "len_norm")}
        if not set(wanted.values()) <= skip:
            questions, source = zero_shot_questions(spec, data_dir, allow_hub)
            questions = questions[:limit] if limit else questions
            yield _task_metrics(scorer, questions, source, f"{spec.name} 0-shot", wanted)
    if "rc_5shot" in families:
        for split in spec.ladder_splits:
            wanted = {m: names[f"{split}_rc_5shot_{m}"] for m in ("bpb", "acc", "len_norm")}
            if set(wanted.values()) <= skip:
                continue
            questions, source = rc_questions(spec, split, data_dir, allow_hub)
            questions = questions[:limit] if limit else questions
            yield _task_metrics(scorer, questions, source, f"{spec.name} {split} rc 5-shot", wanted)


def _task_metrics(scorer, questions, source: str, desc: str, names: dict[str, str]):
    """Score the questions; one ``TaskMetric`` per entry of ``names`` (metric -> its row name)."""
    scores = score_questions(scorer, questions, desc)
    values = aggregate(questions, scores)
    windowed = count_windowed(scores)
    if windowed:
        logger.warning(
            "%s: %d of %d questions have an answer longer than the model's context of %d "
            "tokens; their answers were scored in windows of %d tokens",
            desc, windowed, len(questions), scorer.max_length, max(1, scorer.max_length // 2),
        )  # fmt: skip
    return [
        TaskMetric(name, values[key], len(questions), source, windowed)
        for key, name in names.items()
    ]
