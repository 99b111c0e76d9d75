"""The batched scorer: log-likelihoods equal to lm-eval's HFLM and to a direct computation."""

from __future__ import annotations

import logging
import math
import random

import pytest
import torch
import torch.nn.functional as F

import evaluation.scorer as scorer_module
from evaluation.scorer import LoglikelihoodScorer, RequestEncoder
from evaluation.token_tries import ancestor_mask
from tests.evaluation.conftest import build_model, sentence


def direct_loglikelihood(model, context_ids, continuation_ids, max_length):
    """log p(continuation | context), one unpadded sequence, lm-eval's left truncation."""
    seq = (list(context_ids) + list(continuation_ids))[-(max_length + 1) :]
    ids = torch.tensor([seq[:-1]])
    with torch.no_grad():
        logp = F.log_softmax(model(ids).logits[0].double(), -1)
    n = len(continuation_ids)
    targets = torch.tensor(seq[-n:])
    rows = logp[-n:]
    return rows.gather(1, targets[:, None]).sum().item(), bool((rows.argmax(1) == targets).all())


def make_requests(n_questions=12, seed=0, long_context=False):
    rng = random.Random(seed)
    requests, groups = [], []
    for q in range(n_questions):
        words = 150 if long_context and q % 3 == 0 else rng.randint(2, 30)
        context = "Question: " + sentence(rng, words, words) + "\nAnswer:"
        for _ in range(rng.choice([2, 4])):
            requests.append((context, " " + sentence(rng, 1, 6)))
            groups.append(q)
    # Winogrande-style: contexts differ after a shared beginning, continuation shared.
    for q in range(3):
        stem = sentence(rng, 4, 8)
        for option in ("Sarah", "Maria"):
            requests.append((stem + " " + option, " always got the easier cases."))
            groups.append(("wino", q))
    requests += [("the cat sat ", "on the mat"), ("", " the dog")]  # trailing space; empty context
    groups += ["a", "b"]
    return requests, groups


def test_matches_direct_computation_with_and_without_packing(model, tokenizer):
    requests, groups = make_requests(long_context=True)
    encoder = RequestEncoder(tokenizer, "joint")
    packed = LoglikelihoodScorer(
        model, tokenizer, max_length=64, max_batch_tokens=256, progress=False
    )
    plain = LoglikelihoodScorer(model, tokenizer, max_length=64, pack=False, progress=False)
    got_packed = packed.score(requests, groups)
    got_plain = plain.score(requests)
    assert packed.pack and packed._head_only  # the fast paths passed their self-check
    for (ctx, cont), a, b in zip(requests, got_packed, got_plain, strict=True):
        ctx_ids, cont_ids = encoder.encode(ctx, cont)
        want, greedy = direct_loglikelihood(model, ctx_ids, cont_ids, 64)
        assert a.logprob == pytest.approx(want, abs=1e-4)
        assert b.logprob == pytest.approx(want, abs=1e-4)
        assert a.n_tokens == len(cont_ids) and a.is_greedy == greedy == b.is_greedy


def test_packing_shares_the_context(model, tokenizer):
    """Four choices of one question fit one row: context tokens are fed once, not four times."""
    scorer = LoglikelihoodScorer(model, tokenizer, max_length=128, progress=False)
    context = "Question: " + "the cat sat on the mat " * 6 + "\nAnswer:"
    requests = [(context, f" {w}") for w in ("water", "rock", "plant", "energy")]
    encoded = [scorer.encoder.encode(*r) for r in requests]
    inputs = [(c + t)[:-1] for c, t in encoded]
    rows = scorer._plan_tries(inputs, [len(t) for _, t in encoded], [0, 0, 0, 0])
    assert len(rows) == 1
    assert len(rows[0].tokens) < sum(len(i) for i in inputs) / 3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_equals_lm_eval_hflm(tokenizer, attn):
    lm_eval = pytest.importorskip(
        "lm_eval", reason="lm_eval is not installed (pip install lm_eval)"
    )
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    del lm_eval
    model = build_model(len(tokenizer), context=64, attn_implementation=attn)
    requests, groups = make_requests(seed=3, long_context=True)  # some exceed the 64-token context
    ours = LoglikelihoodScorer(model, tokenizer, max_batch_tokens=512, progress=False)
    got = ours.score(requests, groups)
    hflm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8, add_bos_token=False)
    instances = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
    theirs = hflm.loglikelihood(instances, disable_tqdm=True)
    assert max(abs(a.logprob - b[0]) for a, b in zip(got, theirs, strict=True)) < 1e-4
    assert [a.is_greedy for a in got] == [b[1] for b in theirs]


