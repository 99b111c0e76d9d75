"""A study under slurm: the job array of ``slurm_train.sh`` that trains its runs, the record of
every job slurm accepted, and where each run's task stands (``squeue``, then ``sacct``, then the
run folder and the task's log).

Everything lives in ``STUDY/slurm/``::

    jobs.jsonl                  one line per job that sbatch accepted, written only once it has:
                                {"job", "kind", "runs", "log", "after", "submitted"}; nothing in
                                it is a job that slurm refused
    array-<hash>.txt            an array's configs, one per task index (the template's @LIST),
                                named by its content: a pending array's list is never rewritten
                                with other runs
    l2l-<study>-<job>_<i>.out   the output of each array task

A run is finished when its folder holds ``final.json``, whatever slurm says. An unfinished run
whose latest task is queued or running is *in flight* and is not submitted again; one whose task
ended (failed, cancelled, timed out, or forgotten by slurm) is submitted again by the next
``--slurm`` launch, which says why it failed and where its log is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from analysis.atomic import write_atomic
from training.study import PlannedRun

SLURM_DIR = "slurm"
JOBS = "jobs.jsonl"
TIMEOUT_S = 60
"""How long sbatch, squeue and sacct may take to answer (a slurmctld under load is slow)."""
# squeue's and sacct's words for a job that has not ended.
IN_FLIGHT = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED",
                       "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "SIGNALING",
                       "STAGE_OUT", "STOPPED"})
GONE = "GONE"
"""The state of a task that neither squeue nor sacct knows any more."""
# squeue's reasons for a pending job that will not start as it was submitted: sbatch accepts a
# job beyond the partition's limits (more nodes or CPUs than it has, unless the cluster sets
# EnforcePartLimits), and it waits for ever, with everything that depends on it.
NEVER_STARTS = frozenset({"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit",
                          "BadConstraints", "DependencyNeverSatisfied", "InvalidAccount",
                          "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed"})


class SlurmError(RuntimeError):
    """No slurm here, or slurm refused a job or did not answer; the message is one line."""


@dataclass(frozen=True)
class Job:
    """A job that sbatch accepted."""

    job: str
    kind: str
    """``train`` (an array of runs) or the caller's word for another job (``follow-up``)."""
    runs: tuple[str, ...] = ()
    """The run of each array index ("" for an index the array does not have)."""
    log: str = ""
    """Its output file (``{index}`` stands for the array index)."""
    after: tuple[str, ...] = ()
    """The jobs it waits for."""
    submitted: str = ""


@dataclass(frozen=True)
class TaskState:
    """Where one run's latest slurm task stands."""

    run: str
    task: str
    """``<array job>_<index>``"""
    state: str
    """slurm's word (PENDING, RUNNING, FAILED, TIMEOUT, ...), or GONE"""
    reason: str
    """squeue's reason or sacct's exit code, when slurm gave one"""
    log: Path

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT

    @property
    def never_starts(self) -> bool:
        """Queued for a reason that waiting does not remove (see NEVER_STARTS)."""
        return self.state == "PENDING" and self.reason in NEVER_STARTS

    def where(self) -> str:
        """A queued or running task, in words: ``PENDING (Resources) in slurm task 12_3``."""
        reason = f" ({self.reason})" if self.reason and self.reason != "None" else ""
        return f"{self.state}{reason} in slurm task {self.task}"

    def why(self) -> str:
        """What became of an ended task, in one line: slurm's state, the run's own last words
        and the log that holds the rest."""
        state = ("no longer known to slurm" if self.state == GONE else self.state) + (
            f" ({self.reason})" if self.reason and self.reason != "None" else "")
        from training.launch.files import failure_line

        if not self.log.is_file():
            return f"{state} in slurm task {self.task}, which wrote no log ({self.log})"
        return f"{state} in slurm task {self.task}: {failure_line(self.log)} (log: {self.log})"


def slurm_dir(study_dir: str | Path) -> Path:
    return Path(study_dir).resolve() / SLURM_DIR


def require_sbatch(what: str) -> None:
    """Refuse, before anything is written, where there is no slurm to submit to."""
    if shutil.which("sbatch") is None:
        raise SlurmError(f"{what}: sbatch is not on PATH (no slurm here); add --dry-run to write "
                         "the configs and print the sbatch command, or train here with the "
                         "local launcher")


