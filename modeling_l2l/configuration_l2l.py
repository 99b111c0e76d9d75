"""Configuration of the loss-to-loss decoder (Brandfonbrener et al. 2024, arXiv 2411.12925, Table 7).

One dial sets the architecture: the depth ``n``. Width is ``64 n``, there are ``n`` heads of size 64,
the MLP is ``4 d`` wide, the context 512 tokens and the vocabulary the Llama-2 tokenizer's 32000.
``L2LConfig.from_depth(n)`` builds that preset; every field can still be overridden.

This file is copied next to the weights for ``trust_remote_code`` loading: it imports only
``transformers`` and ``huggingface_hub`` (never another module of this package).
"""

from __future__ import annotations

import difflib
import functools

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import GenerationConfig, PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

# Depths of the paper's sweep: every n from 4 to 22, then even n up to 32 (the `n_layers` column of
# the released sweep.csv), plus n = 40 for the 1e21-FLOP runs.
PAPER_DEPTHS: tuple[int, ...] = (*range(4, 23), 24, 26, 28, 30, 32, 40)

# Size of one attention head in the paper's models: width 64 n split over n heads.
PAPER_HEAD_DIM = 64
# The Llama-2 tokenizer used for every run of the paper.
PAPER_VOCAB_SIZE = 32000

# Keyword arguments that PreTrainedConfig accepts besides the declared fields.
_CONFIG_INIT_KWARGS = frozenset(
    {"attn_implementation", "experts_implementation", "output_attentions"}
)
# Keys that a saved config.json (or transformers' loading code) carries besides the fields, which
# PreTrainedConfig consumes or keeps as plain attributes.
_SAVED_CONFIG_KEYS = frozenset(
    {
        "auto_map",
        "model_type",
        "torch_dtype",
        "num_labels",
        "name_or_path",
        "_name_or_path",
        "_commit_hash",
        "per_layer_config",
        "_attn_implementation_internal",
        "_experts_implementation_internal",
        "quantization_config",
    }
)

# Entries that let a user without this package load a saved folder with trust_remote_code.
# transformers writes only the config's and the saved class's entries, so we declare all three.
AUTO_MAP = {
    "AutoConfig": "configuration_l2l.L2LConfig",
    "AutoModel": "modeling_l2l.L2LModel",
    "AutoModelForCausalLM": "modeling_l2l.L2LForCausalLM",
}


@functools.cache
def _generation_keys() -> frozenset[str]:
    """Generation settings that old configs carry and PreTrainedConfig moves out of the config."""
    return frozenset(GenerationConfig().to_dict())


def _describe_unknown(names, known, cutoff: float = 0.6) -> str:
    """``'x' (did you mean 'y'?), 'z'`` for a message; ``cutoff`` is difflib's similarity."""
    hints = []
    for name in sorted(names):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=cutoff)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(hints)


