"""A batched log-likelihood scorer: log p(continuation | context) for many requests at once.

It returns the numbers lm-eval's ``HFLM.loglikelihood`` returns (sum of the continuation's token
log-probabilities, and whether greedy decoding would produce it), but does less work for them:

- requests that share a beginning are **merged into a token trie, one packed row per group**
  (the choices of one question share its context, and often their first words; Winogrande's
  partial contexts share the sentence up to the blank): the row holds the trie in depth-first
  order, every token attends to its ancestors only (a 4-D attention mask) and its position id is
  its depth, so each distinct prefix goes through the model once instead of once per choice;
- a long prompt shared by more requests than one row can hold (a few-shot task's examples) goes
  through the model once per scoring call, and its keys and values are cached for every row of
  the tries below it;
- the vocabulary projection runs **only at the distinct scored positions** (the last context token
  predicts every choice's first token: it is projected once), in chunks of rows whose
  log-normaliser is a log-sum-exp, so no log-softmax over the whole batch is ever materialised;
- rows are sorted by length and batched under a token budget, so padding stays small;
- every distinct string is tokenised once, all of them in one call of the tokenizer, and nothing
  runs a Python loop per token.

Tokenisation and truncation follow lm-eval's rules exactly (see ``RequestEncoder``): the sequence
``context + continuation`` keeps its last ``max_length + 1`` tokens (truncated from the left, the
continuation is never cut), the model sees all but the last of them. OLMo's in-loop evaluator
truncates the same way (``query[-model_ctx_len:]``).

A continuation longer than the context itself is where both references break: lm-eval's slice
``logits[inplen - contlen : inplen]`` then holds fewer rows than continuation tokens (a shape error)
and OLMo's ``ctx_len`` turns negative (silently wrong positions). Here such a continuation is scored
in **windows**: consecutive chunks of ``max_length // 2`` tokens, each a request of its own whose
context is everything before the chunk (the prompt, then the earlier chunks), left-truncated as
above. Every continuation token is scored, each conditioned on at least half the context, and the
log-probabilities add up (the chain rule); ``Loglikelihood.windows`` says how many windows were
used, so callers can report it. Requests that fit are never windowed. On the first call the scorer
checks on a probe that the packed path and the head-only path reproduce the model's plain forward
pass; a model for which either check fails (custom attention masks unsupported, logits
post-processed after the head) is scored with plain rows and full logits instead, with a warning.
"""

from __future__ import annotations

import bisect
import functools
import inspect
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

logger = logging.getLogger(__name__)

PAIR_ENCODINGS = ("joint", "separate")
_OWN = object()  # group key part of windows that share a packed row with nothing
SHARED_PROMPT_TOKENS = 32
"""Groups whose sequences begin with at least this many equal tokens are packed as one trie.
Shorter common beginnings ("Question:") save too little to be worth the wider rows."""
LOGITS_PER_CHUNK = 1 << 22
"""Logits computed at once by the vocabulary projection (16 MB in fp32): rows enough for an
efficient matrix product (128 at a vocabulary of 32000), few enough that the log-sum-exp reads
them back from cache rather than memory (on 2 cores: 0.75 s of projection plus 0.18 s of
normaliser for 13k positions, against 0.29 s of normaliser at 512 rows), and a bounded, reused
piece of memory however many positions a batch scores."""


