"""CUDA checks (skipped without a GPU): bf16 kernels, SDPA against eager and flash attention,
MFU by device name."""

from __future__ import annotations

import pytest
import torch

from modeling_l2l import L2LForCausalLM, peak_flops_for_device
from tests.modeling.conftest import tiny_config

pytestmark = pytest.mark.gpu


def test_bfloat16_on_gpu_tracks_float32_on_cpu(tiny_model):
    ids = torch.randint(0, 96, (2, 32))
    with torch.no_grad():
        reference = tiny_model(ids).logits
        gpu = tiny_model.to("cuda", torch.bfloat16)
        logits = gpu(ids.cuda()).logits.float().cpu()
    assert (logits - reference).abs().max() < 0.1 * reference.abs().max()


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
