"""Launch a planned study: its unfinished runs here, one after the other or a pool of
single-thread processes, or as a slurm job array (one run per index, ``training.launch.slurm``).
The one owner of launching: ``l2l train`` calls it. Also ships the accelerate config files and
the slurm template.

    python -m training.launch STUDY --local                       # in sequence, here
    python -m training.launch STUDY --local --workers 2           # 2 at a time, STUDY/logs/<run>.log
    python -m training.launch STUDY --local --accelerate-config training/launch/ddp.yaml
    python -m training.launch STUDY --slurm --sbatch-args="--partition=gpu" --max-parallel 16
    python -m training.launch STUDY --slurm --accelerate-config cpu   # CPU nodes, one CPU per run
    python -m training.launch STUDY --slurm --dry-run             # write the files, print sbatch

Both modes first write ``STUDY/configs/<run>.yaml``, the full training config of each run
(``training.study.run_config``, plus any dotted overrides given here), and pass ``--resume`` so a
run that was interrupted continues from its last checkpoint. Finished runs (``final.json``) are
skipped; under slurm, so are runs whose task is still queued or running, and a run whose task
failed is submitted again with the reason and the log of its failure.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from training.branches import train_in_order, trained_fraction
from training.config import TrainingConfig
from training.launch.files import (
    ACCELERATE_CONFIGS,
    LAUNCH_DIR,
    SLURM_TEMPLATE,
    accelerate_config,
    failure_line,
    write_run_configs,
)
from training.launch.slurm import SlurmError, launch_slurm
from training.study import PlannedRun, read_plan

# The launcher's API; the shipped files and the run configs live in training.launch.files.
__all__ = ["ACCELERATE_CONFIGS", "LAUNCH_DIR", "SLURM_TEMPLATE", "accelerate_config",
           "failure_line", "main", "run_local", "train_command", "write_run_configs"]


def train_command(config: Path, accelerate_config_path: Path | None = None,
                  num_processes: int | None = None) -> list[str]:
    """The command that trains one run (resuming if it was interrupted)."""
    if accelerate_config_path is None:
        return [sys.executable, "-m", "training", "--config", str(config), "--resume"]
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
           "--config_file", str(accelerate_config_path)]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    return cmd + ["-m", "training", "--config", str(config), "--resume"]


def run_local(todo: list[tuple[PlannedRun, Path]], accelerate_config_path: Path | None = None,
              num_processes: int | None = None, *, workers: int | None = None,
              log_dir: Path | None = None, dry_run: bool = False,
              say: Callable[[str], None] = print) -> dict[str, str]:
    """Train the runs here; return ``{run: why}`` for those that failed (each run is a process of
    its own, so one that fails never takes the others with it).

    Either way a WSD branch starts once its trunk has finished, and is not trained (its why names
    the trunk) where the trunk failed (``training.branches.train_in_order``).

    ``workers=None``: one after the other, each run's output on this terminal, a failure's why
    its exit status. ``workers=N``: a pool of N single-thread processes (threads of runs sharing
    the cores only wait for each other), the largest budgets first so that the pool ends
    together, each appending its output to ``log_dir/<run>.log``; a failure's why is its log's
    ``failure_line``. Plain runs (no accelerate config) train in N ``training.worker``
    processes, one run after another in each, which saves an interpreter's start, torch's and
    transformers' imports per run."""
    if dry_run:
        for run, config in todo:
            say(f"would train {run.run}: {shlex.join(train_command(config, accelerate_config_path, num_processes))}")
        return {}
    if workers is None:
        count = iter(range(1, len(todo) + 1))

        def train_here(item: tuple[PlannedRun, Path]) -> str | None:
            run, config = item
            cmd = train_command(config, accelerate_config_path, num_processes)
            i = next(count)
            say(f"[{i}/{len(todo)}] {run.run}: {shlex.join(cmd)}")
            code = subprocess.run(cmd).returncode
            if code == 0:
                return None
            say(f"[{i}/{len(todo)}] {run.run} failed; continuing with the next run")
            return f"exit status {code}"

        return train_in_order(todo, train_here, workers=1)
    return _run_pool(todo, accelerate_config_path, num_processes, workers, Path(log_dir))


