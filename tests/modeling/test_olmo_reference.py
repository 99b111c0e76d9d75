"""Parity with the real reference: OLMo's own model code (``ai2-olmo`` 0.6.0, ``olmo/model.py``).

The paper trained its models with a fork of OLMo (the fork of its sibling CoLoR-Filter paper,
``davidbrandfonbrener/color-filter-olmo``, has the same layout). For the architecture the paper uses
(sequential pre-norm blocks, fused q|k|v, full-width QK-LayerNorm, RoPE, exact GELU, weight-only
LayerNorms, untied head, "mitchell" init) that fork and ai2-olmo 0.6.0 compute the same function
and draw the same initial distributions; the differences are in naming and configuration only:

- the fork calls the untied head ``transformer.ff_out_last`` (ai2-olmo: ``transformer.ff_out``);
- the fork hard-codes LayerNorm eps 1e-5 and RoPE theta 10000 (no ``layer_norm_eps`` or
  ``rope_theta`` field in its ``ModelConfig``), which are ai2-olmo's defaults;
- the fork's mitchell init always truncates at 3 std, as ai2-olmo's does when
  ``init_cutoff_factor`` is None (the paper's setting).

So a model built by ai2-olmo, saved in the fork's layout and converted with
``convert_olmo_checkpoint``, must give OLMo's logits (fp32, CPU), and ``L2LForCausalLM``'s own
random init must draw every tensor with OLMo's standard deviation.

Needs ``pip install --no-deps ai2-olmo==0.6.0`` plus the light modules that ``olmo/config.py``
imports at module level (see ``_INSTALL_HINT``); skipped with that hint when OLMo does not import.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

_INSTALL_HINT = "pip install --no-deps -r tests/requirements-olmo.txt"
try:
    from olmo.config import ActivationType, BlockType, InitFnType, LayerNormType, ModelConfig
    from olmo.model import OLMo
except ImportError as error:  # not installed, or one of its import-time modules is missing
    pytest.skip(
        f"the reference OLMo implementation (ai2-olmo 0.6.0) is not importable ({error}); "
        f"to run these parity tests: {_INSTALL_HINT}",
        allow_module_level=True,
    )

from modeling_l2l import L2LConfig, L2LForCausalLM, convert_olmo_checkpoint  # noqa: E402

CONTEXT = 512


def paper_model_config(d_model=128, n_heads=2, n_layers=2, vocab_size=250, embedding_size=256):
    """An ai2-olmo ``ModelConfig`` with the paper's architecture (every field that matters set).

    Values follow the fork's released training config (``configs/base.yaml``): rope,
    attention_layer_norm (+affine), no biases anywhere (``include_bias`` and
    ``bias_for_layer_norm`` False), default LayerNorm with affine, exact GELU MLP of ratio 4,
    sequential block, untied head, mitchell init, no dropout, context 512. A vocabulary that is
    not a multiple of 128 padded to ``embedding_size`` as OLMo does (logits cover the padding).
    """
    return ModelConfig(
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=None,
        n_layers=n_layers,
        mlp_ratio=4,
        mlp_hidden_size=None,
        activation_type=ActivationType.gelu,
        block_type=BlockType.sequential,
        block_group_size=1,
        alibi=False,
        rope=True,
        rope_full_precision=True,
        rope_theta=10_000,
        flash_attention=False,
        attention_dropout=0.0,
        residual_dropout=0.0,
        embedding_dropout=0.0,
        multi_query_attention=None,
        attention_layer_norm=True,
        attention_layer_norm_with_affine=True,
        embedding_layer_norm=False,
        layer_norm_type=LayerNormType.default,
        layer_norm_with_affine=True,
        layer_norm_eps=1e-5,
        include_bias=False,
        bias_for_layer_norm=False,
        clip_qkv=None,
        scale_logits=False,
        norm_after=False,
        max_sequence_length=CONTEXT,
        vocab_size=vocab_size,
        embedding_size=embedding_size,
        weight_tying=False,
        eos_token_id=0,
        pad_token_id=1,
        init_device="cpu",
        init_fn=InitFnType.mitchell,
        init_cutoff_factor=None,
    )


def build_olmo(config: ModelConfig, seed: int) -> OLMo:
    """OLMo's model, randomly initialised by its own ``reset_parameters`` (mitchell), fp32, eval."""
    # OLMo.__init__ flips two global CUDA SDPA switches; restore them for the rest of the session.
    flash, mem_efficient = (
        torch.backends.cuda.flash_sdp_enabled(),
        torch.backends.cuda.mem_efficient_sdp_enabled(),
    )
    torch.manual_seed(seed)
    try:
        model = OLMo(config)
    finally:
        torch.backends.cuda.enable_flash_sdp(flash)
        torch.backends.cuda.enable_mem_efficient_sdp(mem_efficient)
    return model.float().eval()