def test_separate_encoding_is_olmos(tokenizer):
    """OLMo's in-loop evaluator encodes context and continuation independently."""
    encoder = RequestEncoder(tokenizer, "separate")
    ctx, cont = encoder.encode("Question: the cat\nAnswer:", " water rock")
    assert ctx == tokenizer.encode("Question: the cat\nAnswer:", add_special_tokens=False)
    assert cont == tokenizer.encode(" water rock", add_special_tokens=False)
    joint = RequestEncoder(tokenizer, "joint")
    assert joint.encode("the cat sat ", "on") == joint.encode("the cat sat", " on")


def test_bad_requests_are_refused_clearly(model, tokenizer):
    scorer = LoglikelihoodScorer(
        model, tokenizer, max_length=16, max_batch_tokens=64, progress=False
    )
    with pytest.raises(ValueError, match="empty continuation"):
        scorer.score([("the cat", "")])
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        scorer.score_tokens([([1, 2], [len(tokenizer) + 5])])
    with pytest.raises(ValueError, match="pair_encoding"):
        RequestEncoder(tokenizer, "weird")


def test_a_model_without_custom_mask_support_falls_back(tokenizer, caplog):
    """A model that mishandles 4-D masks is detected by the self-check and scored plainly."""
    model = build_model(len(tokenizer), context=64)

    class NoCustomMasks(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, **kwargs):
            if attention_mask is not None and attention_mask.dim() == 4:
                attention_mask = None  # ignores the packed mask: segments would see each other
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    model.model = NoCustomMasks(model.model)
    requests, groups = make_requests(n_questions=4, seed=5)
    with caplog.at_level(logging.WARNING):
        scorer = LoglikelihoodScorer(model, tokenizer, progress=False)
        got = scorer.score(requests, groups)
    assert not scorer.pack and "packed rows" in caplog.text
    for (ctx, cont), score in zip(requests, got, strict=True):
        want, _ = direct_loglikelihood(model, *scorer.encoder.encode(ctx, cont), 64)
        assert score.logprob == pytest.approx(want, abs=1e-4)


def test_a_continuation_longer_than_the_context_is_scored_in_windows(model, tokenizer):
    """An answer of 3.5 contexts' worth of tokens: every token scored, in windows of half the
    context, each after all that precedes it (left-truncated); other requests are unaffected."""
    scorer = LoglikelihoodScorer(
        model, tokenizer, max_length=16, max_batch_tokens=64, progress=False
    )
    rng = random.Random(7)
    long_answer = " " + sentence(rng, 60, 60)
    requests = [("Question: the cat\nAnswer:", long_answer), ("Question: the cat\nAnswer:", " a")]
    got = scorer.score(requests, groups=[0, 0])
    ctx, cont = scorer.encoder.encode(*requests[0])
    assert len(cont) > 3 * 16
    want, n_windows = 0.0, 0
    for start in range(0, len(cont), 8):
        logprob, _ = direct_loglikelihood(model, ctx + cont[:start], cont[start : start + 8], 16)
        want += logprob
        n_windows += 1
    assert got[0].logprob == pytest.approx(want, abs=1e-4)
    assert (got[0].n_tokens, got[0].windows) == (len(cont), n_windows)
    short_ctx, short_cont = scorer.encoder.encode(*requests[1])
    assert got[1].logprob == pytest.approx(
        direct_loglikelihood(model, short_ctx, short_cont, 16)[0], abs=1e-4
    )
    assert got[1].windows == 1
    # A continuation of exactly the context length still fits: one window, lm-eval's rule.
    exact = scorer.score_tokens([(ctx, cont[:16])])[0]
    assert exact.windows == 1
    assert exact.logprob == pytest.approx(
        direct_loglikelihood(model, ctx, cont[:16], 16)[0], abs=1e-4
    )


