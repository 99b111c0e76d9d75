"""``l2l study --preset smoke --launcher slurm`` submitted to a real slurm cluster (two one-CPU
nodes on this host, tests/slurm_cluster.py): the array trains every run, the job that depends on
it evaluates, fits and reports, and the study folder equals the local launcher's. One run fails in
the array (another trainer holds its folder): ``l2l train`` shows the queue while it runs, the
dependent job reports the failure with its log, and a rerun resubmits that run alone. Refusals
(no sbatch, a partition slurm does not have, a job it cannot place) are one line each and leave
nothing a rerun would take for a submitted job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from l2l.plan import read_record
from training.launch.slurm import read_jobs, task_states
from training.run_lock import RunLock
from training.study import read_plan

REPO = Path(__file__).resolve().parents[2]


def l2l(*args, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "l2l", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def base_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def results(study: Path) -> dict:
    """results.jsonl as {(run, metric): value} (the model paths and times differ by folder)."""
    rows = [json.loads(line) for line in (study / "results.jsonl").read_text().splitlines()]
    return {(row["run"], row["metric"]): row["value"] for row in rows}


def sections(study: Path) -> list[str]:
    return [line for line in (study / "report.md").read_text().splitlines()
            if line.startswith("## ")]


def missing_and_failed(study: Path) -> str:
    return (study / "report.md").read_text().split("## Missing and failed")[1].split("## ")[0]


@pytest.mark.slurm
@pytest.mark.slow
def test_smoke_study_under_slurm_equals_the_local_study(slurm_cluster, smoke_study, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    env = slurm_cluster.env(base_env())
    study = tmp_path / "smoke"
    l2l("plan", "--preset", "smoke", "--out", study, cwd=tmp_path, env=env)
    targets = read_record(study)["targets"]
    runs = read_plan(study)
    victim = min((run for run in runs if run.run not in targets), key=lambda run: run.C).run
    (study / victim).mkdir()
    with RunLock(study / victim):  # another trainer holds this run: its task fails
        first = l2l("study", "--preset", "smoke", "--out", study, "--launcher", "slurm",
                    cwd=tmp_path, env=env)
        array = re.search(r"\[train\] 14 submitted as slurm job (\d+)", first.stdout)
        follow = re.search(r"\[study\] follow-up job (\d+) \(evaluation, fits, report\) waits "
                           r"for job (\d+)", first.stdout)
        assert array and follow and follow.group(2) == array.group(1), first.stdout
        array, follow = array.group(1), follow.group(1)
        # squeue's states in `l2l train`: 14 tasks on 2 CPUs, most of them queued
        status = l2l("train", study, "--launcher", "slurm", "--dry-run", cwd=tmp_path, env=env)
        assert re.search(rf"\[train\] .*\d+ queued in slurm job {array}", status.stdout), \
            status.stdout
        deadline = time.monotonic() + 300
        while task_states(study, [victim])[victim].in_flight:
            assert time.monotonic() < deadline, f"{victim}'s task did not end"
            time.sleep(1)
    index = read_jobs(study)[0].runs.index(victim)
    task_log = study / "slurm" / f"l2l-smoke-{array}_{index}.out"
    # How the victim ended, while the others train: state, its own error, its log.
    ended = l2l("train", study, "--follow-up", cwd=tmp_path, env=env, check=False)
    assert ended.returncode == 1, ended.stdout + ended.stderr
    assert (f"[train]   {victim}: FAILED (NonZeroExitCode) in slurm task {array}_{index}: "
            f"error: {study / victim} is being trained by another process") in ended.stdout
    assert f"(log: {task_log})" in ended.stdout

    slurm_cluster.wait_jobs(array, follow, timeout=900)
    follow_log = (study / "slurm" / f"l2l-smoke-fit-{follow}.out").read_text()
    assert "[train] 13 done, 1 failed" in follow_log, follow_log[-3000:]
    assert f"[train]   {victim}: FAILED (NonZeroExitCode) in slurm task" in follow_log
    assert "[report]" in follow_log and "[release]" in follow_log, follow_log[-3000:]
    assert f"training {victim}: FAILED" in missing_and_failed(study)
    assert len(list(study.glob("L2L_*/final.json"))) == 13

    # The rerun submits the missing run alone, and a new follow-up job after it.
    second = l2l("study", "--preset", "smoke", "--out", study, "--launcher", "slurm",
                 cwd=tmp_path, env=env)
    again = re.search(r"\[train\] 13 already finished, 1 submitted as slurm job (\d+) \(1 of "
                      r"them again\)", second.stdout)
    follow_again = re.search(r"\[study\] follow-up job (\d+) .* waits for job (\d+)",
                             second.stdout)
    assert again and follow_again, second.stdout
    assert f"[train]   {victim}: submitted again; its last task: FAILED" in second.stdout
    assert [job.runs for job in read_jobs(study) if job.kind == "train"][-1] == (victim,)
    slurm_cluster.wait_jobs(again.group(1), follow_again.group(1), timeout=600)

    # The study folder equals the local launcher's.
    local = smoke_study.study
    assert smoke_study.done.returncode == 0, smoke_study.done.stderr[-3000:]
    assert sorted(p.parent.name for p in study.glob("L2L_*/final.json")) == sorted(
        p.parent.name for p in local.glob("L2L_*/final.json")) == sorted(r.run for r in runs)
    mine, theirs = results(study), results(local)
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        assert mine[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert sections(study) == sections(local)
    assert missing_and_failed(study) == missing_and_failed(local)
    predictions = [pd.read_csv(folder / "predictions.csv") for folder in (study, local)]
    assert predictions[0][["run", "quantity", "law"]].equals(predictions[1][["run", "quantity",
                                                                             "law"]])
    assert predictions[0].prediction.to_numpy() == pytest.approx(
        predictions[1].prediction.to_numpy(), rel=1e-3)
    assert sorted(p.name for p in (study / "figures").iterdir()) == sorted(
        p.name for p in (local / "figures").iterdir())
    assert sorted(p.name for p in (study / "release").iterdir()) == sorted(
        p.name for p in (local / "release").iterdir())


@pytest.mark.slurm
@pytest.mark.parametrize("sbatch_arg, refusal", [
    ("--partition=nope", "invalid partition specified: nope"),
    ("--mem=999999999", "Memory specification can not be satisfied"),
    # what a GPU preset meets on a cluster without GPUs
    ("--gpus-per-node=8", "Invalid generic resource (gres) specification"),
])
def test_a_job_slurm_refuses_is_one_line_and_records_nothing(slurm_cluster, tmp_path,
                                                             sbatch_arg, refusal):
    env = slurm_cluster.env(base_env())
    study = tmp_path / "smoke"
    done = l2l("study", "--preset", "smoke", "--out", study, "--launcher", "slurm",
               f"--sbatch-arg={sbatch_arg}", cwd=tmp_path, env=env, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: slurm refused the train job: ")
    assert refusal in err[0] and "Traceback" not in done.stderr
    assert not (study / "slurm" / "jobs.jsonl").exists()
    assert not slurm_cluster.squeue()
    # and so the next try (without the bad argument) submits the whole study
    dry = l2l("train", study, "--launcher", "slurm", "--dry-run", cwd=tmp_path, env=env)
    assert "[train] 14 would be submitted to slurm" in dry.stdout


def test_without_sbatch_the_slurm_launcher_is_one_line_and_writes_nothing(tmp_path):
    env = {**base_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}/nonexistent"}
    study = tmp_path / "smoke"
    done = l2l("study", "--preset", "smoke", "--out", study, "--launcher", "slurm",
               cwd=tmp_path, env=env, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --launcher slurm: sbatch is not on PATH (no slurm here); add --dry-run to write "
        "the configs and print the sbatch command, or train here with the local launcher"]
    assert not study.exists()  # refused before the plan: no half-made study to clean up
    l2l("plan", "--preset", "smoke", "--out", study, cwd=tmp_path, env=env)
    train = l2l("train", study, "--launcher", "slurm", cwd=tmp_path, env=env, check=False)
    assert train.returncode == 2 and "sbatch is not on PATH" in train.stderr
    assert not (study / "slurm").exists()


@pytest.mark.slurm
def test_an_array_that_can_never_start_is_named_and_a_rerun_replaces_it(slurm_cluster, tmp_path,
                                                                        monkeypatch):
    """sbatch accepts more CPUs per task than any node has (the cluster does not enforce the
    partition's limits) and the array waits for ever, with the follow-up job behind it: ``l2l
    train`` says so and what to do; once it is cancelled, the runs are submitted again."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    env = slurm_cluster.env(base_env())
    study = tmp_path / "smoke"
    l2l("plan", "--preset", "smoke", "--out", study, cwd=tmp_path, env=env)
    first = l2l("train", study, "--launcher", "slurm", "--sbatch-arg=--cpus-per-task=64",
                cwd=tmp_path, env=env)
    job = re.search(r"\[train\] 14 submitted as slurm job (\d+)", first.stdout).group(1)
    deadline = time.monotonic() + 60
    while True:  # slurm gives its reason at its next scheduling pass
        status = l2l("train", study, "--launcher", "slurm", "--dry-run", cwd=tmp_path, env=env)
        if "cannot start" in status.stdout or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert f"[train] 14 queued in slurm job {job}" in status.stdout
    assert (f"[train]   slurm job {job} cannot start as submitted (PartitionConfig), nor can "
            f"what depends on it: `scancel {job}`, then submit again with other --sbatch-arg"
            ) in status.stdout, status.stdout
    subprocess.run(["scancel", job], env=env, check=True, timeout=30)
    slurm_cluster.wait_jobs(job, timeout=60)
    ended = l2l("train", study, "--follow-up", cwd=tmp_path, env=env, check=False)
    assert "[train] 14 failed" in ended.stdout, ended.stdout
    assert re.search(rf": CANCELLED \(PartitionConfig\) in slurm task {job}_\d+, which wrote no "
                     "log", ended.stdout), ended.stdout
    again = l2l("train", study, "--launcher", "slurm", "--dry-run", cwd=tmp_path, env=env)
    assert "[train] 14 would be submitted to slurm (14 of them again)" in again.stdout
