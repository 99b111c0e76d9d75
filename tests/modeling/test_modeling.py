"""The decoder's architecture, init, Auto registration, save/load, generation and bad input."""

from __future__ import annotations

import csv
import inspect
import math

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from modeling_l2l import (
    PAPER_DEPTHS,
    L2LConfig,
    L2LForCausalLM,
    L2LModel,
    paper_param_count,
    peak_flops_for_device,
)
from tests.conftest import shared_path
from tests.modeling.conftest import (
    assert_bf16_tracks_fp32,
    future_tokens_visible,
    padded_batch,
    tiny_config,
)


@pytest.mark.parametrize("n", PAPER_DEPTHS)
def test_parameter_count_matches_paper_formula(n):
    with torch.device("meta"):
        model = L2LForCausalLM(L2LConfig.from_depth(n))
    d = 64 * n
    assert (
        model.num_parameters()
        == paper_param_count(n)
        == 2 * 32000 * d + n * (12 * d * d + 4 * d) + d
    )


def test_paper_param_count_at_depth_4():
    assert paper_param_count(4) == 19_534_080


def test_parameter_count_matches_released_sweep():
    rows = list(csv.DictReader(open(shared_path("l2l", "sweep.csv"))))
    sizes = {
        (int(float(r["n_layers"])), int(float(r["d_model"])), int(float(r["params"]))) for r in rows
    }
    assert len(sizes) >= 20
    for n, d, params in sizes:
        assert n in PAPER_DEPTHS and d == 64 * n
        assert paper_param_count(n) == params


def test_from_depth_preset():
    config = L2LConfig.from_depth(8)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (512, 8, 8)
    assert (config.head_dim, config.intermediate_size, config.vocab_size) == (64, 2048, 32000)
    assert config.max_position_embeddings == 512 and config.rope_theta == 10000.0
    assert config.layer_norm_eps == 1e-5 and config.tie_word_embeddings is False
    # an overridden width keeps the derived sizes consistent
    wide = L2LConfig.from_depth(4, hidden_size=512)
    assert (wide.head_dim, wide.intermediate_size) == (128, 2048)


def test_module_names_follow_transformers():
    names = set(L2LForCausalLM(tiny_config()).state_dict())
    expected = {
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.self_attn.q_norm.weight",
        "model.layers.0.self_attn.k_norm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    }
    assert expected <= names
    assert not any(name.endswith(".bias") for name in names)


def test_mitchell_init():
    torch.manual_seed(0)
    config = L2LConfig.from_depth(3, vocab_size=2048)
    model = L2LForCausalLM(config)
    # a normal truncated at 3 std has std 0.98654 of the untruncated one
    trunc = 0.986537
    d = config.hidden_size
    for name, param in model.named_parameters():
        if param.ndim == 1:
            assert torch.equal(param, torch.ones_like(param)), name
            continue
        std = param.shape[1] ** -0.5
        if "o_proj" in name or "down_proj" in name:
            std /= math.sqrt(2 * (int(name.split(".")[2]) + 1))
        if "embed_tokens" in name:
            std = d**-0.5
        assert param.std().item() == pytest.approx(std * trunc, rel=0.03), name
        assert param.abs().max().item() <= 3 * std + 1e-7, name
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_forward_loss_and_shapes(tiny_model):
    ids = torch.randint(0, 96, (2, 10))
    out = tiny_model(ids, labels=ids)
    assert out.logits.shape == (2, 10, 96)
    # at init the loss is near log(V)
    assert abs(out.loss.item() - math.log(96)) < 1.0
    manual = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, 96), ids[:, 1:].reshape(-1)
    )
    torch.testing.assert_close(out.loss, manual)


def test_auto_classes_resolve():
    config = AutoConfig.for_model(
        "l2l", vocab_size=96, hidden_size=128, num_hidden_layers=2, num_attention_heads=2
    )
    assert isinstance(config, L2LConfig)
    assert type(AutoModel.from_config(config)) is L2LModel
    assert type(AutoModelForCausalLM.from_config(config)) is L2LForCausalLM