# Broken variants of the trie mask (``ancestor_mask``), for tests that must see them.
def siblings_see_each_other(depth, n_prefix=0):
    """Every token sees every token before it in its row (a causal mask over the packed row)."""
    rows, width = depth.shape
    causal = torch.ones(width, width, dtype=torch.bool).tril().expand(rows, 1, width, width)
    return torch.cat([ancestor_mask(depth, n_prefix)[..., :n_prefix], causal], dim=-1)


def context_hidden(depth, n_prefix=0):
    """Every token sees itself and its two nearest ancestors only (nor any cached prefix)."""
    near = depth[:, None, :, None] - depth[:, None, None, :] <= 2
    near = torch.cat([near.new_zeros(*near.shape[:-1], n_prefix), near], dim=-1)
    return ancestor_mask(depth, n_prefix) & near


def tries_see_each_other(depth, n_prefix=0):
    """Tokens also see the first token of every trie before theirs in the row."""
    q, k = torch.arange(depth.shape[1])[:, None], torch.arange(depth.shape[1])[None, :]
    leak = (k < q) & (depth[:, None, None, :] == 0) & (depth[:, None, :, None] >= 0)
    allowed = ancestor_mask(depth, n_prefix)
    return allowed | torch.cat([leak.new_zeros(*leak.shape[:-1], n_prefix), leak], dim=-1)


def prefix_hidden(depth, n_prefix=0):
    """No token sees the cached prefix."""
    allowed = ancestor_mask(depth, n_prefix).clone()
    allowed[..., :n_prefix] = False
    return allowed


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bfloat16_model_keeps_the_fast_paths(tokenizer, attn, monkeypatch):
    """In bf16 the packed mask is built in the model's dtype (eager: an additive bf16 mask), the
    self-check still passes on CPU, and log-likelihoods stay within bf16's rounding of fp32's:
    0.05 nats times the square root of the tokens scored. Rounding errors add up like a random
    walk: over 20 seeds of these requests and both attention kernels (504 requests of 1 to 29
    tokens, log-likelihoods down to -153) the largest difference was 0.028 sqrt(n), 0.114 nats.
    The bound sees a broken mask, forced past the self-check (the former bound, 2% or 0.05
    nats, passed 14 of these 20 requests scored without their context)."""
    model = build_model(len(tokenizer), context=64, attn_implementation=attn)
    requests, groups = make_requests(n_questions=6, seed=11)
    want = LoglikelihoodScorer(model, tokenizer, progress=False).score(requests, groups)
    model = model.to(torch.bfloat16)

    def outside_rounding(mask=None) -> list[bool]:
        if mask is not None:
            monkeypatch.setattr(scorer_module, "ancestor_mask", mask)
        scorer = LoglikelihoodScorer(model, tokenizer, progress=False)
        scorer._checked = mask is not None  # a broken mask is forced past the self-check
        got = scorer.score(requests, groups)
        assert scorer.pack and scorer._head_only
        return [
            abs(a.logprob - b.logprob) > 0.05 * math.sqrt(b.n_tokens)
            for a, b in zip(got, want, strict=True)
        ]

    assert not any(outside_rounding())
    # Without their context, every request that has more than its first token of context
    # is outside (the last request's context is one token).
    assert outside_rounding(context_hidden) == [True] * 19 + [False]
    # Seeing the tokens before them in their row moves the 4 requests that have any: most of
    # these contexts nearly fill the 64-token context, so their requests sit alone in a row.
    assert sum(outside_rounding(siblings_see_each_other)) >= 4
