"""(context, continuation) strings to token ids, by the rules of lm-eval and of OLMo's evaluator.

Tokenising is most of a scorer's fixed cost: a 5-shot task repeats its 900-character prompt in
every request, and lm-eval's rule encodes ``context + continuation`` whole for every choice. For
byte-level BPE tokenizers (GPT-2's, OLMo's, this project's) the encoder tokenises that repeated
text once instead, by the **split rule**: cutting a string at a space that follows a printable
non-space character cuts no token, so the tokens of the string are the tokens of the part before
the cut followed by those of the part after it. It holds because that pipeline has no normaliser,
its pre-tokenizer (the GPT-2 regular expression) ends a piece at such a space whatever follows it
and starts the next piece there as a fresh match would, and BPE encodes every piece on its own.
The rule is used only for such tokenizers (``splittable_backend``), and each call checks a few of
its requests against the tokenizer's own encoding of the whole strings; any difference switches
the rule off for good, with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

logger = logging.getLogger(__name__)

PAIR_ENCODINGS = ("joint", "separate")
CHECKED_REQUESTS = 3
"""Requests of every ``encode_many`` call encoded both ways when the split rule is used."""


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
        self.backend = splittable_backend(tokenizer)
        """The ``tokenizers`` pipeline that the split rule is used with; None: every string is
        tokenised whole by ``tokenizer``."""

    def encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return self.encode_many([(context, continuation)])[0]

    def encode_many(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """``encode`` of every request. Each distinct string is tokenised once (the choices of a
        question share their context), and all of them in one call of the tokenizer: a fast
        tokenizer encodes a batch in Rust, without the Python overhead of one call per string.
        With the split rule (module docstring), text that many strings repeat is tokenised once."""
        plans = [self._plan(context, continuation) for context, continuation in requests]
        if self.backend is not None and plans:
            encoded = self._encode_split(plans)
            if self._agrees_with_whole_strings(plans, encoded):
                return encoded
            logger.warning(
                "the split tokenisation differs from %s's own for this tokenizer; every string "
                "is tokenised whole from now on",
                type(self.tokenizer).__name__,
            )
            self.backend = None
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

    # ------------------------------------------------------------------ the split rule
    def _encode_split(self, plans) -> list[tuple[list[int], list[int]]]:
        """``encode_many`` by the split rule. A joint request whose context can be cut (at its
        last space after a printable character) is tokenised as the context, which its choices
        share, and the short tail from the cut: ``context + continuation`` is the context's tokens
        up to the cut, then the tokens of ``tail + continuation``. Strings with special tokens
        (``add_bos``) are tokenised whole, by the tokenizer."""
        cuts: dict[str, int | None] = {}
        texts, special = set(), set()  # to tokenise without, with special tokens
        for rule, first, second in plans:
            if rule == "joint" and not first[1]:
                context, whole = first[0], second[0]
                if context not in cuts:
                    cuts[context] = last_cut(context)
                cut = cuts[context]
                texts |= {context, whole} if cut is None else {context, context[cut:], whole[cut:]}
                continue
            for part in (first, second):
                if part is not None and part[1]:
                    special.add(part)
                elif part is not None:
                    texts.add(part[0])
        contexts = {first[0] for _, first, _ in plans if first is not None and not first[1]}
        ids = self._tokenize(special)
        ids.update(
            ((text, False), tokens) for text, tokens in self._tokenize_shared(texts, contexts)
        )
        encoded = []
        for plan in plans:
            rule, first, second = plan
            cut = cuts.get(first[0]) if rule == "joint" and not first[1] else None
            if cut is None:
                encoded.append(self._join(plan, ids))
            else:  # lm-eval's continuation: the whole's tokens after as many as the context has
                n_tail = len(ids[first[0][cut:], False])
                encoded.append((ids[first], ids[second[0][cut:], False][n_tail:]))
        return encoded

    def _tokenize_shared(self, texts: set[str], contexts: set[str]):
        """(text, tokens) of every text, without special tokens: the beginning that all
        ``contexts`` share (a few-shot prompt), up to its last cut, is tokenised once."""
        ordered = sorted(contexts)
        shared = os.path.commonprefix([ordered[0], ordered[-1]]) if len(ordered) > 1 else ""
        cut = last_cut(shared)
        head = shared[:cut] if cut is not None else None
        pieces = {}  # text -> what is tokenised of it: all, or the rest after the shared head
        for text in texts:
            after = cut is not None and text.startswith(shared[: cut + 1])
            pieces[text] = text[cut:] if after else text
        batch = sorted(set(pieces.values()) | ({head} if head is not None else set()))
        # encode_batch_fast: the same ids, without the character offsets (a fifth of the time).
        encoded = self.backend.encode_batch_fast(batch, add_special_tokens=False)
        tokens = dict(zip(batch, (e.ids for e in encoded), strict=True))
        for text, piece in pieces.items():
            yield text, (tokens[head] + tokens[piece]) if piece != text else list(tokens[text])

    def _agrees_with_whole_strings(self, plans, encoded) -> bool:
        """Whether a few requests (the first, middle and last) encode as the tokenizer encodes
        their whole strings."""
        picks = sorted({0, len(plans) // 2, len(plans) - 1})[:CHECKED_REQUESTS]
        whole = self._tokenize({text for i in picks for text in plans[i][1:] if text is not None})
        return all(self._join(plans[i], whole) == encoded[i] for i in picks)


def last_cut(text: str) -> int | None:
    """The last index ``s`` (0 < s < len(text)) at which the split rule may cut ``text``: a
    space after a printable non-space character (Python's printable characters include no
    Unicode whitespace but the space itself). None where there is none."""
    s = text.rfind(" ")
    while s > 0:
        before = text[s - 1]
        if before.isprintable() and not before.isspace():
            return s
        s = text.rfind(" ", 0, s)
    return None


def splittable_backend(tokenizer):
    """The ``tokenizers`` pipeline of a fast tokenizer for which the split rule holds (module
    docstring), else None: no normaliser; the byte-level pre-tokenizer with its regular
    expression; BPE without dropout; added tokens that hold no whitespace and strip none around
    them (their matches are cut out before pre-tokenising, and a stripping one could take the
    space at a cut)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import models, pre_tokenizers

    pre = backend.pre_tokenizer
    if backend.normalizer is not None or not isinstance(pre, pre_tokenizers.ByteLevel):
        return None
    if not pre.use_regex or not isinstance(backend.model, models.BPE):
        return None
    if backend.model.dropout not in (None, 0.0):
        return None
    for added in backend.get_added_tokens_decoder().values():
        if added.lstrip or added.rstrip or any(c.isspace() for c in added.content):
            return None
    return backend
