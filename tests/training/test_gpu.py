"""On a GPU: the paper's precision recipe (bf16 autocast, fp32 master weights), torch.compile and
fused AdamW train, and the trainer reports MFU from the device's peak."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import tiny_config
from training.trainer import train

pytestmark = pytest.mark.gpu


def test_bf16_compiled_fused_training_on_gpu(tmp_path, tokenizer_dir, data_dir):
    cfg = tiny_config(tokenizer_dir, data_dir, tmp_path, "precision.mixed_precision=bf16",
                      "precision.compile=true", "optim.fused=true", steps=20)
    final = train(cfg)
    lines = (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()
    # training records only: the last line holds the final val_loss (its text contains "loss")
    records = [r for r in map(json.loads, lines) if "loss" in r]
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["mfu"] is not None and 0 < records[-1]["mfu"] < 1
    weights = load_file(str(tmp_path / "tiny" / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())  # fp32 master weights saved
    assert final["steps"] == 20
