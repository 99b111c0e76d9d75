"""Two gloo DDP processes on a CPU train exactly what one process does with gradient accumulation.

The shipped ``training/launch/cpu_ddp.yaml`` with ``ACCELERATE_USE_CPU=1`` is ``accelerate launch
--multi_gpu --num_processes 2`` on CPUs: real DDP over gloo (``--cpu --num_processes 2`` would
silently start a single process), so the run records its world size and the test checks it. The
same holds across two "nodes": the slurm template run with stand-ins for ``srun`` and
``scontrol`` starts one real ``accelerate launch`` per node, which meet in a c10d rendezvous."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import run_subprocess, tiny_config
from training.launch import ACCELERATE_CONFIGS, SLURM_TEMPLATE
from training.trainer import train

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_same_training(one_dir, two_dir, single: dict) -> None:
    """The two-process run in ``two_dir`` ended where the one-process ``single`` run did."""
    final = json.loads((two_dir / "tiny" / "final.json").read_text())
    assert final["world_size"] == 2  # really two processes
    assert final["steps"] == single["steps"] and final["tokens"] == single["tokens"]
    assert final["final_val_loss"] == pytest.approx(single["final_val_loss"], rel=1e-5)
    one = load_file(str(one_dir / "tiny" / "model.safetensors"))
    two = load_file(str(two_dir / "tiny" / "model.safetensors"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    losses = [[json.loads(line).get("loss") for line in
               (path / "tiny" / "metrics.jsonl").read_text().splitlines()]
              for path in (one_dir, two_dir)]
    assert losses[0][:-1] == pytest.approx(losses[1][:-1], rel=1e-5)


def test_two_process_ddp_matches_one_process_with_accumulation(tmp_path, tokenizer_dir,
                                                               data_dir):
    # One process: 8 sequences per step as 2 accumulated micro-batches of 4.
    single = train(tiny_config(tokenizer_dir, data_dir, tmp_path / "one", steps=6))
    assert single["world_size"] == 1
    # Two processes: one micro-batch of 4 each, no accumulation.
    config = tmp_path / "ddp.yaml"
    tiny_config(tokenizer_dir, data_dir, tmp_path / "two", steps=6).to_yaml(config)
    run_subprocess(
        ["accelerate", "launch", "--config_file", str(ACCELERATE_CONFIGS["cpu_ddp"]),
         "--main_process_port", str(free_port()), "-m", "training", "--config", str(config)],
        env={"ACCELERATE_USE_CPU": "1"},
    )
    assert_same_training(tmp_path / "one", tmp_path / "two", single)


def test_slurm_template_trains_across_two_nodes_like_one_process(tmp_path, tokenizer_dir,
                                                                 data_dir):
    """Two "nodes" on this machine: the slurm template, unchanged, with an ``srun`` that starts
    its task twice (SLURM_NODEID 0 and 1, as slurm does on two nodes) and an ``scontrol`` that
    names this host. Each task runs the real ``accelerate launch --num_machines 2 --rdzv_backend
    c10d``; torchrun's c10d rendezvous joins them into one gloo group of 2, which must train what
    one process with gradient accumulation does."""
    single = train(tiny_config(tokenizer_dir, data_dir, tmp_path / "one", steps=6))
    config = tmp_path / "run.yaml"
    tiny_config(tokenizer_dir, data_dir, tmp_path / "two", steps=6).to_yaml(config)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "scontrol": "echo 127.0.0.1",
        # Drop srun's own options ("--kill-on-bad-exit=1 --ntasks-per-node=1") and start the task
        # once per node. On one host both agents would try to serve the rendezvous port, so node
        # 1 starts once node 0's store listens (as it would be on a real first node); the first
        # task to fail takes the other down, as --kill-on-bad-exit does.
        "srun": 'SLURM_NODEID=0 "${@:3}" & first=$!\n'
                'until (exec 3<>"/dev/tcp/127.0.0.1/$MAIN_PORT") 2>/dev/null; do\n'
                '  kill -0 $first 2>/dev/null || break; sleep 0.2; done\n'
                'SLURM_NODEID=1 "${@:3}" & second=$!\n'
                'status=0; for _ in 1 2; do\n'
                '  wait -n || { status=1; kill $first $second 2>/dev/null; }; done\n'
                'exit $status',
    }
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    proc = run_subprocess(
        ["bash", str(SLURM_TEMPLATE), str(config)], timeout=300,
        env={"ACCELERATE_USE_CPU": "1", "ACCELERATE_CONFIG": str(ACCELERATE_CONFIGS["cpu_ddp"]),
             "GPUS_PER_NODE": "1", "MAIN_PORT": str(free_port()),
             "SLURM_JOB_NODELIST": "localhost", "SLURM_NNODES": "2", "SLURM_JOB_ID": "1",
             "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert "on 2 node(s) x 1 GPU(s), rendezvous 127.0.0.1:" in proc.stdout
    assert_same_training(tmp_path / "one", tmp_path / "two", single)