def perturb_norms(model: OLMo, seed: int) -> None:
    """Move every LayerNorm weight away from its init of ones: a swapped or dropped norm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:  # the only vectors: LayerNorm weights (no biases)
                parameter.copy_(1.0 + 0.3 * torch.randn(parameter.shape, generator=g))


def save_in_fork_layout(model: OLMo, config: ModelConfig, folder: Path, head_name: str) -> Path:
    """``config.json`` (the ModelConfig dict) and ``model.safetensors`` under OLMo's own names.

    OLMo's state-dict keys already start with ``transformer.`` (no ``model.`` prefix); only the
    untied head is renamed to the fork's ``ff_out_last`` when asked.
    """
    folder.mkdir(parents=True)
    tensors = {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
    assert all(name.startswith("transformer.") for name in tensors)
    if head_name != "ff_out":
        tensors[f"transformer.{head_name}.weight"] = tensors.pop("transformer.ff_out.weight")
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    return folder


@pytest.fixture(scope="module")
def olmo_and_converted(tmp_path_factory):
    """One reference model and its conversion, shared by the forward-parity tests."""
    config = paper_model_config()
    olmo = build_olmo(config, seed=0)
    perturb_norms(olmo, seed=1)
    root = tmp_path_factory.mktemp("olmo_reference")
    src = save_in_fork_layout(olmo, config, root / "olmo", head_name="ff_out_last")
    dst = convert_olmo_checkpoint(src, root / "hf")
    return olmo, dst


def olmo_logits(model: OLMo, ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, attention_mask=attention_mask).logits


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("batch, length", [(1, 7), (3, 64), (2, CONTEXT)])
def test_logits_match_olmo(olmo_and_converted, attn_implementation, batch, length):
    olmo, dst = olmo_and_converted
    model = L2LForCausalLM.from_pretrained(dst, attn_implementation=attn_implementation).eval()
    assert model.config.vocab_size == 256 and model.config.max_position_embeddings == CONTEXT
    ids = torch.randint(0, 250, (batch, length), generator=torch.Generator().manual_seed(length))
    expected = olmo_logits(olmo, ids)
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == expected.shape == (batch, length, 256)
    assert expected.std() > 0.5  # logits of order one, so the tolerance below is meaningful
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_padded_batch_matches_olmo(olmo_and_converted):
    """Left padding through both models' attention masks: equal logits on every real token."""
    olmo, dst = olmo_and_converted
    model = L2LForCausalLM.from_pretrained(dst).eval()
    ids = torch.randint(2, 250, (3, 40), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :9] = 0
    mask[2, :25] = 0
    ids = ids.masked_fill(mask == 0, 1)  # the pad id
    expected = olmo_logits(olmo, ids, attention_mask=mask)
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(logits[real], expected[real], rtol=1e-5, atol=1e-5)


def test_cached_decoding_matches_olmo(olmo_and_converted):
    """Prompt then token-by-token steps with KV caches on both sides: same next-token logits."""
    olmo, dst = olmo_and_converted
    model = L2LForCausalLM.from_pretrained(dst).eval()
    ids = torch.randint(0, 250, (2, 24), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(ids[:, :16], use_cache=True)
        theirs = olmo(ids[:, :16], use_cache=True)
        cache, past = ours.cache, theirs.attn_key_values
        for step in range(16, 24):
            ours = model(ids[:, step : step + 1], cache=cache, use_cache=True)
            theirs = olmo(ids[:, step : step + 1], past_key_values=past, use_cache=True)
            cache, past = ours.cache, theirs.attn_key_values
            torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-5)


def test_upstream_head_name_matches_olmo(tmp_path):
    """A checkpoint saved by ai2-olmo itself (head ``transformer.ff_out``) converts as well."""
    config = paper_model_config(
        d_model=64, n_heads=1, n_layers=3, vocab_size=128, embedding_size=128
    )
    olmo = build_olmo(config, seed=5)
    perturb_norms(olmo, seed=6)
    src = save_in_fork_layout(olmo, config, tmp_path / "olmo", head_name="ff_out")
    model = L2LForCausalLM.from_pretrained(convert_olmo_checkpoint(src, tmp_path / "hf")).eval()
    ids = torch.randint(0, 128, (2, 100), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, olmo_logits(olmo, ids), rtol=1e-5, atol=1e-5)


# --- initialisation ------------------------------------------------------------------------------

# truncated at +-3 std, a normal keeps this fraction of its std
_TRUNCATED_STD = math.sqrt(
    1 - 6 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / math.sqrt(2))
)


