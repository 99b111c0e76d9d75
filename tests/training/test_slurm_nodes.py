"""Training on two slurm nodes, for real: ``python -m training.launch STUDY --slurm`` submits the
run to the session's slurm cluster (two ``slurmd`` on this host, one CPU each,
tests/slurm_cluster.py); ``srun`` starts the template's ``accelerate launch`` on both nodes, which
meet at the address and port the template takes from slurm, and the gloo group of two trains what
one process with gradient accumulation does, with the DDP config and with FSDP2."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.training.conftest import REPO, run_subprocess
from tests.training.test_ddp import assert_same_training
from tests.training.test_launch import plan_tiny_study
from training.launch.slurm import read_jobs
from training.study import run_config
from training.trainer import train

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FSDP_SITE = Path(__file__).resolve().parent / "fsdp_site"


def submit(study: Path, cluster, *args: str, env: dict | None = None) -> str:
    """``python -m training.launch STUDY --slurm ARGS`` against the cluster; the job's id."""
    done = run_subprocess([sys.executable, "-m", "training.launch", str(study), "--slurm", *args],
                          env={**cluster.env({}), **(env or {})})
    found = re.search(r"submitted slurm job (\d+): 1 run\(s\)", done.stdout)
    assert found, done.stdout + done.stderr
    return found.group(1)


@pytest.mark.parametrize("accelerate_config, sbatch_args, env, distributed_type", [
    ("cpu_ddp", "--nodes=2", {}, "MULTI_CPU"),
    # fsdp2.yaml asks for GPU nodes; --gpus-per-node=0 gives CPU nodes, where the template runs
    # it over gloo, and fsdp_site makes accelerate shard on CPUs (tests/training/fsdp_on_cpu.py)
    ("fsdp2", "--nodes=2 --gpus-per-node=0 --cpus-per-task=1",
     {"L2L_FSDP_ON_CPU": "1", "PYTHONPATH": f"{FSDP_SITE}:{REPO}"}, "FSDP"),
])
def test_two_slurm_nodes_train_what_one_process_does(
        slurm_cluster, tmp_path, tokenizer_dir, data_dir, accelerate_config, sbatch_args, env,
        distributed_type):
    study = tmp_path / "study"
    run = plan_tiny_study(study, tokenizer_dir, data_dir)[0]
    # One process: 8 sequences per step as 2 accumulated micro-batches of 4.
    cfg = run_config(study, run)
    cfg.run.output_dir = str(tmp_path / "one")
    single = train(cfg)
    assert single["world_size"] == 1

    job = submit(study, slurm_cluster, "--accelerate-config", accelerate_config,
                 f"--sbatch-args={sbatch_args}", "--only", run.run, env=env)
    slurm_cluster.wait_jobs(job, timeout=300)
    log = study / "slurm" / f"l2l-study-{job}_0.out"
    text = log.read_text()
    # the rendezvous is where slurm says: the first node's NodeAddr (n1 does not resolve) and
    # the port of the job's id
    assert (f"on 2 node(s) x 1 CPU process(es), rendezvous 127.0.0.1:{20000 + int(job) % 20000}"
            " (n1)") in text, text[-3000:]
    assert (study / run.run / "final.json").is_file(), text[-3000:]
    final = assert_same_training(tmp_path / "one", study, single, run=run.run)
    assert final["distributed_type"] == distributed_type
    # the study knows the job and the run is finished: a second launch submits nothing
    assert [(j.job, j.runs) for j in read_jobs(study)] == [(job, (run.run,))]
    again = run_subprocess([sys.executable, "-m", "training.launch", str(study), "--slurm",
                            "--only", run.run], env=slurm_cluster.env({}))
    assert "1 selected, 1 finished, 0 queued or running, 0 to run" in again.stdout
    assert json.loads((study / run.run / "final.json").read_text()) == final
