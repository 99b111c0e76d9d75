"""The request encoder's split rule: text that many strings repeat is tokenised once, with the
tokens the tokenizer gives each whole string, and only for tokenizers where that provably holds."""

from __future__ import annotations

import logging
import random

import pytest
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from evaluation.request_encoder import RequestEncoder, last_cut, splittable_backend
from tests.evaluation.conftest import EOS, sentence
from tests.evaluation.test_scorer_packing import one_string_at_a_time

# Strings around the places a cut could go wrong: runs of spaces, tabs, newlines and Unicode
# spaces before a space, contractions, digits, punctuation, letters with accents, an added
# token, a continuation that extends the context's last word, one that begins with a newline.
TRICKY = [
    "the  cat  sat",
    "rock\t water",
    "the\u00a0 heat grows",
    "the cat 's mat",
    "people's energy'll move",
    "in 1999 12 plants",
    "café  naïve  déjà vu",
    "what? !! ... ok",
    "heat\n moves \n\n  light",
    f"the cat{EOS} water",
    "light 🙂 heat",
    "Answer:",
]


def trained_tokenizer(add_prefix_space: bool = False, **pre_kwargs) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the tricky strings too, so that merges span their spaces."""
    rng = random.Random(0)
    texts = [sentence(rng, 5, 30) + "." for _ in range(300)] + TRICKY * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, **pre_kwargs)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS)


def tricky_requests(seed: int = 0) -> list[tuple[str, str]]:
    """Zero-shot questions, 5-shot questions behind one prompt, and the tricky strings as
    contexts and as continuations, with and without leading spaces."""
    rng = random.Random(seed)
    shots = "".join(
        f"Question: {sentence(rng)}?\nAnswer: {sentence(rng, 1, 3)}\n\n" for _ in range(5)
    )
    requests = []
    for _ in range(6):
        question = f"Question: {rng.choice(TRICKY)} {sentence(rng)}?\nAnswer:"
        for context in (question, shots + question):
            for _ in range(3):
                requests.append((context, " " + sentence(rng, 1, 4)))
    for text in TRICKY:
        requests += [(text, " water"), (text, "s"), (text + " ", "moves"), ("the cat", text)]
        requests += [(text, "\n" + text), (shots + text, " " + text), ("", " " + text)]
    return requests


@pytest.mark.parametrize("add_prefix_space", [False, True])
@pytest.mark.parametrize("pair_encoding", ["joint", "separate"])
def test_split_rule_gives_the_tokens_of_the_whole_strings(add_prefix_space, pair_encoding):
    tokenizer = trained_tokenizer(add_prefix_space)
    encoder = RequestEncoder(tokenizer, pair_encoding)
    assert encoder.backend is not None
    requests = tricky_requests()
    got = encoder.encode_many(requests)
    assert encoder.backend is not None  # its own check found no difference
    for (context, continuation), ids in zip(requests, got, strict=True):
        want = one_string_at_a_time(tokenizer, context, continuation, pair_encoding)
        assert ids == want, (context, continuation)
    # Each request alone (no shared prompt to cut at) gives the same tokens.
    assert [encoder.encode(*r) for r in requests[::7]] == got[::7]


def test_split_rule_tokenises_a_shared_prompt_once(tokenizer):
    """20 questions behind one 5-shot prompt, 4 choices each: the prompt's characters are
    tokenised once, not once per context and once more per choice."""
    rng = random.Random(1)
    shots = "".join(f"Question: {sentence(rng, 20, 30)}?\nAnswer: water\n\n" for _ in range(5))
    questions = [shots + f"Question: {sentence(rng)}?\nAnswer:" for _ in range(20)]
    requests = [(q, " " + sentence(rng, 1, 3)) for q in questions for _ in range(4)]
    encoder = RequestEncoder(tokenizer, "joint")
    characters = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def encode_batch_fast(self, texts, add_special_tokens):
            characters.append(sum(map(len, texts)))
            return self.inner.encode_batch_fast(texts, add_special_tokens=add_special_tokens)

    encoder.backend = Counting(encoder.backend)
    got = encoder.encode_many(requests)
    # Whole strings: each context, and each context with a choice (100 prompts); here the prompt
    # once and each question's own text (4% of that).
    whole = sum(len(q) for q in questions) + sum(len(q + c) for q, c in requests)
    assert whole > 100 * len(shots)
    assert len(characters) == 1 and characters[0] < whole / 20
    assert got == [one_string_at_a_time(tokenizer, c, t, "joint") for c, t in requests]


def plain_bpe(**kwargs) -> Tokenizer:
    tok = Tokenizer(models.BPE(**kwargs))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tok


def fast(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS)


def test_split_rule_only_where_it_holds(tokenizer):
    assert splittable_backend(tokenizer) is not None
    assert splittable_backend(object()) is None  # not a fast tokenizer
    normalised = plain_bpe()
    normalised.normalizer = normalizers.Lowercase()
    no_regex = plain_bpe()
    no_regex.pre_tokenizer = pre_tokenizers.ByteLevel(use_regex=False)
    metaspace = plain_bpe()
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    stripping = plain_bpe()
    stripping.add_special_tokens([AddedToken("<mask>", rstrip=True)])
    spaced = plain_bpe()
    spaced.add_tokens([AddedToken("new york")])
    for tok in (normalised, no_regex, metaspace, plain_bpe(dropout=0.1), stripping, spaced):
        assert splittable_backend(fast(tok)) is None
    assert splittable_backend(fast(plain_bpe())) is not None
    # A cut is a space after a printable non-space character, never at the start.
    assert last_cut("a b  c") == 3 and last_cut(" ab") is None and last_cut("a\t b") is None
    assert last_cut("a b\u00a0 c") == 1 and last_cut("") is None


def test_split_rule_switches_off_where_it_disagrees(tokenizer, caplog):
    """A tokenizer whose pieces do not add up (here: a corrupted backend) is caught by the
    encoder's own check on every call: the whole strings are tokenised, with a warning."""
    encoder = RequestEncoder(tokenizer, "joint")

    class DropsFirstToken:
        def __init__(self, inner):
            self.inner = inner

        def encode_batch_fast(self, texts, add_special_tokens):
            out = self.inner.encode_batch_fast(texts, add_special_tokens=add_special_tokens)
            return [type("E", (), {"ids": e.ids[1:] if t.startswith(" ") else e.ids})
                    for t, e in zip(texts, out, strict=True)]  # fmt: skip

    encoder.backend = DropsFirstToken(encoder.backend)
    requests = tricky_requests(seed=2)
    with caplog.at_level(logging.WARNING):
        got = encoder.encode_many(requests)
    assert encoder.backend is None and "split tokenisation differs" in caplog.text
    assert got == [one_string_at_a_time(tokenizer, c, t, "joint") for c, t in requests]