def olmo_init_tensors(model: OLMo, d: int, n_layers: int) -> dict[str, torch.Tensor]:
    """OLMo's initial tensors under a parameter-kind key shared with ``l2l_init_tensors``."""
    t = dict(model.named_parameters())
    out = {"embedding": t["transformer.wte.weight"], "head": t["transformer.ff_out.weight"]}
    out["final_norm"] = t["transformer.ln_f.weight"]
    for i in range(n_layers):
        p = f"transformer.blocks.{i}."
        q, k, v = t[p + "att_proj.weight"].split(d, dim=0)
        out.update(
            {
                f"{i}.q": q,
                f"{i}.k": k,
                f"{i}.v": v,
                f"{i}.attn_out": t[p + "attn_out.weight"],
                f"{i}.ff_in": t[p + "ff_proj.weight"],
                f"{i}.ff_out": t[p + "ff_out.weight"],
                f"{i}.attn_norm": t[p + "attn_norm.weight"],
                f"{i}.q_norm": t[p + "q_norm.weight"],
                f"{i}.k_norm": t[p + "k_norm.weight"],
                f"{i}.ff_norm": t[p + "ff_norm.weight"],
            }
        )
    return out


def l2l_init_tensors(model: L2LForCausalLM, n_layers: int) -> dict[str, torch.Tensor]:
    out = {
        "embedding": model.model.embed_tokens.weight,
        "head": model.lm_head.weight,
        "final_norm": model.model.norm.weight,
    }
    for i in range(n_layers):
        layer = model.model.layers[i]
        out.update(
            {
                f"{i}.q": layer.self_attn.q_proj.weight,
                f"{i}.k": layer.self_attn.k_proj.weight,
                f"{i}.v": layer.self_attn.v_proj.weight,
                f"{i}.attn_out": layer.self_attn.o_proj.weight,
                f"{i}.ff_in": layer.mlp.up_proj.weight,
                f"{i}.ff_out": layer.mlp.down_proj.weight,
                f"{i}.attn_norm": layer.input_layernorm.weight,
                f"{i}.q_norm": layer.self_attn.q_norm.weight,
                f"{i}.k_norm": layer.self_attn.k_norm.weight,
                f"{i}.ff_norm": layer.post_attention_layernorm.weight,
            }
        )
    return out


def mitchell_std(kind: str, d: int) -> float:
    """The std (before truncation) that the mitchell init of olmo/model.py gives each kind."""
    if kind in ("embedding", "head"):
        return d**-0.5  # wte and the untied head (OLMo's transformer.ff_out): 1/sqrt(d_model)
    layer, name = kind.split(".")
    if name in ("q", "k", "v", "ff_in"):
        return d**-0.5  # att_proj and ff_proj: 1/sqrt(d_model), the same in every block
    depth = math.sqrt(2 * (int(layer) + 1))
    if name == "attn_out":
        return 1 / (math.sqrt(d) * depth)
    if name == "ff_out":
        return 1 / (math.sqrt(4 * d) * depth)  # fan-in of ff_out is the MLP width 4d
    raise KeyError(kind)


def test_init_matches_olmo_mitchell():
    d, n_layers, vocab = 256, 4, 1024
    config = paper_model_config(
        d_model=d, n_heads=4, n_layers=n_layers, vocab_size=vocab, embedding_size=vocab
    )
    olmo = olmo_init_tensors(build_olmo(config, seed=0), d, n_layers)
    torch.manual_seed(0)
    ours_model = L2LForCausalLM(
        L2LConfig.from_depth(n_layers, hidden_size=d, vocab_size=vocab, max_position_embeddings=512)
    )
    ours = l2l_init_tensors(ours_model, n_layers)
    assert ours.keys() == olmo.keys()

    for kind in olmo:
        theirs, mine = olmo[kind].detach().double(), ours[kind].detach().double()
        assert theirs.shape == mine.shape, kind
        if kind.endswith("norm"):  # LayerNorm weights start at one, no bias anywhere
            assert torch.equal(theirs, torch.ones_like(theirs)), kind
            assert torch.equal(mine, torch.ones_like(mine)), kind
            continue
        sigma = mitchell_std(kind, d)
        for who, w in (("olmo", theirs), ("l2l", mine)):
            # sampling error of a std over >= 65k entries is below 0.3%; 2% catches any wrong factor
            assert w.std().item() == pytest.approx(sigma * _TRUNCATED_STD, rel=0.02), (who, kind)
            assert abs(w.mean().item()) < 0.02 * sigma, (who, kind)
            assert w.abs().max().item() <= 3 * sigma * (1 + 1e-6), (who, kind)  # cut at 3 std
            assert w.abs().max().item() > 2.5 * sigma, (who, kind)  # and a normal, not a uniform
        assert mine.std().item() == pytest.approx(theirs.std().item(), rel=0.02), kind

    # the depth scaling 1/sqrt(2 (i + 1)) of the two output projections, block by block
    for name in ("attn_out", "ff_out"):
        for i in range(1, n_layers):
            for tensors in (olmo, ours):
                ratio = tensors[f"{i}.{name}"].std() / tensors[f"0.{name}"].std()
                assert ratio.item() == pytest.approx(1 / math.sqrt(i + 1), rel=0.02), (name, i)
