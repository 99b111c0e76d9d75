"""Where a study's slurm tasks stand, without a cluster: squeue and sacct replaced by scripts that
answer as slurm 22.05 does, the record of submitted jobs, a failed task's last words among the
launchers' noise, and what a second launch submits. (test_slurm_nodes.py and
tests/l2l/test_slurm_study.py do the same against a real slurm.)"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from tests.training.test_launch import plan_tiny_study
from training.launch import failure_line
from training.launch.slurm import (
    Job,
    SlurmError,
    launch_slurm,
    read_jobs,
    record_job,
    submit,
    task_states,
)

# the end of a slurm task log whose run refused to start (two nodes, torchrun, srun)
FAILED_TASK_LOG = """\
l2l: /s/configs/a.yaml on 2 node(s) x 1 CPU process(es), rendezvous 127.0.0.1:20009 (n1)
W1207 19:37:13.856000 14172 torch/distributed/run.py:865] node_rank is only used for static rdzv
error: batch.global_batch_size: 4 is not a multiple of batch.micro_batch_size (4) x world size (2)
E1207 19:37:25.517000 14171 torch/distributed/elastic/multiprocessing/api.py:1002] failed
============================================================
training FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_19:37:25
  exitcode  : 2 (pid: 14180)
============================================================
srun: error: n1: task 0: Exited with exit code 1
srun: launch/slurm: _step_signal: Terminating StepId=8.0
"""


def test_a_failed_runs_last_words_are_found_among_the_launchers_lines(tmp_path):
    log = tmp_path / "task.out"
    log.write_text(FAILED_TASK_LOG)
    assert failure_line(log) == ("error: batch.global_batch_size: 4 is not a multiple of "
                                 "batch.micro_batch_size (4) x world size (2)")
    log.write_text("step 3\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "torch.OutOfMemoryError: CUDA out of memory\nsrun: error: n1: task 0\n")
    assert failure_line(log) == "torch.OutOfMemoryError: CUDA out of memory"
    log.write_text("step 3 of 10\nslurmstepd: error: *** JOB 12 CANCELLED AT 12:00 ***\n")
    assert failure_line(log) == "step 3 of 10"
    log.write_text("")
    assert failure_line(log, default="exit status 9") == "exit status 9"
    assert failure_line(tmp_path / "none.out") == f"no log at {tmp_path / 'none.out'}"


def fake_slurm(tmp_path, monkeypatch, squeue: str, sacct: str = "", sbatch: str = "") -> None:
    """squeue, sacct and sbatch on PATH that print these lines (empty: exit 1, as squeue does
    for jobs it no longer knows and sacct without accounting)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, out in (("squeue", squeue), ("sacct", sacct), ("sbatch", sbatch)):
        body = f"cat <<'EOF'\n{out}\nEOF" if out else "echo 'slurm_load_jobs error' >&2; exit 1"
        (bin_dir / name).write_text(f"#!/bin/bash\necho \"$@\" >> {bin_dir}/{name}.calls\n"
                                    f"{body}\n")
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_states_come_from_squeue_then_sacct_then_the_folder(tmp_path, monkeypatch):
    study = tmp_path / "study"
    logs = study / "slurm"
    record_job(study, Job(job="12", kind="train", runs=("a", "b", "c"),
                          log=f"{logs}/l2l-study-12_{{index}}.out"))
    record_job(study, Job(job="15", kind="train", runs=("c", "d", "e"),
                          log=f"{logs}/l2l-study-15_{{index}}.out"))
    (logs / "l2l-study-12_1.out").write_text("error: disk full\nsrun: error: n1: task 0\n")
    fake_slurm(tmp_path, monkeypatch,
               squeue="12_0|RUNNING|None\n12_1|FAILED|NonZeroExitCode\n15_1|PENDING|Resources",
               sacct="15_0|CANCELLED by 0|0:15")
    states = task_states(study, ["a", "b", "c", "d", "e", "never"])
    assert set(states) == {"a", "b", "c", "d", "e"}  # "never" was never submitted
    assert (states["a"].state, states["a"].in_flight) == ("RUNNING", True)
    assert states["b"].why() == (f"FAILED (NonZeroExitCode) in slurm task 12_1: error: disk "
                                 f"full (log: {logs / 'l2l-study-12_1.out'})")
    # c's latest task is job 15's index 0, which squeue has forgotten and sacct knows
    assert (states["c"].task, states["c"].state, states["c"].reason) == ("15_0", "CANCELLED",
                                                                         "exit 0:15")
    assert states["d"].where() == "PENDING (Resources) in slurm task 15_1"
    assert states["e"].state == "GONE" and not states["e"].in_flight
    assert "no longer known to slurm in slurm task 15_2" in states["e"].why()
    calls = (tmp_path / "bin" / "squeue.calls").read_text()
    assert "--jobs=12,15" in calls and "--states=all" in calls and "--array" in calls
    assert "--jobs=15" in (tmp_path / "bin" / "sacct.calls").read_text()