def _run_pool(todo, accelerate_config_path, num_processes, workers: int, log_dir: Path
              ) -> dict[str, str]:
    from tqdm.auto import tqdm

    from training.data import prepare_corpora

    log_dir.mkdir(parents=True, exist_ok=True)
    readable = []
    for _, config in todo:
        try:
            readable.append(TrainingConfig.from_yaml(config))
        except ValueError:
            continue  # that run fails on its own, with its own message
    prepare_corpora(readable)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    # The bar counts FLOPs (C, a branch only its decay's share), not runs: its rate and time
    # left mean something from the first run on, however unequal the runs.
    bar = tqdm(total=sum(run.C * trained_fraction(run) for run, _ in todo), desc="training",
               unit="FLOP", unit_scale=True, bar_format="{l_bar}{bar}| {n:.3g}/{total:.3g} FLOPs "
               "[{elapsed}<{remaining}]{postfix}")
    done = [0]
    in_process = accelerate_config_path is None  # plain runs: a worker trains them in turn
    lock = threading.Lock()
    mine = threading.local()  # each pool thread's training.worker
    started: list[subprocess.Popen] = []

    def train_one(item: tuple[PlannedRun, Path]) -> str | None:
        run, config = item
        log = log_dir / f"{run.run}.log"
        if in_process:
            worker = getattr(mine, "worker", None)
            if worker is None or worker.poll() is not None:
                worker = mine.worker = subprocess.Popen(
                    [sys.executable, "-m", "training.worker"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, text=True, env=env)
                with lock:
                    started.append(worker)
            code, note = _ask(worker, config, log)
        else:
            with open(log, "a") as out:
                code = subprocess.run(train_command(config, accelerate_config_path, num_processes),
                                      stdout=out, stderr=subprocess.STDOUT, env=env).returncode
            note = ""
        with lock:
            done[0] += 1
            bar.update(run.C * trained_fraction(run))
            bar.set_postfix_str(f"{done[0]}/{len(todo)} runs")
        return None if code == 0 else failure_line(log, default=f"exit status {code}") + note

    try:
        # the largest first, so that the pool ends together; branches once their trunk is done
        return train_in_order(todo, train_one, workers)
    finally:
        for worker in started:
            if worker.poll() is None:
                worker.stdin.close()
                worker.wait()
        bar.close()


def _ask(worker: subprocess.Popen, config: Path, log: Path) -> tuple[int, str]:
    """Have a ``training.worker`` train one run; its exit status, and a note when the worker
    died with it (the run is then reported from its log, and a new worker takes the next)."""
    from training.worker import PROTOCOL_DONE

    try:
        worker.stdin.write(f"{config}\t{log}\n")
        worker.stdin.flush()
        answer = worker.stdout.readline()
    except (BrokenPipeError, OSError):
        answer = ""
    if answer.startswith(PROTOCOL_DONE + "\t"):
        return int(answer.split("\t")[1]), ""
    code = worker.wait()
    return code or 1, f" (its process ended with exit status {code})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="study folder written by python -m training.sweep --out")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--local", action="store_true", help="train the runs here, in sequence")
    mode.add_argument("--slurm", action="store_true", help="submit a slurm job array")
    p.add_argument("--accelerate-config", help="shipped name (cpu, cpu_ddp, gpu, ddp, fsdp2) "
                   "or path; default for --local: plain python -m training; for --slurm: the "
                   "template's (fsdp2 on GPU nodes)")
    p.add_argument("--num-processes", type=int, help="--local: processes per run")
    p.add_argument("--workers", type=int, help="--local: runs at once, each a single-thread "
                   "process logging to STUDY/logs/<run>.log (default: one after the other, "
                   "output here)")
    p.add_argument("--sbatch-args", default="", help="extra sbatch options, e.g. "
                   "'--partition=gpu --nodes=2'")
    p.add_argument("--max-parallel", type=int, help="--slurm: array tasks running at once")
    p.add_argument("--only", nargs="+", help="launch only these runs")
    p.add_argument("--dry-run", action="store_true", help="write configs, print the commands")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every run")
    return p