def log_normaliser_(logits: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``logsumexp(logits, dim=1)`` given each row's maximum ``top`` ([rows, 1]), computed in the
    memory of ``logits``, which it overwrites: no second vocabulary-sized buffer to fill and read
    back, as ``log_softmax`` has (its output is the size of its input, and only one entry per
    target is ever read)."""
    return logits.sub_(top).exp_().sum(dim=1).log_().add_(top[:, 0])


@dataclass(frozen=True)
class Loglikelihood:
    """The score of one request."""

    logprob: float
    """Sum over the continuation's tokens of log p(token | everything before it), in nats."""
    n_tokens: int
    """Number of continuation tokens scored."""
    is_greedy: bool
    """Whether every continuation token is the model's argmax (lm-eval's ``is_greedy``)."""
    windows: int = 1
    """Windows the continuation was scored in: more than 1 only when it is longer than the model's
    context (see the module docstring)."""


class RequestEncoder:
    """Turns (context, continuation) strings into token ids, as the evaluation code of the papers does.

    ``pair_encoding="joint"`` is lm-eval's rule (``TemplateLM._encode_pair``): trailing spaces of
    the context move to the continuation, the context is encoded alone and the continuation is the
    rest of the encoding of ``context + continuation``. ``"separate"`` is OLMo's in-loop evaluator
    (``ICLMultiChoiceTaskDataset.prep_examples``, used by the loss-to-loss and OLMo-ladder papers):
    context and continuation are encoded independently and concatenated. The two differ only where
    a token would straddle the boundary, and for SentencePiece tokenizers that prepend a space
    marker to every encoded string.

    ``add_bos`` is passed to the tokenizer as ``add_special_tokens`` for the context (the papers:
    no BOS). An empty context is replaced by ``prefix_token_id`` (BOS, else EOS), as lm-eval does.
    """

    def __init__(self, tokenizer, pair_encoding: str = "joint", add_bos: bool = False):
        if pair_encoding not in PAIR_ENCODINGS:
            raise ValueError(
                f"pair_encoding must be one of {PAIR_ENCODINGS}, got {pair_encoding!r}"
            )
        self.tokenizer = tokenizer
        self.pair_encoding = pair_encoding
        self.add_bos = add_bos
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else None
        self.prefix_token_id = prefix if prefix is not None else tokenizer.eos_token_id

    def encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return self.encode_many([(context, continuation)])[0]

    def encode_many(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """``encode`` of every request. Each distinct string is tokenised once (the choices of a
        question share their context), and all of them in one call of the tokenizer: a fast
        tokenizer encodes a batch in Rust, without the Python overhead of one call per string."""
        plans = [self._plan(context, continuation) for context, continuation in requests]
        ids = self._tokenize({text for plan in plans for text in plan[1:] if text is not None})
        return [self._join(plan, ids) for plan in plans]

    def _plan(self, context: str, continuation: str):
        """(rule, first string, second string) to tokenise, each as (text, add_special_tokens)."""
        if not isinstance(context, str) or not isinstance(continuation, str):
            raise TypeError(
                f"a request is a pair of strings, got ({type(context).__name__}, "
                f"{type(continuation).__name__})"
            )
        if continuation == "":
            raise ValueError(f"empty continuation to score after context {context[-80:]!r}")
        if context == "":
            if self.prefix_token_id is None:
                raise ValueError(
                    "empty context and the tokenizer has neither a BOS nor an EOS token to stand in"
                )
            return "empty", None, (continuation, False)
        if self.pair_encoding == "separate":
            return "separate", (context, self.add_bos), (continuation, False)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        return "joint", (context, self.add_bos), (context + continuation, self.add_bos)

    def _tokenize(self, texts) -> dict[tuple[str, bool], list[int]]:
        out = {}
        for special in (False, True):
            batch = [text for text, s in texts if s == special]
            if batch:
                encoded = self.tokenizer(batch, add_special_tokens=special)["input_ids"]
                for text, ids in zip(batch, encoded, strict=True):
                    out[text, special] = list(ids)
        return out

    def _join(self, plan, ids) -> tuple[list[int], list[int]]:
        rule, first, second = plan
        if rule == "empty":
            cont = ids[second]
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        if rule == "separate":
            return ids[first], ids[second]
        ctx, whole = ids[first], ids[second]
        return ctx, whole[len(ctx) :]


def _shared_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return int(np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))[0])


