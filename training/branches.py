"""Warmup-stable-decay trunks and their decay branches: planning, launch order, branch start.

With a WSD schedule (``training.schedule``) a run is, until its decay starts, the same whatever
its length. So the runs of one model on one corpus (a *shape* of a study's grid) share one
*trunk*, the longest of them, trained in full; every other run of the shape is a *branch*: it
starts from the trunk's checkpoint at its own decay's first step (``decay_start``), decays to its
own token count and ends as a run folder like any other (Hägele et al. 2024; OLMo-core's ladder
and marin train their ladders so). A ladder that trains each size to several token counts then
costs about its longest runs.

Exactness. A branch's config is the trunk's except for its length (``run.tokens``), name and
the two fields that tie it to the trunk: ``schedule.trunk`` (the trunk's run folder) and
``schedule.trunk_steps`` (the trunk's steps: every run of a trunk reads the data order of that
length, so the branch's step ``s`` reads the trunk's sequences of step ``s``). The warmup is
the same number of steps for every run of a trunk (the planner sets it in tokens), and the
trunk checkpoints, and keeps, every branch's step (``checkpoint.keep_steps``). The branch
starts by committing a hard-linked copy of that checkpoint into its own ``checkpoints/`` and
resuming from it as from its own, so it equals the same schedule trained in one go
(``tests/training/test_wsd.py``). It refuses, in one line naming the trunk, a trunk folder or
checkpoint that is missing or damaged, a trunk trained with another recipe, and a branch step
beyond the trunk's stable phase: a branch is never trained from another state.

Launch order: a trunk (or a run that branches off nothing) depends on nothing; a branch on its
trunk's successful end (``depends_on``). ``train_in_order`` trains a study's runs here with that
order (branches of one trunk in parallel); ``launch_waves`` lays them out for slurm arrays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from training.checkpoint import (
    CheckpointError,
    checkpoint_name,
    link_checkpoint,
    read_train_state,
    verify_checkpoint,
)
from training.schedule import decay_start, warmup_steps_for

if TYPE_CHECKING:  # annotations only: training.study imports this module to plan its configs
    from training.study import PlannedRun

BRANCH_RECORD = "branch.json"  # in a branch's run folder: its trunk and branch step
SCHEDULES = ("cosine", "wsd")  # what a study's grid is planned with

# Fields a branch may set differently from its trunk: its length and name, where it lives, how
# often it logs and checkpoints, how much memory a micro-batch takes, and its decay (which starts
# after the trunk's state it starts from). The warmup is compared in steps, the trunk fields
# apart; everything else must be equal, or the branch would continue another run's state.
_FREE_FIELDS = ("run.name", "run.tokens", "run.steps", "run.max_steps", "run.flop_budget",
                "run.output_dir", "checkpoint.", "logging.", "data.hub_mirror",
                "batch.micro_batch_size", "model.gradient_checkpointing", "schedule.kind",
                "schedule.decay_fraction", "schedule.decay_shape", "schedule.warmup_fraction",
                "schedule.warmup_tokens", "schedule.trunk")


class BranchError(CheckpointError):
    """A decay branch cannot start from its trunk: the message names the trunk and the fix."""


# ------------------------------------------------------------------------------- planning
def plan_branches(runs: Sequence[PlannedRun], decay_fraction: float,
                  only: Collection[str] | None = None) -> list[PlannedRun]:
    """``runs`` planned as WSD trunks and branches: the runs (all, or those named in ``only``;
    the others keep their schedule) of each corpus and shape (and batch) share one trunk, the
    one with the most steps; each records its schedule, its trunk (a trunk names itself) and the
    step at which its decay starts, where a branch leaves its trunk. Trunks (and the runs of
    other schedules) come first, in their order, then the branches: a launcher that trains the
    table in sequence trains every trunk before its branches."""
    if not 0 < decay_fraction < 1:
        raise ValueError(f"decay fraction {decay_fraction} must lie in (0, 1)")
    groups: dict[tuple, list[PlannedRun]] = {}
    for run in runs:
        if only is None or run.run in only:
            groups.setdefault(_shape_key(run), []).append(run)
    planned = {}
    for members in groups.values():
        trunk = max(members, key=lambda r: (r.steps, r.C))
        for run in members:
            planned[run.run] = replace(run, schedule="wsd", trunk=trunk.run,
                                       branch_step=decay_start(run.steps, decay_fraction))
    return sorted((planned.get(run.run, run) for run in runs), key=is_branch)


def _shape_key(run: PlannedRun) -> tuple:
    return (run.dataset, run.d_model, run.n_layers, run.global_batch_size, run.seq_len)


def is_branch(run: PlannedRun) -> bool:
    """Whether the run starts from another run's checkpoint (a WSD branch, not its trunk)."""
    return bool(run.trunk) and run.trunk != run.run


