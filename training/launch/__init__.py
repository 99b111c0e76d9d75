"""Launch a planned study: every unfinished run, one after the other on this machine, or as a slurm
job array (one run per index). Also ships the accelerate config files and the slurm template.

    python -m training.launch STUDY --local                       # in sequence, here
    python -m training.launch STUDY --local --accelerate-config training/launch/ddp.yaml
    python -m training.launch STUDY --slurm --sbatch-args="--partition=gpu" --max-parallel 16
    python -m training.launch STUDY --slurm --dry-run             # write the files, print sbatch

Both modes first write ``STUDY/configs/<run>.yaml``, the full training config of each run
(``training.study.run_config``, plus any dotted overrides given here), and pass ``--resume`` so a
run that was interrupted continues from its last checkpoint. Finished runs (``final.json``) are
skipped.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from training.config import TrainingConfig
from training.study import PlannedRun, is_finished, read_plan, run_config

LAUNCH_DIR = Path(__file__).resolve().parent
ACCELERATE_CONFIGS = {p.stem: p for p in sorted(LAUNCH_DIR.glob("*.yaml"))}
SLURM_TEMPLATE = LAUNCH_DIR / "slurm_train.sh"


def accelerate_config(name: str) -> Path:
    """A shipped accelerate config by name (cpu, cpu_ddp, gpu, ddp, fsdp2) or a path."""
    if name in ACCELERATE_CONFIGS:
        return ACCELERATE_CONFIGS[name]
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no accelerate config {name!r}; shipped: "
                                f"{', '.join(ACCELERATE_CONFIGS)}")
    return path


def write_run_configs(study_dir: str | Path, overrides: list[str] | None = None,
                      only: list[str] | None = None,
                      build: Callable[[Path, PlannedRun], TrainingConfig] = run_config,
                      ) -> list[tuple[PlannedRun, Path]]:
    """Write the config of every unfinished (selected) run; return (run, config path) pairs.
    ``build(study, run)`` makes a run's config (default ``training.study.run_config``; the
    ``l2l`` presets add their learning-rate rule).

    Raises ``FileNotFoundError`` for a folder that is not a study, ``ValueError`` for a run in
    ``only`` that the study does not plan or an override that does not apply; in both cases
    before anything is written."""
    study = Path(study_dir)
    plan = read_plan(study)  # first: refuse a folder that is not a study before writing in it
    unknown = [name for name in only or () if name not in {run.run for run in plan}]
    if unknown:
        names = [run.run for run in plan]
        close = {name: difflib.get_close_matches(name, names, n=1) for name in unknown}
        shown = ", ".join(f"{name} (did you mean {close[name][0]}?)" if close[name] else name
                          for name in unknown)
        raise ValueError(f"--only: {len(unknown)} run(s) not planned in {study}: {shown}")
    # Every config is built before the first is written, so a bad override writes none.
    configs = [(run, build(study, run).with_overrides(overrides or []).validate())
               for run in plan
               if (not only or run.run in only) and not is_finished(study, run.run)]
    out = study / "configs"
    out.mkdir(exist_ok=True)
    todo = []
    for run, cfg in configs:
        path = out / f"{run.run}.yaml"
        cfg.to_yaml(path)
        todo.append((run, path.resolve()))
    return todo


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
              num_processes: int | None = None, dry_run: bool = False) -> list[str]:
    """Train the runs one after the other; return the names of those that failed."""
    failed = []
    for i, (run, config) in enumerate(todo, 1):
        cmd = train_command(config, accelerate_config_path, num_processes)
        print(f"[{i}/{len(todo)}] {run.run}: {shlex.join(cmd)}", flush=True)
        if dry_run:
            continue
        if subprocess.run(cmd).returncode != 0:
            print(f"[{i}/{len(todo)}] {run.run} failed; continuing with the next run", flush=True)
            failed.append(run.run)
    return failed


def slurm_submission(study_dir: str | Path, todo: list[tuple[PlannedRun, Path]],
                     sbatch_args: list[str], max_parallel: int | None = None,
                     accelerate_config_path: Path | None = None) -> list[str]:
    """Write ``STUDY/configs/array.txt`` (one config per array index) and return the sbatch
    command that submits the study as a job array of ``slurm_train.sh``."""
    study = Path(study_dir).resolve()
    listing = study / "configs" / "array.txt"
    listing.write_text("".join(f"{config}\n" for _, config in todo))
    array = f"0-{len(todo) - 1}" + (f"%{max_parallel}" if max_parallel else "")
    cmd = ["sbatch", f"--array={array}", f"--job-name=l2l-{study.name}",
           f"--output={study / 'slurm'}/%x-%A_%a.out"]
    if accelerate_config_path is not None:
        cmd.append(f"--export=ALL,ACCELERATE_CONFIG={accelerate_config_path.resolve()}")
    return cmd + list(sbatch_args) + [str(SLURM_TEMPLATE), f"@{listing}"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="study folder written by python -m training.sweep --out")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--local", action="store_true", help="train the runs here, in sequence")
    mode.add_argument("--slurm", action="store_true", help="submit a slurm job array")
    p.add_argument("--accelerate-config", help="shipped name (cpu, cpu_ddp, gpu, ddp, fsdp2) "
                   "or path; default for --local: plain python -m training")
    p.add_argument("--num-processes", type=int, help="--local: processes per run")
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
               "--slurm": [("--num-processes", args.num_processes is not None)]}[mode]
    for flag, given in ignored:
        if given:
            return f"{flag} is not used with {mode}"
    if args.num_processes is not None and args.accelerate_config is None:
        return "--num-processes needs --accelerate-config (plain python -m training is one process)"
    for flag, value in (("--num-processes", args.num_processes),
                        ("--max-parallel", args.max_parallel)):
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
    if args.slurm and not args.dry_run and shutil.which("sbatch") is None:
        # before writing hundreds of configs that could not be submitted
        parser.error("--slurm: sbatch is not on PATH (no slurm here); add --dry-run to write "
                     "the configs and print the sbatch command, or train here with --local")
    try:
        accel = accelerate_config(args.accelerate_config) if args.accelerate_config else None
        todo = write_run_configs(args.study, args.overrides, args.only)
        planned = len(read_plan(args.study))
    except (OSError, ValueError) as exc:  # not a study, a bad override or file: named in exc
        parser.exit(2, f"error: {exc}\n")
    print(f"{args.study}: {planned} planned, {planned - len(todo) if not args.only else '-'} "
          f"finished, {len(todo)} to run")
    if not todo:
        return 0
    if args.local:
        failed = run_local(todo, accel, args.num_processes, args.dry_run)
        if failed:
            print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
            return 1
        return 0
    (Path(args.study) / "slurm").mkdir(exist_ok=True)
    cmd = slurm_submission(args.study, todo, sbatch_args, args.max_parallel, accel)
    print(shlex.join(cmd))
    if args.dry_run:
        return 0
    return subprocess.run(cmd).returncode
