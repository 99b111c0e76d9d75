"""The scorer's fast paths: token tries, the trie mask, packed batches, the chunked head, batched
tokenisation. Each must give what scoring every request alone gives."""

from __future__ import annotations

import logging
import random

import pytest
import torch

import evaluation.scorer as scorer_module
from evaluation.scorer import SHARED_PROMPT_TOKENS, LoglikelihoodScorer, RequestEncoder
from evaluation.token_tries import Trie
from tests.evaluation.conftest import build_model, sentence
from tests.evaluation.test_scorer import (
    context_hidden,
    direct_loglikelihood,
    prefix_hidden,
    siblings_see_each_other,
    tries_see_each_other,
)

CONTEXT = 64


@pytest.fixture(scope="module")
def small_model(tokenizer):
    return build_model(len(tokenizer), context=CONTEXT)


def token_requests(vocab: int, seed: int = 0):
    """Requests of varied shapes, with their group keys: questions whose choices share the
    context and sometimes their first tokens, a duplicate, an input that is a prefix of another,
    Winogrande-like contexts that differ at the end, questions behind a shared few-shot prompt
    (longer than SHARED_PROMPT_TOKENS, so their groups merge), single requests, contexts cut by
    the left truncation, and answers longer than the context (windows)."""
    rng = random.Random(seed)

    def toks(n):
        return [rng.randrange(vocab) for _ in range(n)]

    requests, groups = [], []
    for q in range(8):
        ctx = toks(rng.randint(1, 40))
        first = toks(rng.randint(1, 3))
        for _ in range(rng.choice([1, 2, 4])):
            cont = first[: rng.randint(0, len(first))] + toks(rng.randint(1, 6))
            requests.append((ctx, cont))
            groups.append(("q", q))
    requests += [requests[0], (requests[1][0], requests[1][1][:1])]  # duplicate; shorter input
    groups += [("q", 0), ("q", 0)]
    stem = toks(10)
    for q, option in enumerate((toks(2), toks(3))):
        for cont in (toks(4), toks(4)):
            requests.append((stem + option, cont))
            groups.append(("wino", q))
    shots = toks(SHARED_PROMPT_TOKENS + 5)
    for q in range(3):
        question = toks(rng.randint(1, 8))
        for cont in (toks(2), toks(3), toks(1)):
            requests.append((shots + question, cont))
            groups.append(("shots", q))
    requests += [(toks(CONTEXT + 20), toks(3)), (toks(5), toks(CONTEXT + 9)), (toks(3), toks(2))]
    groups += ["long context", "long answer", "alone"]
    return requests, groups


def windowed_direct(model, ctx, cont, max_length):
    """The reference for any request: plain forward passes, windows of max_length // 2 tokens
    where the answer is longer than the context (the scorer's documented rule)."""
    if len(cont) <= max_length:
        return direct_loglikelihood(model, ctx, cont, max_length)
    step, total, greedy = max_length // 2, 0.0, True
    for start in range(0, len(cont), step):
        window_ctx = (ctx + cont[:start])[-max_length:]
        logprob, g = direct_loglikelihood(model, window_ctx, cont[start : start + step], max_length)
        total, greedy = total + logprob, greedy and g
    return total, greedy


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("batch_tokens", [CONTEXT, 4 * CONTEXT])
def test_tries_give_the_log_likelihoods_of_each_request_alone(tokenizer, attn, batch_tokens):
    model = build_model(len(tokenizer), context=CONTEXT, attn_implementation=attn)
    requests, groups = token_requests(len(tokenizer))
    scorer = LoglikelihoodScorer(model, max_batch_tokens=batch_tokens, progress=False)
    got = scorer.score_tokens(requests, groups)
    assert scorer.pack and scorer._head_only
    plain = LoglikelihoodScorer(model, pack=False, progress=False).score_tokens(requests)
    for (ctx, cont), a, b in zip(requests, got, plain, strict=True):
        want, greedy = windowed_direct(model, ctx, cont, CONTEXT)
        assert a.logprob == pytest.approx(want, abs=1e-4)
        assert b.logprob == pytest.approx(want, abs=1e-4)
        assert a.is_greedy == b.is_greedy == greedy
        assert a.n_tokens == len(cont)


def test_no_groups_share_by_context(small_model, tokenizer):
    requests, _ = token_requests(len(tokenizer), seed=1)
    got = LoglikelihoodScorer(small_model, progress=False).score_tokens(requests)
    for (ctx, cont), a in zip(requests, got, strict=True):
        assert a.logprob == pytest.approx(
            windowed_direct(small_model, ctx, cont, CONTEXT)[0], abs=1e-4
        )