def depends_on(run: PlannedRun) -> str | None:
    """The run that must have finished before this one starts: a branch's trunk, else None."""
    return run.trunk if is_branch(run) else None


def trained_fraction(run: PlannedRun) -> float:
    """The part of a run's steps that the plan trains for it: a branch only its decay (the
    steps before it are its trunk's), every other run all of them."""
    if not is_branch(run):
        return 1.0
    return (run.steps - run.branch_step) / run.steps


def train_flops(runs: Sequence[PlannedRun]) -> float:
    """The FLOPs the plan trains, in the runs' C (6 N D on a ladder, the budget on an iso-FLOP
    grid): every trunk and every cosine run once, of each branch only its decay."""
    return sum(run.C * trained_fraction(run) for run in runs)


def grid_flops(runs: Sequence[PlannedRun]) -> float:
    """The sum of every point's C, each as if trained alone (what a cosine plan trains)."""
    return sum(run.C for run in runs)


def branch_settings(run: PlannedRun, plan: Sequence[PlannedRun], *, warmup_fraction: float,
                    warmup_tokens: int | None) -> dict:
    """The dotted config fields that make ``run`` (a WSD run of ``plan``) the trunk or the
    branch it is planned as: its trunk and the trunk's steps (the data order's length), the
    warmup shared by the trunk's runs (the recipe's warmup of its shortest run, in tokens, so
    that every branch's decay starts after it) and, for a trunk, the steps to keep."""
    members = [r for r in plan if r.trunk == run.trunk]
    trunk = next((r for r in members if r.run == run.trunk), None)
    if trunk is None:
        raise ValueError(f"run {run.run} branches off {run.trunk}, which the plan does not hold")
    tokens_per_step = run.global_batch_size * run.seq_len
    shortest = min(r.steps for r in members)
    warmup = warmup_steps_for(shortest, warmup_fraction, warmup_tokens, tokens_per_step)
    settings = {"schedule.kind": "wsd", "schedule.trunk_steps": trunk.steps,
                "schedule.warmup_tokens": warmup * tokens_per_step,
                "schedule.trunk": run.trunk if is_branch(run) else None,
                "checkpoint.keep_steps": []}
    if not is_branch(run):
        settings["checkpoint.keep_steps"] = sorted({r.branch_step for r in members
                                                    if is_branch(r)})
    return settings


# --------------------------------------------------------------------------- launch order
Item = TypeVar("Item")


@dataclass
class LaunchWaves:
    """A study's unfinished runs laid out for job arrays: ``first`` depends on nothing (cosine
    runs, trunks, branches whose trunk has finished); ``then[k]`` maps an index of ``first`` (a
    trunk) to its k-th branch, so that each is one array whose task ``i`` waits for task ``i``
    of the first array (slurm: ``--dependency=aftercorr:<first array's job>``, which is afterok
    task by task)."""

    first: list = field(default_factory=list)
    then: list[dict[int, object]] = field(default_factory=list)


def launch_waves(todo: Sequence[tuple[PlannedRun, Item]]) -> LaunchWaves:
    """``todo``: (planned run, anything: a config path) of every unfinished run."""
    waves = LaunchWaves()
    index = {}
    for item in todo:
        if depends_on(item[0]) is None or depends_on(item[0]) not in {r.run for r, _ in todo}:
            index[item[0].run] = len(waves.first)
            waves.first.append(item)
    rank: dict[str, int] = {}
    for item in todo:
        trunk = depends_on(item[0])
        if item[0].run in index or trunk is None:
            continue
        k = rank.get(trunk, 0)
        rank[trunk] = k + 1
        if k == len(waves.then):
            waves.then.append({})
        waves.then[k][index[trunk]] = item
    return waves