def check_flags(args: argparse.Namespace) -> str | None:
    """A flag that this mode would ignore or a count out of range, in words, or None."""
    mode = "--local" if args.local else "--slurm"
    ignored = {"--local": [("--max-parallel", args.max_parallel is not None),
                           ("--sbatch-args", bool(args.sbatch_args))],
               "--slurm": [("--num-processes", args.num_processes is not None),
                           ("--workers", args.workers is not None)]}[mode]
    for flag, given in ignored:
        if given:
            return f"{flag} is not used with {mode}"
    if args.num_processes is not None and args.accelerate_config is None:
        return "--num-processes needs --accelerate-config (plain python -m training is one process)"
    for flag, value in (("--num-processes", args.num_processes),
                        ("--max-parallel", args.max_parallel), ("--workers", args.workers)):
        if value is not None and value < 1:
            return f"{flag} must be at least 1, got {value}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    problem = check_flags(args)
    if problem:
        parser.error(problem)
    try:
        sbatch_args = shlex.split(args.sbatch_args)
    except ValueError as exc:  # "No closing quotation"
        parser.error(f"--sbatch-args {args.sbatch_args!r}: {exc}")
    try:
        accel = accelerate_config(args.accelerate_config) if args.accelerate_config else None
        if args.slurm:
            return _launch_slurm(args, sbatch_args, accel)
        todo = write_run_configs(args.study, args.overrides, args.only)
        planned = len(read_plan(args.study))
    except (OSError, ValueError, SlurmError) as exc:  # not a study, a bad override or file, no
        parser.exit(2, f"error: {exc}\n")             # slurm, a refused job: named in exc
    print(f"{args.study}: {planned} planned, {planned - len(todo) if not args.only else '-'} "
          f"finished, {len(todo)} to run")
    if not todo:
        return 0
    try:
        failed = run_local(todo, accel, args.num_processes, workers=args.workers,
                           log_dir=Path(args.study) / "logs", dry_run=args.dry_run)
    except (OSError, ValueError) as exc:  # a corpus that cannot be read, found before any run
        parser.exit(2, f"error: {exc}\n")
    for run, why in failed.items():
        print(f"{run} failed: {why}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _launch_slurm(args: argparse.Namespace, sbatch_args: list[str], accel: Path | None) -> int:
    launched = launch_slurm(args.study, overrides=args.overrides, only=args.only,
                            sbatch_args=sbatch_args, max_parallel=args.max_parallel,
                            accelerate_config_path=accel, dry_run=args.dry_run)
    total = len(launched.finished) + len(launched.in_flight) + len(launched.todo)
    print(f"{args.study}: {total} {'selected' if args.only else 'planned'}, "
          f"{len(launched.finished)} finished, {len(launched.in_flight)} queued or running, "
          f"{len(launched.todo)} to run")
    for state in launched.in_flight.values():
        print(f"  {state.run}: {state.where()}" + (
            "; it cannot start as submitted: scancel its job and launch again with other "
            "--sbatch-args" if state.never_starts else ""))
    for run, why in launched.retried.items():
        print(f"  {run}: {why}; submitting it again")
    for command in launched.commands:
        print(shlex.join(command))
    for job in launched.jobs:
        print(f"submitted slurm job {job.job}: {sum(bool(run) for run in job.runs)} run(s)"
              + (f" after {', '.join(job.after)}" if job.after else "")
              + f", each task's output in {job.log.format(index='<index>')}")
    return 0
