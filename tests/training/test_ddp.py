"""Two gloo DDP processes on a CPU train exactly what one process does with gradient accumulation.

The shipped ``training/launch/cpu_ddp.yaml`` with ``ACCELERATE_USE_CPU=1`` is ``accelerate launch
--multi_gpu --num_processes 2`` on CPUs: real DDP over gloo (``--cpu --num_processes 2`` would
silently start a single process), so the run records its world size and the test checks it. The
same holds across two "nodes": the slurm template run with stand-ins for ``srun`` and
``scontrol`` starts one real ``accelerate launch`` per node, which meet in a c10d rendezvous (and
on a real two-node slurm cluster, test_slurm_nodes.py)."""

from __future__ import annotations

import json
import os
import random
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


def free_port_between(low: int, high: int) -> int:
    """A port in [low, high) that nothing listens on (the slurm template's ports are 20000 +
    job id mod 20000)."""
    for port in random.Random().sample(range(low, high), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{low}, {high})")


def assert_same_training(one_dir, two_dir, single: dict, run: str = "tiny") -> dict:
    """The two-process run in ``two_dir`` ended where the one-process ``single`` run did;
    returns its final.json."""
    final = json.loads((two_dir / run / "final.json").read_text())
    assert final["world_size"] == 2  # really two processes
    assert final["steps"] == single["steps"] and final["tokens"] == single["tokens"]
    assert final["final_val_loss"] == pytest.approx(single["final_val_loss"], rel=1e-5)
    one = load_file(str(one_dir / run / "model.safetensors"))
    two = load_file(str(two_dir / run / "model.safetensors"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    losses = [[json.loads(line).get("loss") for line in
               (path / run / "metrics.jsonl").read_text().splitlines()]
              for path in (one_dir, two_dir)]
    assert losses[0][:-1] == pytest.approx(losses[1][:-1], rel=1e-5)
    return final


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
        # Drop srun's own options ("--kill-on-bad-exit=1 --ntasks-per-node=1 ...") and start the
        # task once per node, both at once (the template has node 1 wait for node 0's port); the
        # first task to fail takes the other down, as --kill-on-bad-exit does.
        "srun": 'while [ "$1" != bash ]; do shift; done\n'
                'SLURM_NODEID=0 "$@" & first=$!\n'
                'SLURM_NODEID=1 "$@" & second=$!\n'
                'status=0; for _ in 1 2; do\n'
                '  wait -n || { status=1; kill $first $second 2>/dev/null; }; done\n'
                'exit $status',
    }
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    # CPU nodes (no GPUs): the template picks cpu_ddp.yaml and ACCELERATE_USE_CPU=1 itself
    port = free_port_between(20000, 40000)
    proc = run_subprocess(
        ["bash", str(SLURM_TEMPLATE), str(config)], timeout=300,
        env={"GPUS_PER_NODE": "0", "SLURM_JOB_NODELIST": "localhost", "SLURM_NNODES": "2",
             "SLURM_JOB_ID": str(port - 20000),
             "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert (f"on 2 node(s) x 1 CPU process(es), rendezvous 127.0.0.1:{port} (127.0.0.1), "
            f"accelerate config {ACCELERATE_CONFIGS['cpu_ddp']}") in proc.stdout
    assert_same_training(tmp_path / "one", tmp_path / "two", single)
