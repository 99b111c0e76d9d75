"""Planning the scorer's work: requests merged into token tries, tries packed into rows and batches.

Requests that share a beginning are merged into a **token trie** (the choices of one question share
its context, and often their first words; Winogrande's partial contexts share the sentence up to
the blank), laid out depth-first in one row: every token attends to its ancestors only
(``ancestor_mask``) and its position id is its depth, so each distinct prefix goes through the
model once instead of once per request. A long prompt shared by more requests than one row holds
(a few-shot task's examples) is cut off as a **cached prefix**: it goes through the model once and
its keys and values serve every row of the tries below it (``LoglikelihoodScorer._prefix_cache``).
Tries are then packed into rows and rows into batches under a token budget (``pack_batches``), so
that padding stays small.

Everything here is planning on token ids (lists and a mask); the model is run by
``evaluation.scorer``, which checks on a probe that these layouts reproduce plain forward passes.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

SHARED_PROMPT_TOKENS = 32
"""Groups whose sequences begin with at least this many equal tokens are planned together: one
trie if they fit, else tries below their common prompt as a cached prefix. Shorter common
beginnings ("Question:") save too little to be worth it."""


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens ``a`` and ``b`` have in common at their start."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return int(np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))[0])


@dataclass
class Trie:
    """Requests merged into a token trie, laid out depth-first, so that a prefix several of them
    share is computed once.

    Each sequence added hangs below the path of the one added before it, from their common prefix
    on: the layout stays depth-first in any order. In lexicographic order (``plan_tries``) that
    common prefix is also the longest the sequence shares with any earlier one, so the trie holds
    every distinct prefix once. A batch row holds one or more tries one after another: a trie's
    first token is at its shallowest depth, which ends every subtree before it, so tries in one
    row never see each other.

    A trie may hang below a ``prefix`` that it does not hold (a cached prefix: module docstring);
    it holds the rest of each sequence, at depths counted from the prefix's start."""

    prefix: tuple[int, ...] = ()
    tokens: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    """Each token's depth in the trie, i.e. its position in its own sequence: the position id. In
    depth-first order the descendants of a token are the tokens after it up to the next one at
    its depth or shallower, so the depths alone say who sees whom (``ancestor_mask``)."""
    scored: list[tuple[int, list[int]]] = field(default_factory=list)
    """(piece index, the trie positions whose outputs predict its continuation tokens, in order)."""
    _last: list[int] = field(default_factory=list)
    _path: list[int] = field(default_factory=list)
    """The trie positions of the sequence added last."""

    def add(self, piece: int, seq: list[int], n_cont: int, max_width: int) -> bool:
        """Add a sequence (which begins with ``prefix``, and whose continuation lies beyond it)
        unless the trie would outgrow ``max_width`` tokens (an empty trie always takes it); the
        last ``n_cont`` positions of its path predict its continuation."""
        offset = len(self.prefix)
        seq = seq[offset:]
        shared = shared_prefix_length(self._last, seq)
        start = len(self.tokens)
        if start and start + len(seq) - shared > max_width:
            return False
        self._path = self._path[:shared] + list(range(start, start + len(seq) - shared))
        self._last = seq
        self.tokens += seq[shared:]
        self.depths += range(offset + shared, offset + len(seq))
        self.scored.append((piece, self._path[len(seq) - n_cont :]))
        return True

    @classmethod
    def of(cls, piece: int, seq: list[int], n_cont: int, prefix: tuple[int, ...] = ()) -> Trie:
        trie = cls(prefix)
        trie.add(piece, seq, n_cont, len(seq))
        return trie

    @property
    def is_chain(self) -> bool:
        """One plain sequence (every token's ancestors are all tokens before it): no mask needed.
        A token at depth d has d ancestors before it, so the last one at depth len - 1 has all."""
        return not self.prefix and self.depths[-1] == len(self.depths) - 1


Batch = list[list[Trie]]
"""Rows of tries; every trie of a batch hangs below the same cached prefix (or none)."""