@dataclass
class _Trie:
    """Requests merged into a token trie, laid out depth-first, so that a prefix several of them
    share is computed once.

    Each sequence added hangs below the path of the one added before it, from their common prefix
    on: the layout stays depth-first in any order. In lexicographic order (``_plan_tries``) that
    common prefix is also the longest the sequence shares with any earlier one, so the trie holds
    every distinct prefix once. A batch row holds one or more tries one after another: a trie's
    first token is at its shallowest depth, which ends every subtree before it, so tries in one
    row never see each other.

    A trie may hang below a ``prefix`` that it does not hold: a long prompt shared by more
    requests than one trie can take (the examples of a few-shot task) is computed once, its keys
    and values cached for every row of the tries below it (``LoglikelihoodScorer._prefix_cache``),
    and the trie holds the rest of each sequence, at depths counted from the prefix's start."""

    prefix: tuple[int, ...] = ()
    tokens: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    """Each token's depth in the trie, i.e. its position in its own sequence: the position id. In
    depth-first order the descendants of a token are the tokens after it up to the next one at
    its depth or shallower, so the depths alone say who sees whom (``_trie_mask``)."""
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
        shared = _shared_prefix_length(self._last, seq)
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
    def of(cls, piece: int, seq: list[int], n_cont: int, prefix: tuple[int, ...] = ()) -> _Trie:
        trie = cls(prefix)
        trie.add(piece, seq, n_cont, len(seq))
        return trie

    @property
    def is_chain(self) -> bool:
        """One plain sequence (every token's ancestors are all tokens before it): no mask needed.
        A token at depth d has d ancestors before it, so the last one at depth len - 1 has all."""
        return not self.prefix and self.depths[-1] == len(self.depths) - 1