def test_a_trie_holds_each_distinct_prefix_once(small_model):
    scorer = LoglikelihoodScorer(small_model, progress=False)
    seqs = [[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 7], [1, 2, 3, 4], [1, 2, 3, 4, 8]]
    tries = scorer._plan_tries(seqs, [1, 2, 1, 1, 2], [0] * len(seqs))
    assert len(tries) == 1
    trie = tries[0]
    distinct = {tuple(s[: j + 1]) for s in seqs for j in range(len(s))}
    assert len(trie.tokens) == len(distinct) == 8
    # Each request's scored positions hold the tokens of its input, at the depths they have there.
    for piece, path in trie.scored:
        seq, n = seqs[piece], len(path)
        assert [trie.tokens[p] for p in path] == seq[-n:]
        assert [trie.depths[p] for p in path] == list(range(len(seq) - n, len(seq)))
    assert not trie.is_chain and Trie.of(0, [5, 6, 7], 1).is_chain


def test_groups_merge_only_behind_a_long_shared_prompt(small_model):
    scorer = LoglikelihoodScorer(small_model, progress=False)
    prompt = list(range(1, SHARED_PROMPT_TOKENS + 1))
    long_shared = [prompt + [100, 101], prompt + [102], prompt + [103, 104]]
    assert len(scorer._plan_tries(long_shared, [1, 1, 1], ["a", "b", "c"])) == 1
    short = prompt[: SHARED_PROMPT_TOKENS - 1]
    short_shared = [short + [100, 101], short + [102]]
    assert len(scorer._plan_tries(short_shared, [1, 1], ["a", "b"])) == 2
    # A merged trie never outgrows the context: it splits into several.
    many = [prompt + [200 + q] * 8 for q in range(10)]
    tries = scorer._plan_tries(many, [1] * 10, list(range(10)))
    assert len(tries) > 1 and all(len(t.tokens) <= CONTEXT for t in tries)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_long_shared_prompt_goes_through_the_model_once(tokenizer, attn):
    """Questions behind one few-shot prompt fill several tries; the prompt is computed once and
    its keys and values cached for every row, with the scores of each request alone."""
    model = build_model(len(tokenizer), context=CONTEXT, attn_implementation=attn)
    rng = random.Random(7)

    def toks(n):
        return [rng.randrange(len(tokenizer)) for _ in range(n)]

    prompt = toks(SHARED_PROMPT_TOKENS + 8)
    requests, groups = [], []
    for q in range(6):
        question = toks(8)
        for _ in range(3):
            requests.append((prompt + question, toks(3)))
            groups.append(q)
    scorer = LoglikelihoodScorer(model, max_batch_tokens=2 * CONTEXT, progress=False)
    scorer.score_tokens(requests[:1])  # the one-time self-check, with its own probes
    assert scorer._cache_prefixes
    calls = []  # (rows, width, tokens already cached) of every forward of the decoder

    def record(module, args, kwargs):
        cache = kwargs.get("cache")
        cached = 0 if cache is None else cache.get_seq_length()
        calls.append((*kwargs["input_ids"].shape, cached))

    hook = model.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        got = scorer.score_tokens(requests, groups)
    finally:
        hook.remove()
    (first_rows, prefix_length, nothing_cached), *batches = calls
    assert (first_rows, nothing_cached) == (1, 0) and prefix_length >= len(prompt)
    assert batches and all(cached == prefix_length for _, _, cached in batches)
    assert sum(rows for rows, _, _ in batches) >= 2  # more than one trie below the prompt
    for (ctx, cont), a in zip(requests, got, strict=True):
        want, greedy = windowed_direct(model, ctx, cont, CONTEXT)
        assert a.logprob == pytest.approx(want, abs=1e-4) and a.is_greedy == greedy


@pytest.mark.parametrize(
    ("broken", "fast_path"),
    [
        (siblings_see_each_other, "pack"),
        (context_hidden, "pack"),
        (tries_see_each_other, "pack"),
        (prefix_hidden, "_cache_prefixes"),
    ],
)
def test_the_self_check_catches_a_broken_mask(tokenizer, monkeypatch, caplog, broken, fast_path):
    """Each way the trie mask could go wrong (siblings seeing each other, the context hidden,
    tries in one row seeing each other, the cached prompt hidden) changes the probe's scores:
    the fast path that uses it is switched off, and the scores stay those of plain passes."""
    monkeypatch.setattr(scorer_module, "ancestor_mask", broken)
    model = build_model(len(tokenizer), context=CONTEXT)
    requests, groups = token_requests(len(tokenizer), seed=9)
    scorer = LoglikelihoodScorer(model, max_batch_tokens=2 * CONTEXT, progress=False)
    with caplog.at_level(logging.WARNING):
        got = scorer.score_tokens(requests, groups)
    what = {"pack": "packed rows", "_cache_prefixes": "cached shared prefixes"}[fast_path]
    assert f"{what} do not reproduce" in caplog.text
    assert not getattr(scorer, fast_path) and scorer._head_only
    assert fast_path == "pack" or scorer.pack
    for (ctx, cont), a in zip(requests, got, strict=True):
        want, greedy = windowed_direct(model, ctx, cont, CONTEXT)
        assert a.logprob == pytest.approx(want, abs=1e-4) and a.is_greedy == greedy