def train_in_order(todo: Sequence[tuple[PlannedRun, Item]],
                   train_one: Callable[[tuple[PlannedRun, Item]], str | None],
                   workers: int) -> dict[str, str]:
    """Train ``todo`` (unfinished runs) with ``workers`` at a time, each run once every run it
    depends on has ended well: trunks first (the longest first), then their branches, those of
    one trunk in parallel. ``train_one(item)`` returns None on success, else why it failed; a
    branch of a failed trunk is not started and fails naming it. Returns run -> why failed."""
    waiting = {item[0].run: item for item in todo}
    running: dict[str, Future] = {}
    failed: dict[str, str] = {}
    done: set[str] = set()

    def ready(run: PlannedRun) -> bool:  # a trunk outside ``todo`` has finished before
        trunk = depends_on(run)
        return trunk is None or trunk in done or trunk not in (*waiting, *running, *failed)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while waiting or running:
            for name in [n for n, (run, _) in waiting.items() if depends_on(run) in failed]:
                failed[name] = f"not trained: its trunk {depends_on(waiting[name][0])} failed"
                del waiting[name]
            startable = sorted((item for item in waiting.values() if ready(item[0])),
                               key=lambda item: -item[0].C * trained_fraction(item[0]))
            for item in startable[:max(0, workers - len(running))]:
                del waiting[item[0].run]
                running[item[0].run] = pool.submit(train_one, item)
            if not running:
                break
            finished, _ = wait(list(running.values()), return_when=FIRST_COMPLETED)
            for name in [n for n, f in running.items() if f in finished]:
                try:
                    problem = running.pop(name).result()
                except Exception as exc:  # a launcher error: reported for that run, not raised
                    problem = f"{type(exc).__name__}: {exc}"
                if problem is None:
                    done.add(name)
                else:
                    failed[name] = problem
    return failed


# ---------------------------------------------------------------------------- branch start
def branch_step_of(cfg) -> int:
    """The step at which a WSD run leaves its trunk: its decay's first step."""
    return decay_start(cfg.total_steps, cfg.schedule.decay_fraction)


def start_branch(cfg, run_dir: Path, log: Callable[[str], None] = print) -> Path:
    """Seed the new run folder ``run_dir`` of the decay branch ``cfg`` from its trunk: check
    that the trunk was trained with the same recipe and reaches the branch step in its stable
    phase, verify the trunk's checkpoint at that step, and commit a linked copy of it (with the
    trunk's corpus record and metrics up to that step) into the branch. Returns the copied
    checkpoint, which the trainer resumes from. Main process only; ``BranchError`` otherwise."""
    from analysis.atomic import write_atomic
    from training.config import ConfigError, TrainingConfig

    trunk_name = cfg.schedule.trunk
    trunk_dir = Path(cfg.run.output_dir).expanduser() / trunk_name
    name = run_dir.name
    step = branch_step_of(cfg)
    where = f"decay branch {name}: its trunk {trunk_name} ({trunk_dir})"
    saved = trunk_dir / "training_config.yaml"
    if not saved.is_file():
        raise BranchError(f"{where} has not been trained (no training_config.yaml): train the "
                          "trunk first; a branch starts from the trunk's checkpoint at step "
                          f"{step}")
    try:
        trunk_cfg = TrainingConfig.from_yaml(saved)
    except ConfigError as exc:
        raise BranchError(f"{where}: its config cannot be read ({exc}); restore it or train "
                          "the trunk again") from None
    differences = branch_mismatches(trunk_cfg, cfg)
    if differences:
        raise BranchError(f"{where} was trained differently ({'; '.join(differences)}); a "
                          "branch continues its trunk's state, so the two must share the recipe")
    stable_until = trunk_stable_steps(trunk_cfg)
    if step > stable_until:
        raise BranchError(
            f"{where}: the branch step {step} is beyond the trunk's stable phase, which ends at "
            f"step {stable_until} (of {trunk_cfg.total_steps}); a branch must leave its trunk "
            "before the trunk's own decay: branch off a longer trunk")
    checkpoint = trunk_dir / "checkpoints" / checkpoint_name(step)
    if not (checkpoint / "train_state.json").is_file():
        raise BranchError(
            f"{where} has no checkpoint at step {step} ({checkpoint} is missing): train the "
            f"trunk with checkpoint.keep_steps holding {step} (a study's plan sets it), or train "
            "this run from step 0 without schedule.trunk; it is never started from another step")
    problem = verify_checkpoint(checkpoint)
    try:
        state = read_train_state(checkpoint)
    except (OSError, ValueError) as exc:
        state, problem = {}, problem or f"its train_state.json is unreadable ({exc})"
    if problem is None and state.get("step") != step:
        problem = f"its train_state.json says step {state.get('step')}"
    if problem is not None:
        raise BranchError(f"{where}: its checkpoint {checkpoint} is damaged ({problem}); "
                          "restore it from a copy or train the trunk again to that step")
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus = trunk_dir / "corpus.json"
    if corpus.is_file():  # the branch's resume then checks the corpus against the trunk's
        write_atomic(run_dir / "corpus.json", corpus.read_text())
    metrics = trunk_dir / "metrics.jsonl"
    if metrics.is_file():
        kept = [line for line in metrics.read_text().splitlines()
                if _step(line) is not None and _step(line) <= step]
        write_atomic(run_dir / "metrics.jsonl", "".join(line + "\n" for line in kept))
    write_atomic(run_dir / BRANCH_RECORD, json.dumps(
        {"trunk": trunk_name, "branch_step": step, "trunk_steps": trunk_cfg.total_steps,
         "trunk_wall_time_s": state.get("wall_time_s", 0.0)}, indent=1))
    copied = link_checkpoint(checkpoint, run_dir / "checkpoints")
    log(f"{name}: decay branch of {trunk_name}, starting from its checkpoint at step {step}")
    return copied


