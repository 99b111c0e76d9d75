"""The loss-to-loss decoder (Brandfonbrener et al. 2024, arXiv 2411.12925, Table 7) in transformers.

The architecture of the paper's OLMo-fork checkpoints, with transformers' module names so that
``save_pretrained`` needs no key mapping. Compared with the nearest transformers models:

- OLMo (``models/olmo``): same pre-norm block ``x += attn(LN(x)); x += mlp(LN(x))``, same fp32 RoPE
  over the full head, no biases. OLMo's LayerNorms have no weight, ours have a weight (no bias); we
  add QK-LayerNorm; our MLP is ``d -> 4d -> d`` with exact GELU (OLMo: SwiGLU).
- OLMo2 (``models/olmo2``): OLMo2 also normalises q and k over the full width before the head split,
  but with RMSNorm, and it normalises the *outputs* of attention and MLP ("reordered norm"); here
  every norm is a mean-centring LayerNorm on the branch *input*, and the MLP is GELU, not SwiGLU.

Architecture only: no optimizer, data or training code. This file is copied beside the weights for
``trust_remote_code`` loading, so it imports this package only relatively (``.configuration_l2l``).
"""

import math
import os
from collections.abc import Callable

import torch
import torch.nn as nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import (
    ALL_ATTENTION_FUNCTIONS,
    PreTrainedModel,
    slice_logits_to_keep,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_l2l import AUTO_MAP, L2LConfig

# Dense (no sparsity) bf16 tensor-core peak FLOP/s by device name, from the vendors' datasheets.
# Matched by substring of `torch.cuda.get_device_name()`, first match wins, so specific names
# ("H100 NVL") come before general ones ("H100"). V100 and T4 have no bf16: their fp16 peak.
PEAK_FLOPS_BY_DEVICE: tuple[tuple[str, float], ...] = (
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("H200", 989e12),  # also GH200
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("V100", 125e12),
    ("T4", 65e12),
    ("MI300X", 1307e12),
    ("MI250X", 383e12),
)


def peak_flops_for_device(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU from its name, or None when the name is not in the table."""
    for key, flops in PEAK_FLOPS_BY_DEVICE:
        if key.lower() in device_name.lower():
            return flops
    return None


def _first(names: list[str], shown: int = 3) -> str:
    """The first few of a list of names, for an error message."""
    more = f", ... and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


class L2LRotaryEmbedding(nn.Module):
    """RoPE with the rotate-half convention over the full head dimension, computed in fp32.

    Identical to transformers' default rotary embedding, except that cos/sin stay in fp32 (the OLMo
    fork's ``rope_full_precision``) and the frequencies are recomputed in fp32 at every call rather
    than kept in a buffer, which ``model.to(torch.bfloat16)`` would round (an error of up to ~2
    radians at position 511).
    """

    def __init__(self, config: L2LConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.rope_theta = config.rope_theta

    def inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
        return 1.0 / (self.rope_theta ** (exponents / self.head_dim))

    @torch.no_grad()
    def forward(
        self, x: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            freqs = position_ids[..., None].float() * self.inv_freq(x.device)
            angles = torch.cat((freqs, freqs), dim=-1)
            return angles.cos(), angles.sin()


def residual_init_scale(layer_idx: int) -> float:
    """Mitchell init: the residual-branch outputs of block ``i`` get their std divided by this."""
    return math.sqrt(2.0 * (layer_idx + 1))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k of shape (batch, heads, seq, head_dim) in fp32, then cast back."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q32, k32 = q.float(), k.float()
    q_rot = q32 * cos + rotate_half(q32) * sin
    k_rot = k32 * cos + rotate_half(k32) * sin
    return q_rot.to(q.dtype), k_rot.to(k.dtype)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention in plain matmuls (softmax in fp32); the mask is additive and causal."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


class L2LAttention(nn.Module):
    """Causal multi-head attention with QK-LayerNorm over the full width and RoPE.

    Identical to OLMo2 attention except: the q/k norms are weight-only LayerNorms (OLMo2: RMSNorm),
    RoPE is applied in fp32, and there is no grouped-query attention.
    """

    def __init__(self, config: L2LConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = 1  # read by transformers' attention functions
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        width = config.num_attention_heads * config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.o_proj = nn.Linear(width, config.hidden_size, bias=False)
        self.o_proj.init_depth_scale = residual_init_scale(layer_idx)
        # Normalise q and k over the full width d, before splitting into heads (the paper's choice).
        self.q_norm = nn.LayerNorm(width, eps=config.layer_norm_eps, bias=False)
        self.k_norm = nn.LayerNorm(width, eps=config.layer_norm_eps, bias=False)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query = self.q_norm(self.q_proj(hidden_states)).view(hidden_shape).transpose(1, 2)
        key = self.k_norm(self.k_proj(hidden_states)).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)

        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(output), weights


class L2LMLP(nn.Module):
    """``d -> 4d -> d`` with exact GELU (OLMo2 and Llama use a SwiGLU with a third, gate, matrix)."""

    def __init__(self, config: L2LConfig, layer_idx: int):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.down_proj.init_depth_scale = residual_init_scale(layer_idx)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(x)))


class L2LDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: ``x += attn(LN(x)); x += mlp(LN(x))``.

    Same order as OLMo 1 and Llama; OLMo2 instead normalises the branch outputs. The names follow
    Llama: ``post_attention_layernorm`` is the norm in front of the MLP.
    """

    def __init__(self, config: L2LConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(
            config.hidden_size, eps=config.layer_norm_eps, bias=False
        )
        self.self_attn = L2LAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(
            config.hidden_size, eps=config.layer_norm_eps, bias=False
        )
        self.mlp = L2LMLP(config, layer_idx)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attn_out, _ = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + attn_out
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class L2LPreTrainedModel(PreTrainedModel):
    config_class = L2LConfig
    config: L2LConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["L2LDecoderLayer"]
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": L2LDecoderLayer, "attentions": L2LAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The OLMo fork's "mitchell" init.

        Every matrix is drawn from a normal with std ``1/sqrt(fan_in)`` truncated at
        ``initializer_cutoff_factor`` (3) std; the two output projections of block ``i`` (attention
        out, MLP down) are further divided by ``sqrt(2 (i + 1))``. Embedding and head use
        ``1/sqrt(d)``, norms start at one. Goes through ``transformers.initialization``, whose
        functions skip tensors already loaded from a checkpoint.
        """
        cutoff = self.config.initializer_cutoff_factor

        def truncated_normal(weight: torch.Tensor, std: float) -> None:
            init.trunc_normal_(weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)

        if isinstance(module, nn.Linear):
            # std 1/sqrt(fan_in) for q, k, v, up_proj and the head; o_proj and down_proj carry the
            # extra 1/sqrt(2 (i + 1)) of their block i. The per-Linear dispatch matters: for remote
            # code, transformers skips init of modules that hold no parameter of their own.
            std = module.in_features**-0.5 / getattr(module, "init_depth_scale", 1.0)
            truncated_normal(module.weight, std)
        elif isinstance(module, nn.Embedding):
            truncated_normal(module.weight, self.config.hidden_size**-0.5)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' loader, with two refusals: pickled weights, and weights of another model.

        - Weights load from ``model.safetensors`` (or its sharded index) only; a folder or repo
          holding only a pickled ``pytorch_model.bin`` is refused, since unpickling can run code.
        - As in transformers, a base checkpoint loads into a head model through
          ``base_model_prefix`` (the head is initialised) and a head checkpoint into the base model
          (the head's tensors are left out); transformers logs its load report as a warning and
          ``output_loading_info=True`` returns it. Tensors of different shapes are an error unless
          ``ignore_mismatched_sizes=True`` (transformers' rule).
        - The decoder itself must load whole: a config whose blocks the checkpoint lacks (more
          layers than the weights), a checkpoint with blocks the config has no place for (fewer),
          or one of which no tensor is a parameter of the model, is a ``ValueError``, not a model
          with random blocks and a line in a log.
        """
        if kwargs.get("use_safetensors") is False or kwargs.get("gguf_file"):
            raise ValueError(
                f"{cls.__name__}.from_pretrained: weights load from safetensors only "
                "(use_safetensors=False and gguf_file are refused)."
            )
        path = pretrained_model_name_or_path
        if path is not None and os.path.isfile(path) and not str(path).endswith(".safetensors"):
            raise ValueError(
                f"{cls.__name__}.from_pretrained: {path} is not a .safetensors file; weights load "
                "from safetensors only."
            )
        kwargs["use_safetensors"] = True
        # transformers 5.25 kernelizes every loaded model by default, which needs the `kernels`
        # package and, for layers that name a Hub kernel, runs code fetched from the Hub. This
        # model's layers name none, so kernelizing could change nothing; off unless asked for.
        kwargs.setdefault("use_kernels", False)
        return_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(
                path, *model_args, output_loading_info=True, **kwargs
            )
        except OSError as error:
            if "safetensors" not in str(error):
                raise
            raise OSError(
                f"{cls.__name__}.from_pretrained: {path} has no safetensors weights "
                "(model.safetensors or model.safetensors.index.json). L2L weights load from "
                "safetensors only: a pickled checkpoint such as pytorch_model.bin can run code when "
                "it is loaded. Where you trust the file, load it with torch and save it again with "
                "save_pretrained, which writes safetensors."
            ) from error
        model._check_decoder_loaded_whole(path, info)
        return (model, info) if return_info else model

    def _check_decoder_loaded_whole(self, path, info: dict) -> None:
        """Raise unless every tensor of the decoder (the base model) came from the checkpoint
        and the checkpoint holds no decoder tensor the model lacks; the head may differ."""
        decoder_modules = {name for name, _ in self.base_model.named_children()}
        prefix = f"{self.base_model_prefix}."

        def in_decoder(key: str) -> bool:
            return key.removeprefix(prefix).split(".", 1)[0] in decoder_modules

        missing = sorted(key for key in info["missing_keys"] if in_decoder(key))
        unexpected = sorted(key for key in info["unexpected_keys"] if in_decoder(key))
        if not missing and not unexpected:
            return
        where = f"{type(self).__name__}.from_pretrained({path})"
        parameters = [name for name, _ in self.named_parameters()]
        if set(parameters) <= set(info["missing_keys"]):
            found = sorted(info["unexpected_keys"])
            raise ValueError(
                f"{where}: none of the checkpoint's tensors is a parameter of this model (it "
                f"holds {_first(found) if found else 'no tensor'}): is it an L2L checkpoint? An "
                "OLMo-fork run folder converts with `l2l convert` (modeling_l2l.convert_olmo)."
            )
        parts = []
        if missing:
            parts.append(f"{len(missing)} parameter(s) of the model are not in the checkpoint "
                         f"({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) of the checkpoint have no place in the "
                         f"model ({_first(unexpected)})")
        raise ValueError(
            f"{where}: the config does not match the weights: {'; '.join(parts)}. Check "
            f"config.json (num_hidden_layers={self.config.num_hidden_layers}, "
            f"hidden_size={self.config.hidden_size}) against the checkpoint."
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers writes auto_map only for the config and the saved class; a user without this
        # package needs all three entries to load with AutoConfig, AutoModel or AutoModelForCausalLM.
        if self.is_remote_code():
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def num_matmul_params(self) -> int:
        """Parameters that enter a matrix multiply: every ``nn.Linear`` weight (head included).

        The input embedding is a lookup, not a matmul, and the LayerNorm weights are elementwise, so
        neither is counted. Works on the meta device.
        """
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))

    def num_flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token: ``6 N_matmul + 12 L d T``.

        Conventions (as nanochat's ``estimate_flops`` and torchtitan): each matmul weight costs 2
        FLOPs per token forward and 4 backward, hence ``6 N_matmul`` (``num_matmul_params``, LM head
        included, embedding excluded). Attention scores ``QK^T`` and the weighted sum ``AV`` cost
        ``2 * 2 d T`` forward per layer and token, times 3 with backward: ``12 L d T`` with ``d`` the
        attention width and ``T = seq_len`` (default: the context, 512). Causal masking is not
        discounted (half the scores are masked, the kernels still count them), activation
        recomputation is not counted, norms, softmax and RoPE are ignored. Forward only: divide by 3.
        """
        seq_len = self.config.max_position_embeddings if seq_len is None else seq_len
        attention_width = self.config.num_attention_heads * self.config.head_dim
        attention = 12 * self.config.num_hidden_layers * attention_width * seq_len
        return 6 * self.num_matmul_params() + attention

    def estimate_mfu(
        self,
        tokens_per_second: float,
        device: torch.device | str | None = None,
        seq_len: int | None = None,
        peak_flops: float | None = None,
    ) -> float:
        """Model FLOPs utilisation, as a fraction: achieved training FLOP/s over the device's peak.

        ``tokens_per_second`` is the training throughput of this one device. Achieved FLOP/s is
        ``tokens_per_second * num_flops_per_token(seq_len)``; the peak is ``peak_flops`` when given,
        else the dense bf16 peak of the device from ``PEAK_FLOPS_BY_DEVICE`` (looked up by
        ``torch.cuda.get_device_name``; default device: the model's). Unknown devices (and the CPU)
        raise, so that no MFU is reported against a guessed peak.
        """
        if peak_flops is None:
            device = torch.device(device) if device is not None else self.device
            if device.type != "cuda":
                raise ValueError(
                    f"estimate_mfu: no peak FLOP/s table for device type {device.type!r}; "
                    "pass peak_flops= explicitly."
                )
            name = torch.cuda.get_device_name(device)
            peak_flops = peak_flops_for_device(name)
            if peak_flops is None:
                raise ValueError(
                    f"estimate_mfu: GPU {name!r} is not in PEAK_FLOPS_BY_DEVICE; pass peak_flops=."
                )
        return tokens_per_second * self.num_flops_per_token(seq_len) / peak_flops



def check_inputs(
    config: L2LConfig,
    input_ids: torch.Tensor | None,
    position_ids: torch.Tensor,
    cache: Cache | None,
) -> None:
    """Refuse token ids outside the vocabulary and positions outside the trained context.

    The embedding would raise a bare ``IndexError`` for a bad id (or a device-side assert on a
    GPU), and RoPE would silently extrapolate past the context. Positions, not lengths, are
    checked: packed rows restart at 0, and left-padded generation has fewer positions than cache
    slots. One host synchronisation for both checks; the details are computed only on failure.
    """
    context, vocab = config.max_position_embeddings, config.vocab_size
    ok = (position_ids < context).all()
    if input_ids is not None:
        ok = ok & ((input_ids >= 0) & (input_ids < vocab)).all()
    if bool(ok):
        return
    if input_ids is not None:
        bad = input_ids[(input_ids < 0) | (input_ids >= vocab)].unique()
        if bad.numel():
            shown = ", ".join(str(i) for i in bad[:5].tolist())
            more = f" and {bad.numel() - 5} more" if bad.numel() > 5 else ""
            raise ValueError(
                f"L2LModel: input ids {shown}{more} are outside the vocabulary (vocab_size={vocab}: "
                f"ids 0 to {vocab - 1}). Was the input tokenized with this model's tokenizer?"
            )
    cached = int(cache.get_seq_length()) if cache is not None else 0
    raise ValueError(
        f"L2LModel: position {int(position_ids.max())} is beyond the context, "
        f"max_position_embeddings={context} (positions 0 to {context - 1}; {cached} cached + "
        f"{position_ids.shape[-1]} new tokens). The model was trained on sequences of that length; "
        "truncate the input or split it into windows."
    )


class L2LModel(L2LPreTrainedModel):
    """Embedding, decoder blocks and final LayerNorm (no head): returns the last hidden state."""

    def __init__(self, config: L2LConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            [L2LDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=False)
        self.rotary_emb = L2LRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        """As transformers' Llama, except that the input ids and positions are checked first.

        Packed rows (``position_ids`` restarting at 0 inside a row, no ``attention_mask``) attend
        within each document only when no cache is in use (``use_cache=False``, as in training):
        transformers detects packing from the positions only without a cache.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("L2LModel: pass exactly one of input_ids or inputs_embeds.")
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            tokens = input_ids if input_ids is not None else inputs_embeds
            position_ids = torch.arange(tokens.shape[1], device=tokens.device) + past_seen
            position_ids = position_ids.unsqueeze(0)
        # Data-dependent branches: outside compiled graphs only, so that fullgraph compilation
        # and compiled generation (which build the same positions) trace without a break. On a
        # GPU the check waits for the device, so a training step (whose loop checks its batches,
        # as training.trainer does) skips it there rather than stall every micro-batch.
        on_host = position_ids.device.type == "cpu"
        if not torch.compiler.is_compiling() and (on_host or not self.training):
            check_inputs(self.config, input_ids, position_ids, cache)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)

        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,  # positional: required by reentrant gradient checkpointing
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)


class L2LForCausalLM(L2LPreTrainedModel, GenerationMixin):
    """The decoder with its untied LM head (``tie_word_embeddings=False``), and no logit scaling."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # only if tied in config
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: L2LConfig):
        super().__init__(config)
        self.model = L2LModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        """``labels`` are the input ids (shifted inside the loss); -100 marks ignored positions.

        ``logits_to_keep``: an int keeps the last that many positions (0: all), a tensor keeps
        those positions; generation uses 1 to skip the full-vocabulary projection of the prompt.
        """
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "L2LForCausalLM",
    "L2LModel",
    "L2LPreTrainedModel",
    "PEAK_FLOPS_BY_DEVICE",
    "peak_flops_for_device",
]