def test_save_load_round_trip(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_l2l.py", "configuration_l2l.py"} <= files
    config = AutoConfig.from_pretrained(tmp_path)
    assert set(config.auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is L2LForCausalLM
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, tiny_model(ids).logits, rtol=0, atol=0)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is L2LModel
    torch.testing.assert_close(base.embed_tokens.weight, tiny_model.model.embed_tokens.weight)


def test_cached_and_uncached_greedy_generation_agree(tiny_model):
    prompt = torch.randint(0, 96, (2, 5))
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = tiny_model.generate(prompt, use_cache=True, **kwargs)
    uncached = tiny_model.generate(prompt, use_cache=False, **kwargs)
    assert cached.shape == (2, 17)
    assert torch.equal(cached, uncached)


def test_cached_forward_matches_full_forward(tiny_model):
    ids = torch.randint(0, 96, (1, 9))
    with torch.no_grad():
        full = tiny_model(ids).logits
        first = tiny_model(ids[:, :6], use_cache=True)
        rest = tiny_model(ids[:, 6:], cache=first.cache, use_cache=True)
    torch.testing.assert_close(rest.logits, full[:, 6:], rtol=1e-5, atol=1e-5)


def test_left_padding_matches_unpadded(tiny_model):
    ids = torch.randint(1, 96, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat(
        [torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 7, dtype=torch.long)], dim=1
    )
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = tiny_model(ids).logits
        left = tiny_model(padded, attention_mask=mask, position_ids=position_ids).logits[:, 3:]
    torch.testing.assert_close(left, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("other", ["eager", "flex_attention"])
def test_sdpa_and_other_attention_implementations_agree(other):
    """Every implementation the model declares (``_supports_*``) that runs on a CPU; flash
    attention needs a GPU (tests/modeling/test_gpu.py)."""
    torch.manual_seed(0)
    sdpa = L2LForCausalLM(tiny_config(attn_implementation="sdpa")).eval()
    second = L2LForCausalLM(tiny_config(attn_implementation=other)).eval()
    second.load_state_dict(sdpa.state_dict())
    assert (sdpa.config._attn_implementation, second.config._attn_implementation) == ("sdpa", other)
    ids = torch.randint(0, 96, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(sdpa(ids).logits, second(ids).logits, rtol=1e-4, atol=1e-4)


def test_output_hidden_states_and_attentions():
    torch.manual_seed(0)
    model = L2LForCausalLM(tiny_config(attn_implementation="eager")).eval()
    out = model(torch.randint(0, 96, (1, 6)), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    # causal: no attention to the future
    assert out.attentions[0][0, :, 0, 1:].abs().max() == 0


def test_flops_per_token_formula():
    config = L2LConfig.from_depth(8)
    with torch.device("meta"):
        model = L2LForCausalLM(config)
    n, d, V = 8, 512, 32000
    n_matmul = n * 12 * d * d + V * d
    assert model.num_matmul_params() == n_matmul
    assert model.num_flops_per_token() == 6 * n_matmul + 12 * n * d * 512
    assert model.num_flops_per_token(seq_len=128) == 6 * n_matmul + 12 * n * d * 128
    mfu = model.estimate_mfu(1e5, peak_flops=1e15)
    assert mfu == pytest.approx(1e5 * model.num_flops_per_token() / 1e15)


def test_peak_flops_table():
    assert peak_flops_for_device("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for_device("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_for_device("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for_device("NVIDIA H200") == 989e12
    assert peak_flops_for_device("NVIDIA L40") == 181e12  # not the L4's entry
    assert peak_flops_for_device("Some Unknown GPU") is None


def test_mfu_refuses_unknown_device(tiny_model):
    with pytest.raises(ValueError, match="peak_flops"):
        tiny_model.estimate_mfu(1000.0)  # the CPU has no entry in the table


def test_heads_not_dividing_width_raise():
    with pytest.raises(ValueError, match="does not divide hidden_size"):
        L2LConfig.from_depth(4, num_attention_heads=3)
    with pytest.raises(ValueError, match="must equal hidden_size"):
        L2LConfig.from_depth(4, head_dim=32)


def test_sequence_longer_than_context_raises(tiny_model):
    with pytest.raises(ValueError, match="position 32 is beyond the context.*max_position_embeddings=32"):
        tiny_model(torch.zeros(1, 33, dtype=torch.long))
    # the cache counts too
    out = tiny_model(torch.zeros(1, 30, dtype=torch.long), use_cache=True)
    with pytest.raises(ValueError, match="position 32 .*30 cached \\+ 3 new"):
        tiny_model(torch.zeros(1, 3, dtype=torch.long), cache=out.cache)


def test_wrong_config_field_or_type_raises():
    with pytest.raises(ValueError, match="did you mean 'hidden_size'"):
        L2LConfig.from_depth(4, hidden_sise=512)
    with pytest.raises(ValueError, match="hidden_size.*expected int"):
        L2LConfig.from_depth(4, hidden_size="512")
    with pytest.raises(ValueError, match="hidden_act"):
        L2LConfig.from_depth(4, hidden_act="gleu")
    with pytest.raises(ValueError, match="positive int"):
        L2LConfig.from_depth(0)


def test_input_ids_and_embeds_are_exclusive(tiny_model):
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one"):
        tiny_model(input_ids=ids, inputs_embeds=tiny_model.model.embed_tokens(ids))


def test_rope_stays_fp32_after_casting_the_model():
    model = L2LForCausalLM(tiny_config(max_position_embeddings=512)).to(torch.bfloat16)
    positions = torch.arange(512)[None]
    x = torch.zeros(1, 512, 8, dtype=torch.bfloat16)
    cos, sin = model.model.rotary_emb(x, positions)
    assert cos.dtype == torch.float32
    head = model.config.head_dim
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, head, 2, dtype=torch.float64) / head)
    angles = torch.outer(torch.arange(512, dtype=torch.float64), inv_freq)
    torch.testing.assert_close(sin[0, :, : head // 2].double(), angles.sin(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_bfloat16_forward_tracks_float32(attn_implementation):
    torch.manual_seed(0)
    model = L2LForCausalLM(tiny_config(attn_implementation=attn_implementation)).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        reference = model(ids, attention_mask=mask).logits
        low = model.to(torch.bfloat16)
        assert_bf16_tracks_fp32(low(ids, attention_mask=mask).logits, reference, mask)
        # the check fails on a broken mask: one future token visible, or the padding
        with future_tokens_visible(), pytest.raises(AssertionError, match="bf16 logits differ"):
            assert_bf16_tracks_fp32(low(ids, attention_mask=mask).logits, reference, mask)
        with pytest.raises(AssertionError, match="bf16 logits differ"):
            assert_bf16_tracks_fp32(low(ids).logits, reference, mask)


def test_forward_annotations_are_evaluated():
    """transformers reads the `kwargs: Unpack[TransformersKwargs]` annotation of forward to learn
    which outputs a model can return; with string annotations (`from __future__ import
    annotations`) its common tests took the model for one without output_attentions."""
    for model_class in (L2LModel, L2LForCausalLM):
        kwargs = inspect.signature(model_class.forward).parameters["kwargs"]
        assert "output_attentions" in kwargs.annotation.__args__[0].__annotations__


def test_no_split_modules_for_device_maps(tiny_model):
    assert tiny_model._no_split_modules == {"L2LDecoderLayer"}
    assert tiny_model.supports_gradient_checkpointing


def test_device_map_auto_offloads_whole_layers_with_identical_logits(tmp_path):
    """``device_map="auto"`` with too little memory for the model: accelerate places whole
    decoder layers (``_no_split_modules``) on the CPU and offloads the rest to disk, and the
    dispatched model computes the same logits."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = L2LForCausalLM(tiny_config(num_hidden_layers=4)).eval()
    model.save_pretrained(tmp_path / "model")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    dispatched = AutoModelForCausalLM.from_pretrained(
        tmp_path / "model", device_map="auto", max_memory={"cpu": size // 2},
        offload_folder=str(tmp_path / "offload"))
    placement = dispatched.hf_device_map
    assert {"cpu", "disk"} <= set(placement.values())
    assert not [name for name in placement if name.startswith("model.layers.")
                and name.count(".") > 2]  # never a part of a layer
    ids = torch.randint(0, 96, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(dispatched(ids).logits, model(ids).logits)


def test_compiles_without_graph_breaks(tiny_model):
    # backend="eager" runs dynamo's tracing (where graph breaks happen) without code generation
    compiled = torch.compile(tiny_model, fullgraph=True, backend="eager")
    ids = torch.randint(0, 96, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids, use_cache=False).logits, tiny_model(ids).logits)