def test_trie_mask_is_the_ancestor_relation(small_model):
    scorer = LoglikelihoodScorer(small_model, progress=False)
    rng = random.Random(3)
    tries = [Trie.of(0, [rng.randrange(50) for _ in range(rng.randint(1, 6))], 1) for _ in range(3)]
    for trie in tries:  # grow branches
        for piece in range(1, 4):
            base = trie._last[: rng.randint(0, len(trie._last))]
            trie.add(piece, base + [rng.randrange(50) for _ in range(rng.randint(1, 3))], 1, 99)
    depths = [d for t in tries for d in t.depths] + [-1, -1]  # several tries, then padding
    # Brute force: walk up from each token; its parent is the closest earlier token one level up.
    parent = []
    for q, d in enumerate(depths):
        earlier = [k for k in range(q) if depths[k] == d - 1] if d > 0 else []
        parent.append(earlier[-1] if earlier else None)
    want = torch.zeros(len(depths), len(depths), dtype=torch.bool)
    for q in range(len(depths)):
        k = q
        while k is not None:
            want[q, k] = True
            k = parent[k] if depths[k] >= 0 else None
    got = scorer._trie_mask(torch.tensor([depths]))
    assert torch.equal(got[0, 0], want)


def test_batches_pack_every_trie_once_under_the_budget(small_model):
    rng = random.Random(4)
    tries = [Trie.of(i, list(range(rng.randint(1, CONTEXT))), 1) for i in range(60)]
    longest = max(len(t.tokens) for t in tries)
    for pack in (True, False):
        scorer = LoglikelihoodScorer(
            small_model, max_batch_tokens=3 * CONTEXT, pack=pack, progress=False
        )
        batches = scorer._batches(tries)
        seen = [id(t) for batch in batches for row in batch for t in row]
        assert sorted(seen) == sorted(id(t) for t in tries)
        for batch in batches:
            # Packed batches share the longest trie's width; unpacked ones have their own.
            width = longest if pack else len(batch[0][0].tokens)
            assert all(sum(len(t.tokens) for t in row) <= width for row in batch)
            assert len(batch) * width <= scorer.max_batch_tokens
            assert pack or all(len(row) == 1 for row in batch)
        if pack:  # rows are filled: one trie per row would pad about 45%, this packing 9%
            padded = sum(len(b) * max(sum(len(t.tokens) for t in r) for r in b) for b in batches)
            assert padded < 1.1 * sum(len(t.tokens) for t in tries)


def test_a_batch_opens_only_the_rows_its_tries_need(small_model):
    """A workload that fits one batch is not spread over as many rows as the budget allows: one
    long trie and ten short ones take the three rows their tokens need, not ten."""
    tries = [Trie.of(0, list(range(60)), 1)] + [Trie.of(i, list(range(10)), 1) for i in range(10)]
    scorer = LoglikelihoodScorer(small_model, max_batch_tokens=16 * CONTEXT, progress=False)
    (batch,) = scorer._batches(tries)
    assert len(batch) == 3 and sorted(len(row) for row in batch) == [1, 4, 6]


def test_the_head_in_small_chunks_gives_the_same_scores(small_model, tokenizer, monkeypatch):
    requests, groups = token_requests(len(tokenizer), seed=2)
    want = LoglikelihoodScorer(small_model, progress=False).score_tokens(requests, groups)
    monkeypatch.setattr(scorer_module, "LOGITS_PER_CHUNK", 3 * len(tokenizer))  # 3 rows a chunk
    got = LoglikelihoodScorer(small_model, progress=False).score_tokens(requests, groups)
    for a, b in zip(got, want, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5) and a.is_greedy == b.is_greedy


def test_any_head_module_works(tokenizer):
    """A head that is not a plain nn.Linear is called as it is (no reused buffer)."""

    class ScaledHead(torch.nn.Linear):
        def forward(self, x):
            return super().forward(x) * 0.5

    model = build_model(len(tokenizer), context=CONTEXT)
    head = ScaledHead(model.config.hidden_size, len(tokenizer), bias=False)
    head.weight = model.lm_head.weight
    model.lm_head = head
    requests, groups = token_requests(len(tokenizer), seed=5)
    got = LoglikelihoodScorer(model, progress=False).score_tokens(requests, groups)
    for (ctx, cont), a in zip(requests, got, strict=True):
        assert a.logprob == pytest.approx(windowed_direct(model, ctx, cont, CONTEXT)[0], abs=1e-4)