class LoglikelihoodScorer:
    """Scores (context, continuation) requests with a causal LM; see the module docstring.

    ``max_batch_tokens`` bounds rows x padded length per forward pass. ``pack=False`` disables the
    shared-prefix packing (every request gets its own row, as lm-eval does).
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        max_length: int | None = None,
        max_batch_tokens: int = 8192,
        pair_encoding: str = "joint",
        add_bos: bool = False,
        pack: bool = True,
        progress: bool = True,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.encoder = (
            RequestEncoder(tokenizer, pair_encoding, add_bos) if tokenizer is not None else None
        )
        self.max_length = int(max_length or model_max_length(model, tokenizer))
        if max_batch_tokens < self.max_length:
            raise ValueError(
                f"max_batch_tokens={max_batch_tokens} must hold at least one full row of "
                f"max_length={self.max_length} tokens"
            )
        self.max_batch_tokens = max_batch_tokens
        self.pack = pack
        self.progress = progress
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self._checked = False
        self._head_only = True
        self._cache_prefixes = True
        self._probing_prefixes = False  # the self-check caches any shared prefix, however short
        self._prefix_kv: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    # ------------------------------------------------------------------ public API
    def score(
        self,
        requests: Sequence[tuple[str, str]],
        groups: Sequence[Hashable] | None = None,
        desc: str = "scoring",
    ) -> list[Loglikelihood]:
        """Score string requests; ``groups`` (one key per request, e.g. the question id) says which
        requests share a trie (a question's choices); groups that begin with the same long prompt
        share one too. Without it, requests with equal context tokens form a group."""
        if self.encoder is None:
            raise ValueError("LoglikelihoodScorer was built without a tokenizer; use score_tokens")
        return self.score_tokens(self.encoder.encode_many(requests), groups, desc=desc)

    def score_tokens(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        groups: Sequence[Hashable] | None = None,
        desc: str = "scoring",
    ) -> list[Loglikelihood]:
        """Score token requests (context ids, continuation ids)."""
        if groups is not None and len(groups) != len(requests):
            raise ValueError(f"{len(groups)} group keys for {len(requests)} requests")
        if not requests:
            return []
        if not self._checked:
            self._check_fast_paths()
        pieces, owners, piece_groups = [], [], []
        for i, (ctx, cont) in enumerate(requests):
            ctx, cont = list(ctx), list(cont)
            if not cont:
                raise ValueError(f"request {i}: empty continuation")
            if not ctx:
                raise ValueError(f"request {i}: empty context (use the prefix token)")
            if min(min(ctx), min(cont)) < 0 or max(max(ctx), max(cont)) >= self.vocab_size:
                bad = next(t for t in ctx + cont if not 0 <= t < self.vocab_size)
                raise ValueError(
                    f"request {i}: token id {bad} is outside the model's vocabulary of "
                    f"{self.vocab_size}; the tokenizer does not fit this model"
                )
            for k, piece in enumerate(self._windows(ctx, cont)):
                pieces.append(piece)
                owners.append(i)
                # The first window shares the request's context with its group; later ones are
                # conditioned on the request's own answer and share with nothing.
                piece_groups.append(groups[i] if groups is not None and k == 0 else (_OWN, i, k))
        if groups is None:
            piece_groups = None
        logprob, greedy = self._score_pieces(pieces, piece_groups, desc)
        total = [0.0] * len(requests)
        all_greedy = [True] * len(requests)
        windows = [0] * len(requests)
        for i, lp, g in zip(owners, logprob, greedy, strict=True):
            total[i] += lp
            all_greedy[i] = all_greedy[i] and g
            windows[i] += 1
        return [
            Loglikelihood(total[i], len(requests[i][1]), all_greedy[i], windows[i])
            for i in range(len(requests))
        ]

    def _windows(self, ctx: list[int], cont: list[int]) -> list[tuple[list[int], list[int]]]:
        """The request itself when its continuation fits the context, else chunks of
        ``max_length // 2`` continuation tokens, each after everything that precedes it (cut to
        the last ``max_length`` tokens: only those can be seen)."""
        if len(cont) <= self.max_length:
            return [(ctx, cont)]
        step = max(1, self.max_length // 2)
        return [
            ((ctx + cont[:start])[-self.max_length :], cont[start : start + step])
            for start in range(0, len(cont), step)
        ]

    def _score_pieces(self, requests, groups, desc) -> tuple[list[float], list[bool]]:
        """Log-likelihood and greedy flag of requests whose continuations fit the context."""
        inputs, conts = [], []
        for ctx, cont in requests:
            # lm-eval: keep the last max_length + 1 tokens, feed all but the last. The continuation
            # fits, so its tokens are the targets of the last len(cont) inputs.
            inputs.append((ctx + cont)[-(self.max_length + 1) : -1])
            conts.append(cont)
        tries = self._plan_tries(inputs, [len(c) for c in conts], groups)
        owners, logps, greedies = [], [], []
        bar = tqdm(total=len(requests), desc=desc, disable=not self.progress, leave=False)
        try:
            for batch in self._batches(tries):
                for out, part in zip(
                    (owners, logps, greedies), self._run_batch(batch, conts), strict=True
                ):
                    out.append(part)
                bar.update(sum(len(trie.scored) for row in batch for trie in row))
        finally:
            self._prefix_kv.clear()
            bar.close()
        # Per-token results summed per request in float64 (lm-eval sums in fp32: within 1e-6).
        owners, misses = torch.cat(owners), (~torch.cat(greedies)).long()
        logprob = torch.zeros(len(requests), dtype=torch.float64)
        logprob.index_add_(0, owners, torch.cat(logps).double())
        n_missed = torch.zeros(len(requests), dtype=torch.long).index_add_(0, owners, misses)
        return logprob.tolist(), (n_missed == 0).tolist()

    # ------------------------------------------------------------------ planning
    def _plan_tries(self, inputs, n_conts, groups) -> list[_Trie]:
        """One trie per group, or per run of groups that begin with the same long prompt; split
        where a trie would outgrow the context."""
        if not self.pack:  # every request in a trie of its own
            return [_Trie.of(i, inputs[i], n_conts[i]) for i in range(len(inputs))]
        if groups is None:
            groups = [
                tuple(seq[: len(seq) - n + 1]) for seq, n in zip(inputs, n_conts, strict=True)
            ]
        by_group: dict[Hashable, list[int]] = {}
        for i, key in enumerate(groups):
            by_group.setdefault(key, []).append(i)
        # Groups behind the same few-shot examples are neighbours in lexicographic order; one trie
        # for all of them computes those examples once per row rather than once per question.
        firsts = [(min(inputs[i] for i in members), members) for members in by_group.values()]
        firsts.sort(key=lambda first_and_members: first_and_members[0])
        runs, previous = [], None
        for first, members in firsts:
            if previous and _shared_prefix_length(previous, first) >= SHARED_PROMPT_TOKENS:
                runs[-1] += members
            else:
                runs.append(list(members))
            previous = first
        tries = []
        for run in runs:
            run = sorted(run, key=inputs.__getitem__)
            planned = self._fill_tries(run, inputs, n_conts, ())
            prefix = self._cached_prefix(run, inputs, n_conts)
            if prefix and (len(planned) > 1 or self._probing_prefixes):
                planned = self._fill_tries(run, inputs, n_conts, prefix)
            tries += planned
        return tries

    def _fill_tries(self, run, inputs, n_conts, prefix) -> list[_Trie]:
        """The sorted ``run`` in tries below ``prefix``, a new one where one would outgrow its
        width (the context; about the prefix's length below a cached prefix)."""
        width = self.max_length
        if prefix:
            # Each token of a row attends to the cached prefix and to the row: rows about as wide
            # as the prefix keep the second from outgrowing the first, while one request's suffix
            # always fits (the width of 5-shot ARC's 234-token prompt here: 0.13 s of attention
            # instead of 0.20 s at the context's 512).
            longest = max(len(inputs[i]) for i in run) - len(prefix)
            width = min(width, max(len(prefix), longest))
        tries = [_Trie(prefix)]
        for i in run:
            if not tries[-1].add(i, inputs[i], n_conts[i], width):
                tries.append(_Trie.of(i, inputs[i], n_conts[i], prefix))
        return tries

    def _cached_prefix(self, run, inputs, n_conts) -> tuple[int, ...]:
        """The prompt that the sorted ``run``'s sequences all begin with, cut where the first
        continuation starts (its predictions must come from the tries), when it is long enough
        to be worth a cache: a run that splits into several tries then computes it once, not once
        per trie. Empty where it is not, or prefix caching is off."""
        if not self._cache_prefixes:
            return ()
        first, last = inputs[run[0]], inputs[run[-1]]  # sorted: their common prefix is everyone's
        length = min(
            _shared_prefix_length(first, last),
            min(len(inputs[i]) - n_conts[i] for i in run),
        )
        if length < (1 if self._probing_prefixes else SHARED_PROMPT_TOKENS):
            return ()
        return tuple(first[:length])

    def _batches(self, tries: list[_Trie]) -> list[list[list[_Trie]]]:
        """Batches of rows of tries, under ``max_batch_tokens`` rows x width each.

        The longest tries left open the rows of a batch (the first sets its width); with packing,
        the gap each row leaves is then filled with the longest tries left that fit, so padding
        stays small even where lengths vary widely (one long question sets the width of a batch of
        short ones). Without packing every row holds one trie, as lm-eval's batches do. The tries
        of a batch share one cached prefix (or none)."""
        by_prefix: dict[tuple[int, ...], list[_Trie]] = {}
        for trie in tries:
            by_prefix.setdefault(trie.prefix, []).append(trie)
        return [batch for same in by_prefix.values() for batch in self._pack_rows(same)]

    def _pack_rows(self, tries: list[_Trie]) -> list[list[list[_Trie]]]:
        left = sorted(tries, key=lambda t: len(t.tokens))  # shortest first: pop() the longest
        lengths = [len(t.tokens) for t in left]
        batches = []
        while left:
            width = lengths[-1]
            rows = []
            while left and len(rows) < max(1, self.max_batch_tokens // width):
                lengths.pop()
                rows.append([left.pop()])
            for row in rows if self.pack else []:
                gap = width - len(row[0].tokens)
                while (k := bisect.bisect_right(lengths, gap) - 1) >= 0:  # the longest that fits
                    gap -= lengths.pop(k)
                    row.append(left.pop(k))
            batches.append(rows)
        return batches

    # ------------------------------------------------------------------ execution
    def _run_batch(self, batch: list[list[_Trie]], conts):
        """(piece index, log p, is argmax) of every continuation token scored in the batch."""
        device = self.model.device
        width = max(sum(len(trie.tokens) for trie in row) for row in batch)
        ids, depth, owners, offsets, positions, targets = [], [], [], [], [], []
        for r, row in enumerate(batch):
            for trie in row:
                for piece, path in trie.scored:
                    owners += [piece] * len(path)
                    offsets += [len(ids)] * len(path)  # where the trie starts in the flat batch
                    positions += path
                    targets += conts[piece]
                ids += trie.tokens
                depth += trie.depths
            pad = (r + 1) * width - len(ids)
            ids += [0] * pad
            depth += [-1] * pad
        ids = torch.tensor(ids).view(len(batch), width)
        depth = torch.tensor(depth).view(len(batch), width)
        prefix = batch[0][0].prefix
        cache = self._prefix_cache(prefix, len(batch)) if prefix else None
        if all(len(row) == 1 and row[0].is_chain for row in batch):
            mask, position_ids = (depth >= 0).long().to(device), None
        else:
            mask = self._trie_mask(depth, len(prefix)).to(device)
            position_ids = depth.clamp(min=0).to(device)
        # A position that predicts several targets (the trie's branch points) is projected once.
        flat = torch.tensor(offsets) + torch.tensor(positions)
        flat, target_row = torch.unique(flat, return_inverse=True)
        logp, greedy = self._scored_logprobs(
            ids.to(device),
            mask,
            position_ids,
            flat.to(device),
            target_row.to(device),
            torch.tensor(targets, device=device),
            cache,
        )
        return torch.tensor(owners), logp.cpu(), greedy.cpu()

    @functools.cached_property
    def _cache_argument(self) -> str:
        """What the decoder's forward calls its key/value cache: ``cache`` since transformers
        5.24, ``past_key_values`` in models written before (read once, not per batch)."""
        parameters = inspect.signature(self._decoder().forward).parameters
        return "cache" if "cache" in parameters else "past_key_values"

    @torch.no_grad()
    def _prefix_cache(self, prefix: tuple[int, ...], rows: int):
        """A key/value cache holding ``prefix`` for each of ``rows`` rows. The prefix goes through
        the decoder once per scoring call; each batch gets a fresh cache of views of its keys and
        values (a forward appends to the cache it is given)."""
        if prefix not in self._prefix_kv:
            filled = DynamicCache(config=self.model.config)
            ids = torch.tensor([prefix], device=self.model.device)
            self._decoder()(input_ids=ids, use_cache=True, **{self._cache_argument: filled})
            self._prefix_kv[prefix] = [(layer.keys, layer.values) for layer in filled.layers]
        cache = DynamicCache(config=self.model.config)
        for index, (keys, values) in enumerate(self._prefix_kv[prefix]):
            cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), index)
        return cache

    def _trie_mask(self, depth: torch.Tensor, n_prefix: int = 0) -> torch.Tensor:
        """Row-wise mask: key k is visible from query q iff k is q or an ancestor of q in the row's
        trie, i.e. k <= q < end(k), the first position after k at k's depth or shallower.
        Padding has depth -1: it ends every subtree and sees only itself, so no query row is
        all-masked (NaN in SDPA). With a cached prefix of ``n_prefix`` tokens, its keys come
        first, and every real token sees all of them."""
        width = depth.shape[1]
        pos = torch.arange(width)
        after = pos[None, :] > pos[:, None]  # [k, j]: j comes after k
        closes = after & (depth[:, None, :] <= depth[:, :, None])  # [b, k, j]: j ends k's subtree
        end = torch.where(closes, pos, width).amin(dim=-1)  # [b, k]
        q, k = pos[:, None], pos[None, :]
        allowed = ((k <= q) & (q < end[:, None, :]))[:, None, :, :]
        if n_prefix:
            real = (depth >= 0)[:, None, :, None]
            allowed = torch.cat([real.expand(-1, -1, -1, n_prefix), allowed], dim=-1)
        if getattr(self.model.config, "_attn_implementation", "eager") == "sdpa":
            return allowed
        dtype = self.model.dtype
        return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)

    @torch.no_grad()
    def _scored_logprobs(self, ids, mask, position_ids, positions, target_row, targets, cache=None):
        """log p(target) (fp32) and whether it is the argmax, for targets predicted at the flat
        batch ``positions`` (target t at ``positions[target_row[t]]``).

        The logits are made and normalised a chunk of rows at a time, in one buffer allocated
        once per batch: a fresh tensor of tens of MB per chunk would be new memory from the OS
        every time (page faults cost about a quarter of the projection itself on CPU)."""
        kwargs = {"attention_mask": mask, "use_cache": cache is not None}
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if cache is not None:
            kwargs[self._cache_argument] = cache
        chunk = max(1, LOGITS_PER_CHUNK // self.vocab_size)
        if self._head_only:
            hidden = self._decoder()(input_ids=ids, **kwargs).last_hidden_state
            logits_of = self._projection(hidden.flatten(0, 1)[positions], chunk)
        else:
            logits = self.model(input_ids=ids, **kwargs).logits.flatten(0, 1)[positions]

            def logits_of(rows: slice) -> torch.Tensor:
                return logits[rows]

        logp = torch.empty(len(targets), device=targets.device)
        greedy = torch.empty(len(targets), dtype=torch.bool, device=targets.device)
        for start in range(0, len(positions), chunk):
            z = logits_of(slice(start, start + chunk)).float()
            mine = (target_row >= start) & (target_row < start + chunk)
            rows, tokens = target_row[mine] - start, targets[mine]
            # lm-eval's is_greedy is argmax == target, argmax taking the first of tied maxima. An
            # argmax over every row costs as much as the log-softmax; the maximum costs a fifth.
            # So: greedy where the target attains the maximum, then the argmax only there.
            top = z.amax(dim=1, keepdim=True)
            target_logits = z[rows, tokens]
            is_top = target_logits == top[rows, 0]
            check = is_top.nonzero()[:, 0]
            is_top[check] = z[rows[check]].argmax(dim=1) == tokens[check]
            greedy[mine] = is_top
            # z is this chunk's own memory (the projection's buffer, or a copy: ``.float()`` of a
            # half-precision head, an index of the full logits), so it may be overwritten.
            logp[mine] = target_logits - log_normaliser_(z, top)[rows]
        return logp, greedy

    def _projection(self, hidden: torch.Tensor, chunk: int):
        """rows -> the head's logits at ``hidden[rows]``; a plain ``nn.Linear`` head writes into
        one reused buffer (any other head module is called as it is)."""
        head = self.model.get_output_embeddings()
        if type(head) is not torch.nn.Linear:
            return lambda rows: head(hidden[rows])
        weight, bias = head.weight.t(), head.bias
        rows_per_chunk = min(chunk, len(hidden))
        buffer = torch.empty(
            rows_per_chunk, weight.shape[1], dtype=weight.dtype, device=weight.device
        )

        def logits_of(rows: slice) -> torch.Tensor:
            h = hidden[rows]
            out = buffer[: len(h)]
            if bias is None:
                return torch.mm(h, weight, out=out)
            return torch.addmm(bias, h, weight, out=out)

        return logits_of

    def _decoder(self):
        return getattr(self.model, self.model.base_model_prefix)

    # ------------------------------------------------------------------ self-checks
    def _check_fast_paths(self) -> None:
        """Check on a probe that head-only logits and packed rows reproduce plain rows with full
        logits (lm-eval's computation); switch off whichever does not."""
        self._checked = True
        g = torch.Generator().manual_seed(0)
        n = max(2, min(8, self.max_length // 4))
        ctx = torch.randint(0, self.vocab_size, (n,), generator=g).tolist()
        conts = [torch.randint(0, self.vocab_size, (k,), generator=g).tolist() for k in (3, 1, 2)]
        conts.append(conts[0][:2] + conts[2][:1])  # branches off the first choice's second token
        probe = [(ctx, cont) for cont in conts] + [(ctx[:-1], conts[0])]
        groups = [0, 0, 0, 0, 1]
        want_pack, self.pack, self._head_only = self.pack, False, False
        progress, self.progress = self.progress, False
        try:
            reference = [r.logprob for r in self.score_tokens(probe, groups)]
            fast_paths = (
                ("_head_only", "head-only logits"),
                ("pack", "packed rows"),
                ("_cache_prefixes", "cached shared prefixes"),
            )
            self._cache_prefixes = False
            for attr, what in fast_paths:
                if attr != "_head_only" and not want_pack:
                    continue
                setattr(self, attr, True)
                self._probing_prefixes = attr == "_cache_prefixes"
                try:
                    got = [r.logprob for r in self.score_tokens(probe, groups)]
                    ok = all(abs(a - b) < 1e-4 for a, b in zip(got, reference, strict=True))
                except Exception as err:  # noqa: BLE001 - any failure means: use the plain path
                    logger.warning("%s unavailable for this model: %s", what, err)
                    ok = False
                if not ok:
                    logger.warning("%s do not reproduce the plain forward pass; not used", what)
                    setattr(self, attr, False)
        finally:
            self.progress = progress
            self._probing_prefixes = False


def model_max_length(model, tokenizer=None, default: int = 2048) -> int:
    """The context length, read as lm-eval's ``resolve_max_length`` does: the model config's
    sequence-length attribute first, then the tokenizer's ``model_max_length`` if sensible."""
    config = model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    if tokenizer is not None:
        value = getattr(tokenizer, "model_max_length", None)
        if isinstance(value, int) and 0 < value < 1_000_000_000:
            return value
    return default
