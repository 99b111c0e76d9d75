"""A batched log-likelihood scorer: log p(continuation | context) for many requests at once.

It returns the numbers lm-eval's ``HFLM.loglikelihood`` returns (sum of the continuation's token
log-probabilities, and whether greedy decoding would produce it), but does less work for them:

- requests that share a beginning are **merged into token tries** (the choices of one question
  share its context), laid out depth-first in a row with a 4-D mask and their depths as position
  ids, so each distinct prefix goes through the model once instead of once per choice; a long
  prompt shared by more requests than one row can hold (a few-shot task's examples) goes through
  the model once per scoring call, its keys and values cached for every row of the tries below
  it; tries are packed into as few rows as their tokens need (``evaluation.token_tries``);
- the vocabulary projection runs **only at the distinct scored positions** (the last context token
  predicts every choice's first token: it is projected once), in chunks of rows whose
  log-normaliser is a log-sum-exp, so no log-softmax over the whole batch is ever materialised;
- every distinct string is tokenised once, all of them in one call of the tokenizer, text that
  many strings repeat once where the tokenizer allows it (``evaluation.request_encoder``), and
  nothing runs a Python loop per token.

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
checks on a probe that head-only logits, packed tries and the cached prompt reproduce the model's
plain forward pass; a model for which a check fails (custom attention masks unsupported, logits
post-processed after the head) is scored without that fast path, with a warning.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from .request_encoder import PAIR_ENCODINGS, RequestEncoder
from .token_tries import SHARED_PROMPT_TOKENS, Batch, Trie, ancestor_mask, pack_batches, plan_tries

__all__ = [
    "LOGITS_PER_CHUNK",
    "PAIR_ENCODINGS",
    "SHARED_PROMPT_TOKENS",
    "Loglikelihood",
    "LoglikelihoodScorer",
    "RequestEncoder",
    "log_normaliser_",
    "model_max_length",
]

logger = logging.getLogger(__name__)

_OWN = object()  # group key part of windows that share a packed row with nothing
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
        self._probe_prefix_length = (
            0  # the self-check caches a prompt this long, however few share it
        )
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
    def _plan_tries(self, inputs, n_conts, groups) -> list[Trie]:
        return plan_tries(
            inputs,
            n_conts,
            groups,
            self.max_length,
            pack=self.pack,
            cache_prefixes=self._cache_prefixes,
            probe_prefix_length=self._probe_prefix_length,
        )

    def _batches(self, tries: list[Trie]) -> list[Batch]:
        return pack_batches(tries, self.max_batch_tokens, self.max_length, self.pack)

    # ------------------------------------------------------------------ execution
    def _run_batch(self, batch: Batch, conts):
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
        """``ancestor_mask`` as the model takes it: boolean for SDPA, else additive in its dtype."""
        allowed = ancestor_mask(depth, n_prefix)
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
        """Check on a probe that the fast paths (head-only logits, packed tries, the cached
        prompt) reproduce plain rows with full logits (lm-eval's computation): all of them in one
        pass; only where that differs, each on its own, and whichever does not is switched off."""
        self._checked = True
        g = torch.Generator().manual_seed(0)
        n = max(2, min(8, self.max_length // 4))

        def tokens(k: int) -> list[int]:
            return torch.randint(0, self.vocab_size, (k,), generator=g).tolist()

        ctx, other = tokens(n), tokens(n - 1)
        conts = [tokens(k) for k in (3, 1, 2)]
        conts.append(conts[0][:2] + conts[2][:1])  # branches off the first choice's second token
        # Group 0 hangs below its context's first n - 1 tokens as a cached prefix (the only
        # prompt that long; its last token predicts the choices, so it stays in the trie); group
        # 1 (a plain sequence of n + 1 tokens) and group 2 (a branching trie of n + 2) share a
        # row as wide as group 3 (a one-token context and 2n + 3 tokens to score), and must not
        # see each other.
        probe = [(ctx, c) for c in conts] + [(ctx[:-1], conts[0])] + [(other, c) for c in conts[2:]]
        probe.append((tokens(1), tokens(2 * n + 3)))
        groups = [0, 0, 0, 0, 1, 2, 2, 3]
        fast_paths = {"_head_only": "head-only logits"}
        if self.pack:
            fast_paths |= {"pack": "packed rows", "_cache_prefixes": "cached shared prefixes"}
        progress, self.progress = self.progress, False
        self._probe_prefix_length = n - 1
        try:
            for attr in fast_paths:
                setattr(self, attr, False)
            reference = [r.logprob for r in self.score_tokens(probe, groups)]
            for attr in fast_paths:
                setattr(self, attr, True)
            if self._reproduces(probe, groups, reference):
                return
            for attr in fast_paths:
                setattr(self, attr, False)
            for attr, what in fast_paths.items():
                setattr(self, attr, True)
                if not self._reproduces(probe, groups, reference, what):
                    setattr(self, attr, False)
            if not self._reproduces(probe, groups, reference, "the fast paths together"):
                for attr in fast_paths:
                    setattr(self, attr, False)
        finally:
            self.progress = progress
            self._probe_prefix_length = 0

    def _reproduces(self, probe, groups, reference, what: str | None = None) -> bool:
        """Whether the probe scores as ``reference`` with the current fast paths, within 1e-4, or
        in half precision within its rounding (8 units of the dtype's resolution times the
        square root of the tokens scored: bf16's is 0.0078, and another layout of the same
        arithmetic moved the probe's scores by up to 0.015 nats, where a broken mask moves them
        by nats); where ``what`` is named, a failure is logged as that fast path's."""
        try:
            got = self.score_tokens(probe, groups)
        except Exception as err:  # noqa: BLE001 - any failure means: use the plain path
            if what:
                logger.warning("%s unavailable for this model: %s", what, err)
            return False
        resolution = torch.finfo(self.model.dtype).eps
        ok = all(
            abs(a.logprob - b) <= max(1e-4, 8 * resolution * math.sqrt(a.n_tokens))
            for a, b in zip(got, reference, strict=True)
        )
        if not ok and what:
            logger.warning("%s do not reproduce the plain forward pass; not used", what)
        return ok


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