def test_a_second_launch_leaves_queued_runs_alone_and_resubmits_failed_ones(
        tmp_path, tokenizer_dir, data_dir, monkeypatch):
    study = tmp_path / "study"
    runs = [run.run for run in plan_tiny_study(study, tokenizer_dir, data_dir)]
    fake_slurm(tmp_path, monkeypatch, squeue="", sbatch="31")
    first = launch_slurm(study)
    assert first.job.job == "31" and [run.run for run, _ in first.todo] == runs
    configs = {run: (study / "configs" / f"{run}.yaml").stat().st_mtime_ns for run in runs}
    fake_slurm(tmp_path, monkeypatch, squeue="31_0|PENDING|Priority\n31_1|FAILED|NonZeroExit",
               sbatch="32")
    second = launch_slurm(study, overrides=["optim.lr=1e-3"])
    assert list(second.in_flight) == [runs[0]] and list(second.retried) == [runs[1]]
    assert [run.run for run, _ in second.todo] == [runs[1]] and second.job.job == "32"
    # the queued run's config is not rewritten under its pending task
    assert (study / "configs" / f"{runs[0]}.yaml").stat().st_mtime_ns == configs[runs[0]]
    assert [(job.job, job.runs) for job in read_jobs(study)] == [("31", tuple(runs)),
                                                                  ("32", (runs[1],))]
    # each array has its own list of configs: the pending one's is not overwritten
    lists = sorted((study / "slurm").glob("array-*.txt"))
    assert len(lists) == 2 and {len(p.read_text().splitlines()) for p in lists} == {1, 2}


def test_a_refused_submission_is_one_line_and_recorded_nowhere(tmp_path, monkeypatch):
    study = tmp_path / "study"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/bash\necho 'sbatch: error: invalid partition specified: nope' >&2\n"
        "echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2\n"
        "exit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    with pytest.raises(SlurmError) as refused:
        submit(study, [str(bin_dir / "sbatch"), "--parsable", "--wrap", "true"], kind="train")
    assert str(refused.value) == ("slurm refused the train job: invalid partition specified: "
                                  "nope; Batch job submission failed: Invalid partition name "
                                  "specified")
    assert read_jobs(study) == []
    with pytest.raises(SlurmError, match="sbatch is not on PATH"):
        submit(study, [str(tmp_path / "missing" / "sbatch")], kind="train")


def test_a_damaged_job_record_is_named(tmp_path):
    study = tmp_path / "study"
    record_job(study, Job(job="12", kind="train", runs=("a",)))
    with open(study / "slurm" / "jobs.jsonl", "a") as out:
        out.write("{not json\n")
    with pytest.raises(ValueError, match=r"jobs.jsonl, line 2: not a job record"):
        read_jobs(study)


def test_the_log_pattern_follows_sbatch_output(tmp_path, monkeypatch):
    fake_slurm(tmp_path, monkeypatch, squeue="", sbatch="77;cluster")
    job = submit(tmp_path, ["sbatch", "--parsable", "--job-name=l2l-x", "--output=/a/%x-%A_%a.out",
                            "--output=/b/%x-%A_%a.out", "--wrap", "true"], kind="train")
    assert job.job == "77" and job.log == "/b/l2l-x-77_{index}.out"
    assert subprocess.run(["sbatch"], capture_output=True, text=True).stdout.strip() == "77;cluster"