def plan_tries(
    inputs: Sequence[list[int]],
    n_conts: Sequence[int],
    groups: Sequence[Hashable] | None,
    max_length: int,
    *,
    pack: bool = True,
    cache_prefixes: bool = True,
    probe_prefix_length: int = 0,
) -> list[Trie]:
    """The tries that hold the input sequences (``n_conts[i]`` last positions of ``inputs[i]``
    are scored): one per group (a question's choices; without ``groups``, requests with equal
    context tokens), or per run of groups that begin with the same long prompt; split where a
    trie would outgrow ``max_length``. A run that does not fit one trie goes below its common
    prompt as a cached prefix (``cache_prefixes``), in one trie per group, which the rows pack.
    ``pack=False``: every request in a trie of its own. ``probe_prefix_length`` (the scorer's
    self-check): a common prompt of at least that many tokens is cached even where its run fits
    one trie."""
    if not pack:
        return [Trie.of(i, inputs[i], n_conts[i]) for i in range(len(inputs))]
    if groups is None:
        groups = [tuple(seq[: len(seq) - n + 1]) for seq, n in zip(inputs, n_conts, strict=True)]
    by_group: dict[Hashable, list[int]] = {}
    for i, key in enumerate(groups):
        by_group.setdefault(key, []).append(i)
    # Groups behind the same few-shot examples are neighbours in lexicographic order.
    firsts = sorted(
        ((min(inputs[i] for i in members), members) for members in by_group.values()),
        key=lambda first_and_members: first_and_members[0],
    )
    runs: list[list[list[int]]] = []  # runs of groups, each group's members
    previous = None
    for first, members in firsts:
        if previous and shared_prefix_length(previous, first) >= SHARED_PROMPT_TOKENS:
            runs[-1].append(members)
        else:
            runs.append([members])
        previous = first
    tries = []
    for run in runs:
        everyone = sorted((i for members in run for i in members), key=inputs.__getitem__)
        planned = _fill_tries(everyone, inputs, n_conts, (), max_length)
        prefix = ()
        if cache_prefixes and (len(planned) > 1 or probe_prefix_length):
            prefix = _common_prompt(everyone, inputs, n_conts, probe_prefix_length)
        if prefix:
            # Below the prompt, one trie per group: the questions share nothing more, and tries
            # of one question each pack into rows with little padding (``pack_rows``).
            planned = [
                trie
                for members in run
                for trie in _fill_tries(
                    sorted(members, key=inputs.__getitem__),
                    inputs,
                    n_conts,
                    prefix,
                    row_width_below(prefix, max_length),
                )
            ]
        tries += planned
    return tries


def row_width_below(prefix: tuple[int, ...], max_length: int) -> int:
    """The width of rows below a cached prefix: about the prefix's own length. Each token of such
    a row attends to the prefix and to its row, so a row much wider than the prefix makes that
    attention mostly padding and other questions, and a much narrower one pads more and copies
    the prefix's keys and values into more rows (5-shot ARC's 234-token prompt, 200 questions,
    one thread: rows of 128 tokens held 7% more tokens and reached 0.79 of the floor, rows of
    192 or 234 0.82 to 0.84; on 2 cores attention took 0.13 s at 234 against 0.20 s at the
    context's 512)."""
    return min(max_length, max(len(prefix), 1))


def _fill_tries(run, inputs, n_conts, prefix, width) -> list[Trie]:
    """The sorted ``run`` in tries below ``prefix``, a new one where one would outgrow ``width``
    (a request's own suffix always fits)."""
    if prefix:
        width = max(width, max(len(inputs[i]) for i in run) - len(prefix))
    tries = [Trie(prefix)]
    for i in run:
        if not tries[-1].add(i, inputs[i], n_conts[i], width):
            tries.append(Trie.of(i, inputs[i], n_conts[i], prefix))
    return tries


def _common_prompt(run, inputs, n_conts, min_length: int = 0) -> tuple[int, ...]:
    """The prompt that the sorted ``run``'s sequences all begin with, cut where the first
    continuation starts (its predictions must come from the tries), when at least
    ``min_length`` (default ``SHARED_PROMPT_TOKENS``) tokens long; else empty."""
    first, last = inputs[run[0]], inputs[run[-1]]  # sorted: their common prefix is everyone's
    length = min(
        shared_prefix_length(first, last),
        min(len(inputs[i]) - n_conts[i] for i in run),
    )
    if length < (min_length or SHARED_PROMPT_TOKENS):
        return ()
    return tuple(first[:length])