def runs_on_cpu(accelerate_config_path: Path | None) -> bool:
    """Whether runs launched with this accelerate config train on CPUs: the shipped ``cpu`` and
    ``cpu_ddp`` (which says ``use_cpu: false`` only so that accelerate starts several processes)
    or any config with ``use_cpu: true``."""
    from training.launch.files import ACCELERATE_CONFIGS

    if accelerate_config_path is None:
        return False
    path = Path(accelerate_config_path).resolve()
    if path in (ACCELERATE_CONFIGS["cpu"].resolve(), ACCELERATE_CONFIGS["cpu_ddp"].resolve()):
        return True
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    return isinstance(config, dict) and config.get("use_cpu") is True


def slurm_submission(study_dir: str | Path, todo: list[tuple[PlannedRun, Path]],
                     sbatch_args: list[str], max_parallel: int | None = None,
                     accelerate_config_path: Path | None = None, *,
                     indices: list[int] | None = None, dependency: str | None = None
                     ) -> list[str]:
    """Write the array's list of configs (``STUDY/slurm/array-<hash>.txt``) and return the sbatch
    command that submits ``slurm_train.sh`` with one task per run.

    ``indices``: the array index of each run (default 0, 1, ...), its config on that line of the
    list; a WSD branch array takes its trunks' indices in the first array, so that
    ``dependency="aftercorr:<first job>"`` starts each branch once its own trunk has ended well.
    A task whose dependency can never be met (its trunk failed) is cancelled, not left pending
    for ever with the jobs that wait for it (``--kill-on-invalid-dep=yes``).

    CPU configs ask for CPU nodes (``--gpus-per-node=0 --cpus-per-task=1``, against the
    template's 8 GPUs); ``sbatch_args`` come last, so that they override any of these. The
    tasks run this Python (``L2L_PYTHON``), whether or not its environment is activated."""
    from training.launch.files import SLURM_TEMPLATE

    out = slurm_dir(study_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices = list(range(len(todo))) if indices is None else list(indices)
    lines = [""] * (max(indices) + 1)
    for index, (_, config) in zip(indices, todo, strict=True):
        lines[index] = str(config)
    text = "".join(f"{line}\n" for line in lines)
    listing = out / f"array-{hashlib.sha1(text.encode()).hexdigest()[:12]}.txt"
    if not listing.is_file():
        write_atomic(listing, text)
    array = _array_spec(indices) + (f"%{max_parallel}" if max_parallel else "")
    after = [f"--dependency={dependency}", "--kill-on-invalid-dep=yes"] if dependency else []
    export = f"--export=ALL,L2L_PYTHON={sys.executable}"
    if accelerate_config_path is not None:
        export += f",ACCELERATE_CONFIG={Path(accelerate_config_path).resolve()}"
    cpu = ["--gpus-per-node=0", "--cpus-per-task=1"] if runs_on_cpu(accelerate_config_path) else []
    return ["sbatch", "--parsable", f"--array={array}", *after,
            f"--job-name={job_name(study_dir)}", f"--output={out}/%x-%A_%a.out", *cpu, export,
            *sbatch_args, str(SLURM_TEMPLATE), f"@{listing}"]


def _array_spec(indices: list[int]) -> str:
    """sbatch's ``--array`` for these indices: ``0-3,5,7-8``."""
    spans: list[list[int]] = []
    for index in sorted(indices):
        if spans and index == spans[-1][1] + 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def job_name(study_dir: str | Path) -> str:
    return f"l2l-{Path(study_dir).resolve().name}"


def submit(study_dir: str | Path, cmd: list[str], *, kind: str, runs: list[str] = (),
           after: list[str] = ()) -> Job:
    """Run ``cmd`` (an ``sbatch --parsable`` command) and record the job it made in
    ``STUDY/slurm/jobs.jsonl``; a refusal is a ``SlurmError`` and records nothing."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise SlurmError("sbatch is not on PATH (no slurm here)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"sbatch did not answer within {TIMEOUT_S} s (is slurmctld up? "
                         "`sinfo`); it may have submitted the job without telling: see `squeue "
                         "--me`, and scancel it before running this again") from None
    job_id = done.stdout.strip().split(";")[0]  # "12" or "12;cluster"
    if done.returncode != 0 or not job_id.isdigit():
        raise SlurmError(f"slurm refused the {kind} job: {_sbatch_error(done)}")
    job = Job(job=job_id, kind=kind, runs=tuple(runs), log=_log_pattern(cmd, job_id),
              after=tuple(after), submitted=time.strftime("%Y-%m-%d %H:%M:%S"))
    record_job(study_dir, job)
    return job


def _sbatch_error(done: subprocess.CompletedProcess) -> str:
    lines = [line.removeprefix("sbatch: error: ").strip()
             for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("sbatch: ")] or lines
    return "; ".join(dict.fromkeys(lines)) or f"sbatch exited with status {done.returncode}"


def _log_pattern(cmd: list[str], job_id: str) -> str:
    """The task output that ``--output`` names (the last given wins, as in sbatch), with the job
    filled in and ``{index}`` for the array index."""
    output = [arg.split("=", 1)[1] for arg in cmd if arg.startswith("--output=")]
    if not output:
        return ""
    name = next((arg.split("=", 1)[1] for arg in reversed(cmd) if arg.startswith("--job-name=")),
                "")
    return (output[-1].replace("%x", name).replace("%A", job_id).replace("%j", job_id)
            .replace("%a", "{index}"))


def record_job(study_dir: str | Path, job: Job) -> None:
    path = slurm_dir(study_dir) / JOBS
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.is_file() else ""
    write_atomic(path, old + json.dumps(asdict(job)) + "\n")


def read_jobs(study_dir: str | Path) -> list[Job]:
    """Every job slurm accepted for this study, oldest first."""
    path = slurm_dir(study_dir) / JOBS
    if not path.is_file():
        return []
    jobs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            jobs.append(Job(**{**row, "runs": tuple(row.get("runs", ())),
                               "after": tuple(row.get("after", ()))}))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}, line {number}: not a job record ({exc}); it lists the "
                             "jobs submitted for this study: repair or remove that line") from None
    return jobs


def query_jobs(job_ids: list[str], tasks: set[str] = frozenset()) -> dict[str, tuple[str, str]]:
    """``{task or job id: (state, reason)}`` for every task of these jobs that slurm still
    knows: ``squeue`` for the queued and the recently ended, ``sacct`` (where accounting is on)
    for a job squeue has forgotten, or forgotten one of ``tasks`` of. An id neither knows is
    left out."""
    found: dict[str, tuple[str, str]] = {}
    if not job_ids:
        return found
    rows = _ask(["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(job_ids)}",
                 "--format=%i|%T|%r"])
    for row in rows:
        if len(row) == 3:
            found[row[0]] = (row[1], row[2])
    unknown = [job for job in job_ids
               if not any(task == job or task.startswith(f"{job}_") for task in found)
               or any(task.startswith(f"{job}_") and task not in found for task in tasks)]
    if unknown:
        rows = _ask(["sacct", "--noheader", "--parsable2", "--allocations",
                     f"--jobs={','.join(unknown)}", "--format=JobID,State,ExitCode"])
        for row in rows:
            if len(row) == 3 and row[0] not in found:
                found[row[0]] = (row[1].split()[0] if row[1] else GONE, f"exit {row[2]}")
    return found


def _ask(cmd: list[str]) -> list[list[str]]:
    """The rows of a squeue or sacct listing; none where the tool is missing, slurm does not
    know the jobs (squeue's "Invalid job id") or keeps no accounting (sacct)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        return []
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{cmd[0]} did not answer within {TIMEOUT_S} s; is slurmctld up "
                         "(`sinfo`)?") from None
    if done.returncode != 0:
        return []
    return [line.strip().split("|") for line in done.stdout.splitlines() if line.strip()]


def task_states(study_dir: str | Path, runs: list[str]) -> dict[str, TaskState]:
    """The state of the latest task of each of these runs that was ever submitted."""
    latest: dict[str, tuple[Job, int]] = {}
    for job in read_jobs(study_dir):
        if job.kind == "train":
            for index, run in enumerate(job.runs):
                if run:  # a branch array's indices are its trunks': the others are empty
                    latest[run] = (job, index)
    wanted = {run: latest[run] for run in runs if run in latest}
    queue = query_jobs(sorted({job.job for job, _ in wanted.values()}, key=int),
                       {f"{job.job}_{index}" for job, index in wanted.values()})
    states = {}
    for run, (job, index) in wanted.items():
        task = f"{job.job}_{index}"
        state, reason = queue.get(task, (GONE, ""))
        states[run] = TaskState(run=run, task=task, state=state, reason=reason,
                                log=Path(job.log.format(index=index)))
    return states


def in_flight_jobs(study_dir: str | Path, kind: str | None = None) -> list[Job]:
    """The study's jobs (of this kind) that slurm has not finished: queued, running, or an
    array with a task that is."""
    jobs = [job for job in read_jobs(study_dir) if kind is None or job.kind == kind]
    queue = query_jobs([job.job for job in jobs])
    return [job for job in jobs
            if any(state in IN_FLIGHT for task, (state, _) in queue.items()
                   if task == job.job or task.startswith(f"{job.job}_"))]


@dataclass
class SlurmLaunch:
    """What one ``--slurm`` launch found and did."""

    finished: list[str]
    """selected runs already finished"""
    in_flight: dict[str, TaskState]
    """runs whose task is queued or running: not submitted again"""
    retried: dict[str, str]
    """runs whose last task ended without finishing them -> why; submitted again"""
    todo: list[tuple[PlannedRun, Path]]
    """the runs of the new arrays (or of those a dry run would submit)"""
    commands: list[list[str]] = field(default_factory=list)
    """the sbatch command of each array: the first, then each wave of WSD decay branches"""
    jobs: list[Job] = field(default_factory=list)
    """the arrays slurm accepted, in that order"""

    @property
    def command(self) -> list[str] | None:
        """The first array's sbatch command (the only one where no run is a WSD branch)."""
        return self.commands[0] if self.commands else None

    @property
    def job(self) -> Job | None:
        return self.jobs[0] if self.jobs else None


def launch_slurm(study_dir: str | Path, *, overrides: list[str] | None = None,
                 only: list[str] | None = None, build=None, sbatch_args: list[str] = (),
                 max_parallel: int | None = None, accelerate_config_path: Path | None = None,
                 dry_run: bool = False, what: str = "--slurm") -> SlurmLaunch:
    """Submit every unfinished (selected) run that no task is queued for or running as one job
    array, and WSD decay branches as arrays that wait for their trunks' tasks (``_arrays``);
    ``dry_run`` writes the configs and the arrays' lists and submits nothing."""
    from training.launch.files import write_run_configs
    from training.study import is_finished, read_plan, run_config

    if not dry_run:
        require_sbatch(what)  # before writing configs that could not be submitted
    study = Path(study_dir)
    selected = [run.run for run in read_plan(study) if not only or run.run in only]
    unfinished = [run for run in selected if not is_finished(study, run)]
    states = task_states(study, unfinished)
    in_flight = {run: state for run, state in states.items() if state.in_flight}
    todo = write_run_configs(study, overrides, only, build or run_config, exclude=in_flight)
    launched = SlurmLaunch(
        finished=[run for run in selected if run not in unfinished], in_flight=in_flight,
        retried={run.run: states[run.run].why() for run, _ in todo if run.run in states},
        todo=todo)
    for items, indices, dependency in _arrays(todo, in_flight):
        first = launched.jobs[0].job if launched.jobs else "<first array job id>"
        dependency = dependency.format(first=first) if dependency else None
        command = slurm_submission(study, items, list(sbatch_args), max_parallel,
                                   accelerate_config_path, indices=indices, dependency=dependency)
        launched.commands.append(command)
        if not dry_run:
            runs = [""] * (max(indices) + 1)
            for index, (run, _) in zip(indices, items, strict=True):
                runs[index] = run.run
            launched.jobs.append(submit(study, command, kind="train", runs=runs,
                                        after=[dependency.split(":", 1)[1]] if dependency else []))
    return launched


def _arrays(todo: list[tuple[PlannedRun, Path]], in_flight: dict[str, TaskState]
            ) -> list[tuple[list, list[int], str | None]]:
    """The arrays that train ``todo``: (runs, their array indices,
    sbatch's dependency with ``{first}`` for the first array's job). The first array holds every
    run that waits for nothing; each wave of WSD branches follows it task by task (a trunk's k-th
    branch at the trunk's index, ``aftercorr``); branches whose trunk is already queued or
    running wait for that task (``afterok``)."""
    from training.branches import depends_on, launch_waves

    held: dict[str, list] = {}
    free = []
    for item in todo:
        trunk = depends_on(item[0])
        if trunk in in_flight:
            held.setdefault(in_flight[trunk].task, []).append(item)
        else:
            free.append(item)
    waves = launch_waves(free)
    arrays = [(waves.first, list(range(len(waves.first))), None)] if waves.first else []
    arrays += [([wave[i] for i in sorted(wave)], sorted(wave), "aftercorr:{first}")
               for wave in waves.then]
    arrays += [(items, list(range(len(items))), f"afterok:{task}") for task, items in held.items()]
    return arrays
