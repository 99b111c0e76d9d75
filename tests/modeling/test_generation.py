"""Generation and the key/value cache, as transformers' own decoders behave at the newest release.

What transformers' common generation tests check, written for this model: every decoding mode
gives the same tokens with and without the cache, generation continues from a returned cache and
starts from ``inputs_embeds``, the static cache and compiled decoding work, packed rows equal the
same sequences run one by one, and the context guard holds during generation.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import StaticCache

from modeling_l2l import L2LForCausalLM
from tests.modeling.conftest import tiny_config

GREEDY = dict(do_sample=False, pad_token_id=0, eos_token_id=None)


def _prompt(batch: int = 2, length: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 96, (batch, length), generator=torch.Generator().manual_seed(seed))


def _seeded(model, seed: int, **kwargs) -> torch.Tensor:
    torch.manual_seed(seed)
    return model.generate(**kwargs)


@pytest.mark.parametrize(
    "mode",
    [
        dict(do_sample=False),
        dict(do_sample=True, top_k=0, temperature=1.0),
        dict(do_sample=False, num_beams=3, num_return_sequences=2),
    ],
    ids=["greedy", "sampling", "beam_search"],
)
def test_every_decoding_mode_is_the_same_with_and_without_the_cache(tiny_model, mode):
    kwargs = dict(input_ids=_prompt(), max_new_tokens=12, pad_token_id=0, eos_token_id=None, **mode)
    cached = _seeded(tiny_model, 7, use_cache=True, **kwargs)
    uncached = _seeded(tiny_model, 7, use_cache=False, **kwargs)
    assert cached.shape == (2 * mode.get("num_return_sequences", 1), 17)
    assert torch.equal(cached, uncached)


def test_greedy_generation_equals_full_context_argmax(tiny_model):
    """Each generated token is the argmax of an uncached forward over everything before it."""
    sequence = tiny_model.generate(_prompt(batch=1), max_new_tokens=10, **GREEDY)
    with torch.no_grad():
        for end in range(5, sequence.shape[1]):
            logits = tiny_model(sequence[:, :end], use_cache=False).logits[:, -1]
            assert logits.argmax(-1).item() == sequence[0, end].item()


def test_generate_returns_the_cache_and_continues_from_it(tiny_model):
    prompt = _prompt()
    first = tiny_model.generate(
        prompt, max_new_tokens=6, return_dict_in_generate=True, **GREEDY
    )
    assert first.cache is not None
    # the cache holds every token but the last generated one, whose keys were never computed
    assert first.cache.get_seq_length() == first.sequences.shape[1] - 1
    continued = tiny_model.generate(first.sequences, cache=first.cache, max_new_tokens=6, **GREEDY)
    in_one_go = tiny_model.generate(prompt, max_new_tokens=12, **GREEDY)
    assert torch.equal(continued, in_one_go)


def test_generation_from_inputs_embeds_equals_generation_from_ids(tiny_model):
    prompt = _prompt()
    embeds = tiny_model.get_input_embeddings()(prompt)
    from_embeds = tiny_model.generate(inputs_embeds=embeds, max_new_tokens=8, **GREEDY)
    from_ids = tiny_model.generate(prompt, max_new_tokens=8, **GREEDY)
    assert torch.equal(from_embeds, from_ids[:, prompt.shape[1]:])  # only the new tokens


def test_left_padded_batch_generates_what_each_row_generates_alone(tiny_model):
    short, long = _prompt(batch=1, length=3, seed=2), _prompt(batch=1, length=6, seed=3)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = (torch.arange(6) >= torch.tensor([[3], [0]])).long()
    together = tiny_model.generate(batch, attention_mask=mask, max_new_tokens=8, **GREEDY)
    assert torch.equal(together[0, 3:], tiny_model.generate(short, max_new_tokens=8, **GREEDY)[0])
    assert torch.equal(together[1], tiny_model.generate(long, max_new_tokens=8, **GREEDY)[0])


def test_static_cache_generation_equals_dynamic(tiny_model):
    prompt = _prompt()
    static = tiny_model.generate(
        prompt, max_new_tokens=10, cache_implementation="static", **GREEDY
    )
    dynamic = tiny_model.generate(prompt, max_new_tokens=10, **GREEDY)
    assert torch.equal(static, dynamic)


def test_static_cache_decoding_step_by_step_matches_full_forward(tiny_model):
    ids = _prompt(batch=2, length=9)
    cache = StaticCache(config=tiny_model.config, max_cache_len=tiny_model.config.max_position_embeddings)
    with torch.no_grad():
        full = tiny_model(ids, use_cache=False).logits
        first = tiny_model(ids[:, :6], cache=cache, use_cache=True)
        torch.testing.assert_close(first.logits, full[:, :6], rtol=1e-5, atol=1e-5)
        for step in range(6, 9):
            out = tiny_model(ids[:, step : step + 1], cache=cache, use_cache=True)
            torch.testing.assert_close(out.logits[:, 0], full[:, step], rtol=1e-5, atol=1e-5)


def test_compiled_generation_with_a_static_cache_traces_whole_and_matches_eager(tiny_model):
    """Compiled decoding: the forward compiled with ``fullgraph=True`` (any graph break raises)
    over a static cache, as transformers does on a GPU. ``backend="eager"`` runs dynamo's full
    tracing without code generation, which the CPU test budget allows."""
    prompt = _prompt()
    eager = tiny_model.generate(prompt, max_new_tokens=8, cache_implementation="static", **GREEDY)
    tiny_model.forward = torch.compile(tiny_model.forward, fullgraph=True, backend="eager")
    try:
        compiled = tiny_model.generate(
            prompt, max_new_tokens=8, cache_implementation="static", **GREEDY
        )
    finally:
        del tiny_model.forward
    assert torch.equal(compiled, eager)


@pytest.mark.slow
def test_inductor_compiled_forward_fullgraph_matches_eager(tiny_model):
    """Real code generation (inductor, C++ on the CPU) of the whole forward in one graph."""
    torch._dynamo.reset()
    compiled = torch.compile(tiny_model, fullgraph=True)
    ids = _prompt(batch=2, length=16)
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(ids, use_cache=False).logits, tiny_model(ids, use_cache=False).logits,
            rtol=1e-4, atol=1e-4,
        )


@pytest.mark.parametrize("implementation", ["sdpa", "eager", "flex_attention"])
def test_packed_rows_equal_the_sequences_run_separately(implementation):
    """Padding-free packing: documents concatenated in one row, ``position_ids`` restarting at 0
    at each, no attention mask. The row is longer than the context (38) while every position is
    inside it, so the context guard must look at positions, not at the row's length."""
    torch.manual_seed(0)
    model = L2LForCausalLM(tiny_config(max_position_embeddings=38, attn_implementation=implementation))
    model.eval()
    lengths = (30, 25, 15)
    documents = [_prompt(batch=1, length=n, seed=10 + i) for i, n in enumerate(lengths)]
    packed = torch.cat(documents, dim=1)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        together = model(packed, position_ids=position_ids, use_cache=False).logits
        alone = torch.cat([model(doc, use_cache=False).logits for doc in documents], dim=1)
    assert packed.shape[1] == 70 > model.config.max_position_embeddings
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_generation_stops_at_the_context(tiny_model):
    """32 positions: a prompt of 20 may grow by 13 tokens (the 13th is predicted at position 31
    and never enters the model), not by 14."""
    prompt = _prompt(batch=1, length=20)
    assert tiny_model.generate(prompt, max_new_tokens=13, **GREEDY).shape[1] == 33
    for use_cache in (True, False):
        with pytest.raises(ValueError, match="position 32 is beyond the context"):
            tiny_model.generate(prompt, max_new_tokens=14, use_cache=use_cache, **GREEDY)


def test_position_ids_beyond_the_context_raise(tiny_model):
    ids = _prompt(batch=1, length=4)
    with pytest.raises(ValueError, match="position 40 is beyond the context.*=32"):
        tiny_model(ids, position_ids=torch.tensor([[0, 1, 2, 40]]))


def test_no_deprecation_warning_in_forward_or_generate(tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        out = tiny_model(_prompt(), use_cache=True)
        tiny_model(_prompt(length=1), cache=out.cache)
        tiny_model.generate(_prompt(), max_new_tokens=4, **GREEDY)


def test_the_old_cache_argument_name_still_works(tiny_model):
    """``past_key_values=`` is deprecated in transformers (removed in 5.40) but accepted."""
    ids = _prompt(length=9)
    with torch.no_grad():
        full = tiny_model(ids).logits
        first = tiny_model(ids[:, :6], use_cache=True)
        with pytest.warns(FutureWarning, match="past_key_values"):
            rest = tiny_model(ids[:, 6:], past_key_values=first.cache)
    torch.testing.assert_close(rest.logits, full[:, 6:], rtol=1e-5, atol=1e-5)