def pack_batches(
    tries: list[Trie], max_batch_tokens: int, max_length: int, pack: bool = True
) -> list[Batch]:
    """Batches of rows of tries, under ``max_batch_tokens`` rows x width each.

    One width for all the batches of a cached prefix (or of none): the longest trie's (at least
    ``row_width_below`` a prefix). With packing, every trie (longest first) goes into the open
    row it fills best, and a row is opened only where none has room: rows are as few as the
    tokens need, so a workload that fits one batch is not spread over as many rows as the budget
    allows (60 zero-shot ARC questions: 24 rows of 163 tokens, not 50), and short tries fill
    the rows of long ones rather than padding narrower batches of their own (200 ARC questions:
    2.6% padding, against 9% with a batch width per length class; wider rows cost attention,
    about 20% of the decoder's time at 250 tokens, so the padding saved is the larger gain).
    Without packing every row holds one trie, as lm-eval's batches do."""
    by_prefix: dict[tuple[int, ...], list[Trie]] = {}
    for trie in tries:
        by_prefix.setdefault(trie.prefix, []).append(trie)
    return [
        batch
        for prefix, same in by_prefix.items()
        for batch in pack_rows(
            same, max_batch_tokens, pack, row_width_below(prefix, max_length) if prefix else 0
        )
    ]


def pack_rows(tries: list[Trie], max_batch_tokens: int, pack: bool, width: int = 0) -> list[Batch]:
    """``tries`` in batches of rows ``width`` wide (at least the longest trie): best fit,
    longest first (``pack_batches``)."""
    left = sorted(tries, key=lambda t: len(t.tokens), reverse=True)
    least, batches = width, []
    while left:
        # Packed batches are all as wide as the first; unpacked ones (one trie a row, as
        # lm-eval's batches) each as wide as its longest.
        if not (pack and batches):
            width = max(least, len(left[0].tokens))
            max_rows = max(1, max_batch_tokens // width)
        rows: list[list[Trie]] = []
        gaps: list[tuple[int, int]] = []  # (room left, row index), ascending
        deferred = []  # no room in this batch: the next one
        for trie in left:
            n = len(trie.tokens)
            k = bisect.bisect_left(gaps, (n, -1)) if pack else len(gaps)
            if k < len(gaps):  # the open row with the least room that holds it
                room, r = gaps.pop(k)
                rows[r].append(trie)
                bisect.insort(gaps, (room - n, r))
            elif len(rows) < max_rows:
                rows.append([trie])
                bisect.insort(gaps, (width - n, len(rows) - 1))
            else:
                deferred.append(trie)
        batches.append(rows)
        left = deferred
    return batches


def ancestor_mask(depth: torch.Tensor, n_prefix: int = 0) -> torch.Tensor:
    """Boolean attention mask [rows, 1, width, n_prefix + width] of rows of tries given each
    token's ``depth`` ([rows, width]; padding -1): key k is visible from query q iff k is q or an
    ancestor of q in the row's trie, i.e. k <= q < end(k), the first position after k at k's
    depth or shallower. Padding ends every subtree and sees only itself, so no query row is
    all-masked (NaN in SDPA). The keys of a cached prefix of ``n_prefix`` tokens come first, and
    every real token sees all of them."""
    rows, width = depth.shape
    pos = torch.arange(width)
    closes = (depth[:, None, :] <= depth[:, :, None]) & (pos[None, :] > pos[:, None])  # [b, k, j]
    # argmax finds the first closing position (a uint8 tensor: 1 byte per pair, where a where()
    # over positions and a minimum took 8, three times the time); a last column closes all.
    end = torch.cat([closes, closes.new_ones(rows, width, 1)], dim=2).to(torch.uint8).argmax(2)
    q, k = pos[:, None], pos[None, :]
    allowed = ((k <= q) & (q < end[:, None, :]))[:, None, :, :]
    if n_prefix:
        real = (depth >= 0)[:, None, :, None]
        allowed = torch.cat([real.expand(-1, -1, -1, n_prefix), allowed], dim=-1)
    return allowed