@strict
class L2LConfig(PreTrainedConfig):
    """Architecture of the loss-to-loss decoder (a pre-norm GPT with QK-LayerNorm and RoPE).

    Example::

        >>> from modeling_l2l import L2LConfig, L2LForCausalLM
        >>> config = L2LConfig.from_depth(8)  # d = 512, 8 heads of 64, N = 57,950,720
        >>> model = L2LForCausalLM(config)
    """

    model_type = "l2l"
    keys_to_ignore_at_inference = ["cache"]
    # QK-LayerNorm is over the full width, so q and k must be gathered before the norm under tensor
    # parallelism (as for OLMo2's full-width QK-RMSNorm).
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise_gather_output",
        "layers.*.self_attn.k_proj": "colwise_gather_output",
        "layers.*.self_attn.v_proj": "colwise_gather_output",
        "layers.*.self_attn.o_proj": "rowwise_split_input",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = PAPER_VOCAB_SIZE
    """Rows of the input embedding and of the (untied) output head."""
    hidden_size: int = 256
    """Model width d (64 n in the paper)."""
    num_hidden_layers: int = 4
    """Depth n: the number of decoder blocks."""
    num_attention_heads: int = 4
    """Number of attention heads (n in the paper); they must tile the width exactly."""
    head_dim: int | None = None
    """Size of one head; derived as hidden_size / num_attention_heads when not given."""
    intermediate_size: int | None = None
    """Inner MLP width; derived as 4 * hidden_size when not given."""
    hidden_act: str = "gelu"
    """MLP activation, a key of transformers' ACT2FN. "gelu" is the exact (erf) GELU of the paper."""
    max_position_embeddings: int = 512
    """Context length. Positions beyond it raise an error rather than extrapolating RoPE silently."""
    rope_theta: float | int = 10000.0
    """RoPE base frequency. There is deliberately no ``rope_parameters`` (RoPE scaling): the paper's
    models were trained at one context and every use here stays inside it, so a scaling rule the
    models never saw in training would only hide an input that is too long."""
    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm (PyTorch's default, as in the OLMo fork)."""
    initializer_cutoff_factor: float | int = 3.0
    """Mitchell init: weights are drawn from a normal truncated at this many standard deviations."""
    attention_dropout: float | int = 0.0
    """Dropout on attention probabilities during training (the paper used none)."""
    use_cache: bool = True
    """Return the key/value cache from forward (used by generate)."""
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    """The paper's runs trained without BOS; evaluation feeds no BOS either."""
    eos_token_id: int | list[int] | None = 2
    """End of document: the Llama-2 tokenizer's </s> (id 2) separated documents during training."""
    tie_word_embeddings: bool = False
    """The paper's models have an untied output head. Declared so that the default is False."""

    def __post_init__(self, **kwargs):
        self._check_unknown_keys(kwargs)
        # Derive only from well-typed values: the @strict type check runs after this and reports
        # a wrong type by field name.
        width, heads = self.hidden_size, self.num_attention_heads
        if isinstance(width, int) and isinstance(heads, int) and heads > 0:
            if self.head_dim is None:
                self.head_dim = width // heads
            if self.intermediate_size is None:
                self.intermediate_size = 4 * width
        for name in ("rope_theta", "initializer_cutoff_factor", "attention_dropout"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))
        super().__post_init__(**kwargs)

    @classmethod
    def _check_unknown_keys(cls, extra: dict) -> None:
        """Name in a warning every key that is not a field; a close misspelling gets a hint.

        PreTrainedConfig keeps any extra key as an attribute, as every transformers config does:
        tools set their own (transformers' test harness sets ``layer_norm_epsilon`` and the other
        models' epsilon names on every config, PEFT and TRL add theirs), and what they save must
        load. An extra key changes nothing in the model, so ``num_hiden_layers: 3`` in a
        config.json would build the default depth: the warning says which field was meant.
        """
        fields = set(cls.__dataclass_fields__)
        unknown = set(extra) - fields - _CONFIG_INIT_KWARGS - _SAVED_CONFIG_KEYS - _generation_keys()
        if unknown:
            logger.warning(
                f"L2LConfig: {_describe_unknown(unknown, fields, cutoff=0.8)} "
                f"{'is not a field' if len(unknown) == 1 else 'are not fields'} of the config: "
                "kept as attributes, they do not change the model."
            )

    def validate_architecture(self):
        """Part of the ``@strict`` validation: shapes that cannot build the model raise here."""
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "head_dim",
            "intermediate_size",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"L2LConfig.{name}: expected int, got {value!r}.")
            if value <= 0:
                raise ValueError(f"L2LConfig.{name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"L2LConfig: num_attention_heads ({self.num_attention_heads}) does not divide "
                f"hidden_size ({self.hidden_size})."
            )
        if self.num_attention_heads * self.head_dim != self.hidden_size:
            # The QK-LayerNorm normalises q and k over the full width before the head split, so the
            # heads must tile the width exactly.
            raise ValueError(
                f"L2LConfig: num_attention_heads * head_dim ({self.num_attention_heads} * "
                f"{self.head_dim}) must equal hidden_size ({self.hidden_size})."
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"L2LConfig.head_dim must be even for RoPE, got {self.head_dim}.")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"L2LConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps}.")
        if not self.rope_theta > 0:
            raise ValueError(f"L2LConfig.rope_theta must be > 0, got {self.rope_theta}.")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(
                f"L2LConfig.attention_dropout must be in [0, 1), got {self.attention_dropout}."
            )
        from transformers.activations import ACT2FN

        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"L2LConfig.hidden_act {self.hidden_act!r} is not a transformers activation; "
                f"for example 'gelu' (exact, the paper's), 'gelu_new', 'relu', 'silu'."
            )

    @classmethod
    def from_depth(cls, n: int, **overrides) -> L2LConfig:
        """The paper's model of depth ``n``: width 64 n, n heads of 64, MLP 4 d, context 512.

        ``overrides`` replace any field (e.g. ``vocab_size=1000`` for a tiny test model; also
        ``attn_implementation``); a width or head count that is overridden keeps head_dim and
        intermediate_size derived from it unless they are overridden too. An unknown field name,
        a wrong type or an impossible shape raises ``ValueError`` naming the field.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"L2LConfig.from_depth: depth n must be a positive int, got {n!r}.")
        known = set(cls.__dataclass_fields__) | _CONFIG_INIT_KWARGS
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(
                f"L2LConfig.from_depth: unknown field(s) {_describe_unknown(unknown, known)}."
            )
        fields = dict(
            vocab_size=PAPER_VOCAB_SIZE,
            hidden_size=PAPER_HEAD_DIM * n,
            num_hidden_layers=n,
            num_attention_heads=n,
            head_dim=None,
            intermediate_size=None,
            max_position_embeddings=512,
        )
        fields.update(overrides)
        try:
            return cls(**fields)
        except StrictDataclassError as error:  # one exception type for every bad override
            raise ValueError(f"L2LConfig.from_depth({n}): {error}") from error

    @property
    def depth(self) -> int:
        """The paper's dial n (an alias of num_hidden_layers)."""
        return self.num_hidden_layers


__all__ = ["AUTO_MAP", "L2LConfig", "PAPER_DEPTHS"]