def start_branch_on_every_process(cfg, run_dir: Path, accelerator,
                                  log: Callable[[str], None] = print) -> Path:
    """``start_branch`` on the main process; every process then resumes from the copied
    checkpoint, or every process raises the main one's ``BranchError`` (none waits forever
    for a main process that refused)."""
    from training.checkpoint import latest_checkpoint

    problem = None
    if accelerator.is_main_process:
        try:
            start_branch(cfg, run_dir, log)
        except BranchError as exc:
            problem = exc
    if accelerator.num_processes > 1:
        import torch

        started = torch.tensor([0.0 if problem else 1.0], device=accelerator.device)
        if float(accelerator.gather(started).min()) == 0.0 and problem is None:
            problem = BranchError(f"decay branch {run_dir.name}: its trunk {cfg.schedule.trunk} "
                                  "cannot be branched off (the main process says why)")
    if problem is not None:
        raise problem
    return latest_checkpoint(run_dir / "checkpoints")


def branch_record(run_dir: Path) -> dict:
    """A branch's ``branch.json`` (its trunk, branch step, the trunk's time to that step), or
    ``{}`` for a run trained from step 0."""
    path = Path(run_dir) / BRANCH_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def trunk_stable_steps(cfg) -> int:
    """The last step at which the trunk ``cfg`` still holds its stable state: its decay's start
    (a constant schedule never decays: its last step)."""
    if cfg.schedule.kind == "constant":
        return cfg.total_steps
    return branch_step_of(cfg)


def branch_mismatches(trunk, branch) -> list[str]:
    """What makes the trunk's state not the one the branch continues, in words (empty: none)."""
    from training.typed_config import flat_fields

    problems = []
    if trunk.schedule.kind not in ("wsd", "constant"):
        problems.append(f"schedule.kind {trunk.schedule.kind} (a trunk is wsd or constant)")
    old, new = flat_fields(trunk.to_dict()), flat_fields(branch.to_dict())
    for key in sorted(old.keys() | new.keys()):
        if key.startswith(_FREE_FIELDS) or old.get(key) == new.get(key):
            continue
        problems.append(f"{key} {old.get(key)!r} in the trunk, {new.get(key)!r} here")
    trunk_horizon = trunk.schedule.trunk_steps or trunk.total_steps
    if branch.schedule.trunk_steps != trunk_horizon:
        problems.append(f"schedule.trunk_steps {branch.schedule.trunk_steps} here, the trunk reads "
                        f"a data order of {trunk_horizon} steps")
    warmups = [warmup_steps_for(c.total_steps, c.schedule.warmup_fraction,
                                c.schedule.warmup_tokens, c.tokens_per_step)
               for c in (trunk, branch)]
    if warmups[0] != warmups[1]:
        problems.append(f"a warmup of {warmups[0]} steps in the trunk, {warmups[1]} here")
    return problems


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line).get("step"))
    except (ValueError, TypeError, AttributeError):
        return None


# ------------------------------------------------------------------------------- fitting
def check_one_schedule(schedules: Mapping[str, str | None], allow_mixed: bool = False) -> None:
    """Refuse (``ValueError``) fitting runs of more than one learning-rate schedule together
    (a WSD endpoint and a cosine run at the same (N, D) are different points), unless asked."""
    kinds: dict[str, list[str]] = {}
    for run, kind in schedules.items():
        if kind is not None:
            kinds.setdefault(kind, []).append(run)
    if len(kinds) > 1 and not allow_mixed:
        listed = "; ".join(f"{len(runs)} {kind} (e.g. {sorted(runs)[0]})"
                           for kind, runs in sorted(kinds.items()))
        raise ValueError(f"the grid mixes learning-rate schedules ({listed}); fit each schedule's "
                         "runs apart, or set prediction.mixed_schedules: true in the study spec "
                         "to fit them together")


def saving_line(train: float, grid: float, schedule: str) -> str:
    """One line saying what a plan trains against the cost of its points trained alone."""
    ratio = train / grid if grid > 0 and math.isfinite(grid) else math.nan
    return (f"schedule {schedule}: trains {train:.3g} FLOPs, {ratio:.1%} of the {grid:.3g} its "
            f"points cost trained alone (saves {1 - ratio:.1%})")