@pytest.mark.parametrize("tied_first", [True, False])
def test_greedy_takes_the_first_of_tied_maxima(tokenizer, tied_first):
    """lm-eval's is_greedy is argmax == target, and argmax takes the first maximal index: a token
    whose logit ties the maximum is greedy only if no earlier token has it too."""
    model = build_model(len(tokenizer), context=CONTEXT)
    ctx = [5, 17, 3, 9]
    with torch.no_grad():
        top = int(model(torch.tensor([ctx])).logits[0, -1].argmax())
        twin = top - 1 if tied_first else top + 1  # a second token with the same head row
        model.lm_head.weight[twin] = model.lm_head.weight[top]
    scorer = LoglikelihoodScorer(model, progress=False)
    got = scorer.score_tokens([(ctx, [top]), (ctx, [twin])], groups=[0, 0])
    first = min(top, twin)
    assert [g.is_greedy for g in got] == [top == first, twin == first]
    assert got[0].logprob == pytest.approx(got[1].logprob, abs=1e-6)


def test_encode_many_tokenises_each_distinct_string_once(tokenizer):
    calls = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner
            self.bos_token_id, self.eos_token_id = inner.bos_token_id, inner.eos_token_id

        def __call__(self, texts, **kwargs):
            calls.append(list(texts))
            return self.inner(texts, **kwargs)

    rng = random.Random(6)
    contexts = ["Question: " + sentence(rng) + "\nAnswer:" for _ in range(3)]
    requests = [(c, " " + sentence(rng, 1, 4)) for c in contexts for _ in range(4)]
    requests += [("the cat sat ", "on the mat"), ("", " the dog"), ("a", "b")]
    for pair_encoding in ("joint", "separate"):
        calls.clear()
        encoder = RequestEncoder(Counting(tokenizer), pair_encoding)
        got = encoder.encode_many(requests)
        assert len(calls) <= 2  # one batch per add_special_tokens value
        texts = [t for batch in calls for t in batch]
        assert len(texts) == len(set(texts))
        assert sum(t in contexts for t in texts) == len(contexts)  # shared contexts once each
        for (ctx, cont), ids in zip(requests, got, strict=True):
            assert ids == one_string_at_a_time(tokenizer, ctx, cont, pair_encoding)


def one_string_at_a_time(tokenizer, context, continuation, pair_encoding):
    """lm-eval's ``_encode_pair`` (joint) or OLMo's separate encoding, one encode call per string."""

    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False)

    if context == "":
        return [tokenizer.bos_token_id], encode(continuation)
    if pair_encoding == "separate":
        return encode(context), encode(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole, ctx = encode(context + continuation), encode(context)
    return ctx, whole[len(ctx) :]


def transformers_model(name: str, vocab: int, attn: str):
    """A tiny random model of one of transformers' own decoders (RoPE with grouped-query
    attention, OLMo-2's norms, GPT-2's learned absolute positions)."""
    import transformers

    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip
    if name == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4,
                                         n_positions=CONTEXT, bos_token_id=None,
                                         eos_token_id=None)  # fmt: skip
    else:
        config = getattr(transformers, f"{name}Config")(**common)
    config._attn_implementation = attn
    torch.manual_seed(0)
    model_class = {"gpt2": "GPT2LMHeadModel"}.get(name, f"{name}ForCausalLM")
    return getattr(transformers, model_class)(config).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", ["Llama", "Olmo2", "Qwen2", "gpt2"])
def test_transformers_decoders_take_every_fast_path_with_the_same_scores(tokenizer, name, attn):
    """The scorer is for any causal LM, not only ours: transformers' own decoders pass the
    self-check for head-only logits, tries and the cached prompt, and score as plain passes do."""
    model = transformers_model(name, len(tokenizer), attn)
    requests, groups = token_requests(len(tokenizer), seed=8)
    rng = random.Random(8)
    prompt = [rng.randrange(len(tokenizer)) for _ in range(SHARED_PROMPT_TOKENS + 8)]
    for q in range(6):  # more questions behind one prompt than one trie holds
        question = [rng.randrange(len(tokenizer)) for _ in range(8)]
        for _ in range(3):
            requests.append((prompt + question, [rng.randrange(len(tokenizer)) for _ in range(3)]))
            groups.append(("prompt", q))
    scorer = LoglikelihoodScorer(model, max_batch_tokens=2 * CONTEXT, progress=False)
    got = scorer.score_tokens(requests, groups)
    assert scorer._head_only and scorer.pack and scorer._cache_prefixes
    for (ctx, cont), a in zip(requests, got, strict=True):
        want, greedy = windowed_direct(model, ctx, cont, CONTEXT)
        assert a.logprob == pytest.approx(want, abs=1e-4) and a.is_greedy == greedy
