"""Size and compute of the loss-to-loss decoder family in closed form, without torch.

Planners (``training.sweep``, ``l2l plan``), configs (``training.config`` presets) and the paper's
reproduction (``analysis.reproduce.l2l``) need a model's parameter count and FLOPs before any
model exists, and must stay quick to import, so the formulas live here, in the package that
imports without torch. The model counts its own parameters and FLOPs from its modules
(``L2LForCausalLM.num_parameters``, ``num_flops_per_token``); the tests hold the two equal for
every width and depth. The model file restates the FLOPs convention because it ships alone as
remote code (transformers' one-file-per-model rule: it cannot import this package).

Shapes: width ``d``, ``layers`` blocks, vocabulary ``V``, untied head. The paper's shape at depth
``n`` is ``d = 64 n`` with ``n`` layers (``paper_param_count``).
"""

from __future__ import annotations

PAPER_HEAD_DIM = 64
"""The paper's heads: width 64 n split into n heads of 64."""
PAPER_VOCAB_SIZE = 32000
"""The Llama-2 tokenizer's vocabulary, of every run of the paper."""


def param_count(width: int, layers: int, vocab_size: int = PAPER_VOCAB_SIZE) -> int:
    """N with embeddings (input and untied output) included, as the paper counts it:
    ``2 V d + L (12 d^2 + 4 d) + d``. Per block four ``d x d`` attention projections and a
    ``d -> 4d -> d`` MLP (``12 d^2``) plus four weight-only LayerNorms (attention, MLP, query
    and key norm: ``4 d``); then the final LayerNorm (``d``)."""
    d = int(width)
    return 2 * vocab_size * d + layers * (12 * d * d + 4 * d) + d


def paper_param_count(n: int, vocab_size: int = PAPER_VOCAB_SIZE) -> int:
    """N of the paper's model at depth ``n`` (``d = 64 n``, ``n`` layers)."""
    return param_count(PAPER_HEAD_DIM * n, n, vocab_size)


def matmul_param_count(width: int, layers: int, vocab_size: int = PAPER_VOCAB_SIZE) -> int:
    """Parameters that enter a matrix multiply: every linear weight, the head included. The
    input embedding is a lookup and the LayerNorm weights are elementwise, so neither counts."""
    d = int(width)
    return param_count(d, layers, vocab_size) - vocab_size * d - (4 * layers + 1) * d


def flops_per_token(matmul_params: int, layers: int, attention_width: int, seq_len: int) -> int:
    """Training FLOPs (forward and backward) per token: ``6 N_matmul + 12 L d T``.

    Each matmul weight costs 2 FLOPs per token forward and 4 backward (``6 N_matmul``); the
    attention scores ``QK^T`` and the weighted sum ``AV`` cost ``2 * 2 d T`` forward per layer
    and token, times 3 with backward (``12 L d T``, ``T = seq_len``, ``d`` the attention width).
    Causal masking is not discounted (the kernels still count the masked half), activation
    recomputation is not counted, norms, softmax and RoPE are ignored (nanochat's and
    torchtitan's conventions). Forward only: divide by 3."""
    return 6 * matmul_params + 12 * layers * attention_width * seq_len


def training_flops(width: int, layers: int, tokens: float, seq_len: int,
                   vocab_size: int = PAPER_VOCAB_SIZE) -> float:
    """FLOPs a run of ``tokens`` tokens executes by the model's own count
    (``flops_per_token``); slightly above the planning convention ``C = 6 N D``."""
    per_token = flops_per_token(matmul_param_count(width, layers, vocab_size), layers, width,
                                seq_len)
    return per_token * tokens
