"""What a launch reads and writes, shared by the local launcher (``training.launch``) and the slurm
one (``training.launch.slurm``): the shipped accelerate configs and slurm template, the config
file of every run to train (``STUDY/configs/<run>.yaml``), and a failed run's last words in its
log."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection
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
                      exclude: Collection[str] = (),
                      ) -> list[tuple[PlannedRun, Path]]:
    """Write the config of every unfinished (selected) run; return (run, config path) pairs.
    ``build(study, run)`` makes a run's config (default ``training.study.run_config``; the
    ``l2l`` presets add their learning-rate rule). Runs in ``exclude`` (queued or running under
    slurm, whose task may yet read its config) are left alone.

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
               if (not only or run.run in only) and run.run not in exclude
               and not is_finished(study, run.run)]
    out = study / "configs"
    out.mkdir(exist_ok=True)
    todo = []
    for run, cfg in configs:
        path = out / f"{run.run}.yaml"
        cfg.to_yaml(path)
        todo.append((run, path.resolve()))
    return todo


# A Python exception's last traceback line ("RuntimeError: ...", "torch.OutOfMemoryError: ...").
_EXCEPTION = re.compile(r"^([A-Za-z_]\w*\.)*[A-Za-z_]\w*(Error|Exception|Interrupt)\b")
# What launchers add after a run's own words: srun's and slurmstepd's messages, torchrun's
# failure banner and log records ("E1207 19:37:25.517000 ..."), rules.
_LAUNCHER_LINE = re.compile(r"^(srun|slurmstepd|sbatch): |^[EWI]\d{4} \d\d:|^[=-]{8,}$|"
                            r"^(training FAILED|Failures:|Root Cause|<NO_OTHER_FAILURES>|\[\d+\]:)|"
                            r"^(time|host|rank|exitcode|error_file|traceback) +:")


def failure_line(log: str | Path, default: str = "its log is empty") -> str:
    """Why a run failed, from its log: the trainer's own one-line error (``error: ...``), else
    the last line of a Python traceback, else the last line that no launcher wrote."""
    try:
        lines = [line.strip() for line in
                 Path(log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"no log at {log}"
    for wanted in (lambda line: line.startswith("error: "), _EXCEPTION.match,
                   lambda line: not _LAUNCHER_LINE.match(line)):
        for line in reversed(lines):
            if wanted(line):
                return line
    return default
