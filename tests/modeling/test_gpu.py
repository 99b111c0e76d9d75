"""CUDA checks (skipped without a GPU): bf16 kernels, SDPA against eager and flash attention,
MFU by device name."""

from __future__ import annotations

import pytest
import torch

from modeling_l2l import L2LForCausalLM, peak_flops_for_device
from tests.modeling.conftest import (
    assert_bf16_tracks_fp32,
    future_tokens_visible,
    padded_batch,
    tiny_config,
)

pytestmark = pytest.mark.gpu


def test_bfloat16_on_gpu_tracks_float32_on_cpu(tiny_model):
    """Within bf16's rounding as measured on CPU (conftest.BF16_*); the GPU's bf16 kernels
    accumulate in fp32 as the CPU's do. A broken mask must fail the same check."""
    ids, mask = padded_batch()
    with torch.no_grad():
        reference = tiny_model(ids, attention_mask=mask).logits
        gpu = tiny_model.to("cuda", torch.bfloat16)
        assert_bf16_tracks_fp32(gpu(ids.cuda(), attention_mask=mask.cuda()).logits, reference, mask)
        with future_tokens_visible(), pytest.raises(AssertionError, match="bf16 logits differ"):
            assert_bf16_tracks_fp32(
                gpu(ids.cuda(), attention_mask=mask.cuda()).logits, reference, mask)


def test_sdpa_and_eager_agree_in_bfloat16_on_gpu():
    torch.manual_seed(0)
    sdpa = L2LForCausalLM(tiny_config(attn_implementation="sdpa")).to("cuda", torch.bfloat16)
    eager = L2LForCausalLM(tiny_config(attn_implementation="eager")).to("cuda", torch.bfloat16)
    eager.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, 96, (2, 32), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(sdpa(ids).logits, eager(ids).logits, rtol=2e-2, atol=2e-2)


def test_mfu_uses_the_device_table(tiny_model):
    model = tiny_model.to("cuda")
    peak = peak_flops_for_device(torch.cuda.get_device_name())
    if peak is None:
        pytest.skip(f"{torch.cuda.get_device_name()} is not in the peak FLOP/s table")
    assert model.estimate_mfu(1e6) == pytest.approx(1e6 * model.num_flops_per_token() / peak)


def test_flash_attention_agrees_with_sdpa_in_bfloat16_on_gpu():
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        pytest.skip("the flash-attn package is not installed")
    torch.manual_seed(0)
    sdpa = L2LForCausalLM(tiny_config(attn_implementation="sdpa")).to("cuda", torch.bfloat16)
    flash = L2LForCausalLM(tiny_config(attn_implementation="flash_attention_2"))
    flash = flash.to("cuda", torch.bfloat16)
    flash.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, 96, (2, 32), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(flash(ids).logits, sdpa(ids).logits, rtol=2e-2, atol=2e-2)
