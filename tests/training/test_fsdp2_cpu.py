"""FSDP2 end to end on two CPU processes: the trainer's whole FSDP2 path (accelerate's
``fully_shard`` of each decoder block and the model, DTensor gradient clipping, sharded
checkpoints written and resumed, the full state dict gathered for ``save_pretrained``) against one
unsharded process.

accelerate picks FSDP only for GPU backends: with ``ACCELERATE_USE_CPU=1`` it quietly runs data
parallelism (test_trainer.py checks that the trainer says so). torch's ``fully_shard`` itself runs
on a gloo CPU mesh, so the launched script sets accelerate's distributed type to FSDP once the
``Accelerator`` exists, which is what accelerate does on GPUs; everything else is the shipped
``training/launch/fsdp2.yaml`` and the unchanged trainer. Left untested here: NCCL and GPU kernels.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import run_subprocess, tiny_config
from tests.training.test_ddp import free_port
from training.launch import ACCELERATE_CONFIGS
from training.trainer import train

pytestmark = pytest.mark.slow

FSDP_ON_CPU = """
import os, runpy, signal, sys
import training.trainer as trainer
from tests.training.fsdp_on_cpu import patch_trainer

patch_trainer()

if "KILL_AT_STEP" in os.environ:  # SIGKILL every process as it starts that step
    real_lr = trainer.lr_at_step

    def lr_then_die(step, **kwargs):
        if step == int(os.environ["KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_lr(step, **kwargs)

    trainer.lr_at_step = lr_then_die
sys.argv = ["training", *sys.argv[1:]]
runpy.run_module("training", run_name="__main__")
"""


def launch_fsdp2(tmp_path, config, *overrides, env=None, check=True):
    script = tmp_path / "fsdp_on_cpu.py"
    script.write_text(FSDP_ON_CPU)
    return run_subprocess(
        ["accelerate", "launch", "--config_file", str(ACCELERATE_CONFIGS["fsdp2"]),
         "--num_processes", "2", "--mixed_precision", "no",
         "--main_process_port", str(free_port()), str(script), "--config", str(config),
         *overrides],
        env={"ACCELERATE_USE_CPU": "1", **(env or {})}, check=check,
    )


def test_fsdp2_on_two_cpu_processes_trains_and_resumes_what_one_process_does(
        tmp_path, tokenizer_dir, data_dir):
    from transformers import AutoModelForCausalLM

    single = train(tiny_config(tokenizer_dir, data_dir, tmp_path / "one", steps=6))
    whole, halves = tmp_path / "whole.yaml", tmp_path / "halves.yaml"
    tiny_config(tokenizer_dir, data_dir, tmp_path / "whole", steps=6).to_yaml(whole)
    tiny_config(tokenizer_dir, data_dir, tmp_path / "halves", steps=6).to_yaml(halves)
    launch_fsdp2(tmp_path, whole)
    # the same run killed (SIGKILL, both processes) after the sharded checkpoint of step 4
    # and resumed from it
    killed = launch_fsdp2(tmp_path, halves, env={"KILL_AT_STEP": "5"}, check=False)
    assert killed.returncode != 0
    assert not (tmp_path / "halves" / "tiny" / "final.json").exists()
    resumed = launch_fsdp2(tmp_path, halves, "--resume")
    assert "resumed tiny from" in resumed.stdout and "(step 4 of 6)" in resumed.stdout

    reference = load_file(str(tmp_path / "one" / "tiny" / "model.safetensors"))
    for name in ("whole", "halves"):
        run = tmp_path / name / "tiny"
        final = json.loads((run / "final.json").read_text())
        assert (final["world_size"], final["distributed_type"]) == (2, "FSDP")
        assert final["steps"] == single["steps"]
        assert final["final_val_loss"] == pytest.approx(single["final_val_loss"], rel=1e-5)
        # the checkpoints are accelerate's sharded FSDP state (torch.distributed.checkpoint)
        assert (run / "checkpoints" / "step_00000004" / "pytorch_model_fsdp_0").is_dir()
        weights = load_file(str(run / "model.safetensors"))
        assert weights.keys() == reference.keys()
        for key in reference:
            torch.testing.assert_close(weights[key], reference[key], rtol=1e-5, atol=1e-6,
                                       msg=key)
        # saved as L2LForCausalLM, not as the class fully_shard swapped in (that folder named
        # _fsdp_init.FSDPL2LForCausalLM in auto_map and held torch's FSDP files as its code)
        config = json.loads((run / "config.json").read_text())
        assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_l2l.L2LForCausalLM"
        assert (run / "modeling_l2l.py").is_file()
        assert not list(run.glob("_fsdp*.py"))
        model = AutoModelForCausalLM.from_pretrained(run)
        assert type(model).__name__ == "L2LForCausalLM"


def test_fsdp2_bf16_mixed_precision_follows_one_process_in_bf16(tmp_path, tokenizer_dir,
                                                                data_dir):
    """bf16: the trainer's FSDP2 policy (bf16 compute, fp32 gradient reduction, fp32 sharded
    master weights) against one process under bf16 autocast. The two round differently (bf16
    parameters against autocast's bf16 matmul inputs), so the losses agree to bf16 precision,
    not bit for bit."""
    bf16 = "precision.mixed_precision=bf16"
    single = train(tiny_config(tokenizer_dir, data_dir, tmp_path / "one", bf16, steps=6))
    config = tmp_path / "bf16.yaml"
    tiny_config(tokenizer_dir, data_dir, tmp_path / "two", bf16, steps=6).to_yaml(config)
    launch_fsdp2(tmp_path, config)
    final = json.loads((tmp_path / "two" / "tiny" / "final.json").read_text())
    assert final["distributed_type"] == "FSDP"
    assert final["final_val_loss"] == pytest.approx(single["final_val_loss"], rel=1e-3)
    losses = [[json.loads(line)["loss"] for line in
               (tmp_path / name / "tiny" / "metrics.jsonl").read_text().splitlines()
               if "loss" in json.loads(line)] for name in ("one", "two")]
    assert len(losses[0]) == 6 and losses[1] == pytest.approx(losses[0], rel=2e-3)
    weights = load_file(str(tmp_path / "two" / "tiny" / "model.safetensors"))
    assert all(w.dtype == torch.float32 for w in weights.values())  # fp32 master weights saved
