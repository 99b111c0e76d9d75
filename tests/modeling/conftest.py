"""Tiny models shared by the modeling tests (CPU, milliseconds to build), and the check that a
low-precision forward tracks the float32 one."""

from __future__ import annotations

import contextlib

import pytest
import torch

import modeling_l2l.modeling_l2l as modeling
from modeling_l2l import L2LConfig, L2LForCausalLM


def tiny_config(**overrides) -> L2LConfig:
    """Depth 2 (width 128, 2 heads of 64) with a 96-token vocabulary and a 32-token context."""
    fields = dict(vocab_size=96, max_position_embeddings=32)
    fields.update(overrides)
    return L2LConfig.from_depth(2, **fields)


@pytest.fixture
def tiny_model() -> L2LForCausalLM:
    torch.manual_seed(0)
    return L2LForCausalLM(tiny_config()).eval()


# bfloat16 against float32 logits of tiny_config() models (logits of std ~1, the largest 3.4 to
# 4.5), measured on CPU (torch 2.13, 2026-12-07) over 20 models (seeds 0-9, sdpa and eager) on
# padded_batch(seed): at most 0.054 apart, 0.0072 on average (bf16 keeps 8 significant bits: a
# logit near 4 alone rounds by up to 0.016). A mask letting each token see the next one put them
# 3.4 or more apart (0.27 or more on average); pads left visible, 2.7 or more (0.14). The
# bounds sit about 2x (largest) and 3x (mean) above bf16's own error, far below either mistake;
# the old check allowed 10% of the largest logit (~0.4).
BF16_MAX_ABS = 0.1
BF16_MEAN_ABS = 0.02


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of 32 ids for tiny_config(); the second is left-padded with 9 masked tokens."""
    ids = torch.randint(0, 96, (3, 32), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, :9] = 0
    return ids, mask


def assert_bf16_tracks_fp32(low: torch.Tensor, reference: torch.Tensor,
                            attention_mask: torch.Tensor) -> None:
    """The logits of a bfloat16 forward are float32's within bf16's rounding (BF16_*), at every
    position that is not padding."""
    keep = attention_mask.bool().cpu()
    diff = (low.float().cpu() - reference.float().cpu()).abs()[keep]
    largest, mean = diff.max().item(), diff.mean().item()
    assert largest <= BF16_MAX_ABS and mean <= BF16_MEAN_ABS, (
        f"bf16 logits differ from fp32 by up to {largest:.4f} (mean {mean:.5f}); bf16 rounding "
        f"accounts for up to {BF16_MAX_ABS} (mean {BF16_MEAN_ABS})")


@contextlib.contextmanager
def future_tokens_visible(steps: int = 1):
    """A broken mask: every token also sees the next ``steps`` tokens (padding is ignored)."""
    create = modeling.create_causal_mask

    def leaky_mask(*, inputs_embeds, **kwargs):
        batch, length = inputs_embeds.shape[:2]
        visible = torch.ones(length, length, dtype=torch.bool, device=inputs_embeds.device)
        visible = visible.tril(diagonal=steps)
        additive = torch.zeros(length, length, dtype=inputs_embeds.dtype,
                               device=inputs_embeds.device)
        additive = additive.masked_fill(~visible, torch.finfo(inputs_embeds.dtype).min)
        return additive.expand(batch, 1, length, length)

    modeling.create_causal_mask = leaky_mask
    try:
        yield
    finally:
        modeling.create_causal_mask = create
