"""Studies planned with warmup-stable-decay: the same grid points as cosine, one trunk per corpus
and shape and the other runs as decays branched off it, what that saves recorded and reported,
the configs that make branches exact, fits that refuse mixed schedules, and a small study
trained trunk before branches."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from l2l.cli import main
from l2l.plan import STUDY_RECORD, plan_runs, plan_study
from l2l.presets import PRESETS, get_preset
from l2l.spec import Grid, Shape, StudySpec, Target
from training.branches import grid_flops, is_branch, train_flops
from training.config import TrainingConfig
from training.schedule import decay_start, warmup_steps_for
from training.study import COLUMNS, read_plan
from training.typed_config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def planned(name: str, schedule: str, **changes):
    spec = get_preset(name)
    spec.schedule = schedule
    for key, value in changes.items():
        setattr(spec, key, value)
    return plan_runs(spec.check())


def test_olmo_ladder_with_wsd_trains_at_most_65_percent_of_the_cosine_plan():
    cosine, targets = planned("olmo-ladder", "cosine")
    wsd, wsd_targets = planned("olmo-ladder", "wsd")
    assert {r.run for r in wsd} == {r.run for r in cosine} and wsd_targets == targets
    ratio = train_flops(wsd) / grid_flops(wsd)
    assert grid_flops(wsd) == pytest.approx(train_flops(cosine))
    assert ratio <= 0.65
    # 0.5, 1, 2, 5, 10 x Chinchilla: the 10x trunk plus a 20% decay of the others, per size
    assert ratio == pytest.approx((10 + 0.2 * (0.5 + 1 + 2 + 5)) / 18.5, abs=2e-3)
    trunks = [r for r in wsd if not is_branch(r)]
    assert len(trunks) == 4 and all(r.trunk == r.run for r in trunks)
    for run in wsd:
        trunk = next(t for t in trunks if t.run == run.trunk)
        assert (trunk.d_model, trunk.n_layers) == (run.d_model, run.n_layers)
        assert trunk.steps == max(r.steps for r in wsd if r.trunk == trunk.run)
        assert run.branch_step == decay_start(run.steps, 0.2) <= trunk.branch_step
    # the ladder's largest run, held out as the target, is its size's trunk
    assert set(targets) <= {r.run for r in trunks}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_reports_its_ratio_and_keeps_cosine_by_default(name, capsys):
    assert get_preset(name).schedule == "cosine"
    assert main(["plan", "--preset", name, "--dry-run"]) == 0
    assert "schedule cosine: trains" in capsys.readouterr().out
    assert main(["plan", "--preset", name, "--dry-run", "--schedule", "wsd"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("schedule wsd: trains"))
    runs, _ = planned(name, "wsd")
    assert f"{train_flops(runs) / grid_flops(runs):.1%}" in line
    assert "(wsd trunk)" in out and "(branch of L2L_" in out


def test_targets_can_keep_cosine_to_compare_the_grids_on_the_same_targets():
    runs, targets = planned("tiny", "wsd", target_schedule="cosine")
    aims = [r for r in runs if r.run in targets]
    assert aims and all(r.schedule == "cosine" and not r.trunk for r in aims)
    assert all(r.schedule == "wsd" for r in runs if r.run not in targets)
    cosine, _ = planned("tiny", "cosine")
    assert {(r.run, r.N, r.D, r.C, r.steps) for r in runs} == {
        (r.run, r.N, r.D, r.C, r.steps) for r in cosine}


def test_a_wsd_recipe_is_refused_the_schedule_is_the_studys():
    spec = get_preset("smoke")
    spec.recipe.schedule.kind = "wsd"
    with pytest.raises(ConfigError, match="recipe.schedule.kind: wsd is planned by the study"):
        spec.check()
    spec = get_preset("smoke")
    spec.schedule = "linear"
    with pytest.raises(ConfigError, match="schedule"):
        StudySpec.from_dict(spec.to_dict())


def small_spec(schedule: str = "wsd") -> StudySpec:
    """One corpus, two shapes at three token counts each (a ladder), and one larger target."""
    spec = get_preset("smoke")
    spec.name = "wsd-small"
    spec.corpora = {"python-stdlib": "python-stdlib"}
    spec.tokenizer, spec.recipe.model.vocab_size = "bpe:512", 512
    spec.recipe.batch.global_batch_size = spec.recipe.batch.micro_batch_size = 16
    spec.grid = Grid(shapes=[Shape(64, 1), Shape(64, 2)], tokens_per_param=[0.25, 0.5, 1.0])
    spec.targets = [Target(Shape(128, 2), tokens_per_param=0.5)]
    spec.schedule = schedule
    spec.recipe.checkpoint.every_steps = 20
    spec.recipe.checkpoint.keep_last = 1
    return spec.check()


def test_the_plan_records_its_cost_and_gives_each_run_an_exact_config(tmp_path):
    from training.launch import write_run_configs

    study = tmp_path / "s"
    spec = small_spec()
    runs = plan_study(spec, study)
    record = json.loads((study / STUDY_RECORD).read_text())
    assert record["schedule"] == "wsd" and record["decay_fraction"] == 0.2
    assert record["train_flops"] == pytest.approx(train_flops(runs))
    assert record["grid_flops"] == pytest.approx(sum(r.C for r in runs))
    assert record["train_flops"] < record["grid_flops"]
    table = pd.read_csv(study / "runs.csv")
    assert tuple(table.columns) == COLUMNS and len(table) == 7  # one row per point
    assert set(table.trunk) == {r.run for r in runs if r.trunk == r.run}
    # the launcher's configs: the trunk keeps each branch's step, the branches name the trunk
    # and read its data order, every run of a trunk warms up alike
    configs = {run.run: TrainingConfig.from_yaml(path)
               for run, path in write_run_configs(study, build=lambda folder, run: __import__(
                   "l2l.plan", fromlist=["x"]).run_training_config(folder, run, spec))}
    plan = {r.run: r for r in read_plan(study)}
    for name, cfg in configs.items():
        run = plan[name]
        assert cfg.schedule.kind == "wsd" and cfg.total_steps == run.steps
        trunk_cfg = configs[run.trunk]
        assert cfg.schedule.trunk_steps == trunk_cfg.total_steps
        warmups = {warmup_steps_for(c.total_steps, c.schedule.warmup_fraction,
                                    c.schedule.warmup_tokens, c.tokens_per_step)
                   for c in (cfg, trunk_cfg)}
        assert len(warmups) == 1
        if is_branch(run):
            assert cfg.schedule.trunk == run.trunk and cfg.checkpoint.keep_steps == []
            assert run.branch_step in trunk_cfg.checkpoint.keep_steps
        else:
            assert cfg.schedule.trunk is None
    # a run branching off a run the table does not hold is named
    table.loc[table.run != table.trunk, "trunk"] = "L2L_gone"
    table.to_csv(study / "runs.csv", index=False)
    with pytest.raises(ValueError, match="branches off L2L_gone, which the table does not plan"):
        read_plan(study)


def test_a_plan_written_before_wsd_reads_as_cosine(tmp_path):
    plan_study("smoke", tmp_path / "s")
    table = pd.read_csv(tmp_path / "s" / "runs.csv")
    table.drop(columns=["schedule", "trunk", "branch_step"]).to_csv(tmp_path / "s" / "runs.csv",
                                                                      index=False)
    runs = read_plan(tmp_path / "s")
    assert len(runs) == 14 and all(r.schedule == "cosine" and not r.trunk for r in runs)


def test_sweep_plans_trunks_and_branches_and_says_what_it_saves(tmp_path):
    study = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "-m", "training.sweep", "--grid", "custom", "--preset", "tiny-cpu",
         "--depths", "1", "2", "--multipliers", "1", "4", "16", "--corpora", "python-stdlib",
         "--schedule", "wsd", "--out", str(study)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    runs = read_plan(study)
    assert len(runs) == 6 and sum(not is_branch(r) for r in runs) == 2
    assert [is_branch(r) for r in runs] == [False, False, True, True, True, True]
    ratio = train_flops(runs) / grid_flops(runs)
    assert f"schedule wsd: trains {train_flops(runs):.3g} FLOPs, {ratio:.1%}" in out.stdout


# ----------------------------------------------------------------------------------- fitting
def test_fits_refuse_a_grid_of_mixed_schedules_unless_the_spec_allows_it(tmp_path):
    from l2l.fits import check_grid_schedules

    results = pd.DataFrame({"run": ["a", "b", "c", "t"]})
    for run, kind in (("a", "wsd"), ("b", "wsd"), ("c", "cosine"), ("t", "cosine")):
        (tmp_path / run).mkdir()
        (tmp_path / run / "final.json").write_text(json.dumps({"schedule": kind}))
    spec = small_spec()
    check_grid_schedules(tmp_path, results[results.run != "c"], ["t"], spec)  # targets apart
    with pytest.raises(ValueError, match="mixes learning-rate schedules .*mixed_schedules"):
        check_grid_schedules(tmp_path, results, ["t"], spec)
    spec.prediction.mixed_schedules = True
    check_grid_schedules(tmp_path, results, ["t"], spec)


def test_the_report_says_the_schedule_and_what_it_saved(tmp_path):
    from l2l.report import schedule_line

    study = tmp_path / "s"
    plan_study(small_spec(), study)
    record = json.loads((study / STUDY_RECORD).read_text())
    line = schedule_line(record, read_plan(study))
    assert line.startswith("- schedule wsd: trains ") and "3 trunks and 4 decay branches" in line  # the target alone
    assert "1-sqrt decay over the last 20% of each run; targets wsd" in line
    assert schedule_line({"schedule": "cosine"}, read_plan(study)).startswith(
        "- schedule: cosine (every run trained alone)")


# ------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_a_wsd_study_trains_trunks_before_branches_and_its_endpoints_are_runs(tmp_path):
    """A small WSD study trained here in dependency order: every run folder finishes like a
    cosine run's, the branches record their trunk and step, and their losses follow the
    trunk's until the branch step."""
    from l2l.plan import run_training_config
    from training.launch import run_local, write_run_configs

    study = tmp_path / "s"
    spec = small_spec()
    plan_study(spec, study)
    todo = write_run_configs(study, build=lambda folder, run: run_training_config(folder, run,
                                                                                  spec))
    # the launcher's pool, two at a time: it must hold each branch back until its trunk is done
    assert run_local(todo, workers=2, log_dir=study / "logs") == {}
    for run in read_plan(study):
        final = json.loads((study / run.run / "final.json").read_text())
        assert final["steps"] == run.steps and final["schedule"] == "wsd"
        if is_branch(run):
            assert (final["trunk"], final["branch_step"]) == (run.trunk, run.branch_step)
            losses = [json.loads(x) for x in (study / run.run / "metrics.jsonl").read_text()
                      .splitlines()]
            trunk = [json.loads(x) for x in (study / run.trunk / "metrics.jsonl").read_text()
                     .splitlines()]
            before = [x for x in losses if "loss" in x and x["step"] <= run.branch_step]
            assert before == [x for x in trunk if "loss" in x and x["step"] <= run.branch_step]


def expand(array: str) -> list[int]:
    """sbatch's ``--array`` ("0-2,5") as its indices."""
    spans = [part.split("-") for part in array.split(",")]
    return [i for span in spans for i in range(int(span[0]), int(span[-1]) + 1)]


def test_slurm_submits_branches_as_arrays_that_wait_for_their_own_trunks_task(tmp_path,
                                                                              monkeypatch):
    """Under slurm the trunks (and any run that waits for nothing) are the first array; the k-th
    branch of every trunk is an array at its trunk's indices that starts each task once that
    trunk's task ended well (``aftercorr``), cancelled where it failed; a branch whose trunk is
    still queued or running from an earlier launch waits for that very task (``afterok``)."""
    from l2l.plan import run_training_config
    from training.launch.slurm import launch_slurm, read_jobs

    study = tmp_path / "s"
    spec = small_spec()
    plan_study(spec, study)
    plan = {run.run: run for run in read_plan(study)}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # sbatch answers 40, 41, ...; squeue knows the first array's task 0 as running
    (bin_dir / "sbatch").write_text(
        f'#!/bin/bash\necho "$@" >> {bin_dir}/sbatch.calls\nn=$(cat {bin_dir}/n 2>/dev/null '
        f'|| echo 40)\necho $((n + 1)) > {bin_dir}/n\necho $n\n')
    (bin_dir / "squeue").write_text("#!/bin/bash\necho '40_0|RUNNING|None'\n")
    (bin_dir / "sacct").write_text("#!/bin/bash\nexit 1\n")
    for name in ("sbatch", "squeue", "sacct"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def build(folder, run):
        return run_training_config(folder, run, spec)

    launched = launch_slurm(study, build=build)
    jobs = read_jobs(study)
    assert [job.job for job in launched.jobs] == [job.job for job in jobs] == ["40", "41", "42"]
    first = jobs[0].runs
    assert all(not is_branch(plan[run]) for run in first)
    for job, command in zip(jobs[1:], launched.commands[1:], strict=True):
        assert "--dependency=aftercorr:40" in command and "--kill-on-invalid-dep=yes" in command
        assert job.after == ("40",)
        indices = [i for i, run in enumerate(job.runs) if run]
        array = next(arg for arg in command if arg.startswith("--array=")).split("=")[1]
        assert expand(array) == indices  # the trunks' indices
        listing = Path(command[-1][1:]).read_text().splitlines()
        for i in indices:  # task i is the branch of task i's trunk, its config on line i + 1
            assert plan[job.runs[i]].trunk == first[i]
            assert listing[i] == str(study / "configs" / f"{job.runs[i]}.yaml")
    branches = [run for job in jobs[1:] for run in job.runs if run]
    assert sorted(branches) == sorted(run for run in plan if is_branch(plan[run]))

    # again, with the first array's task 0 (a trunk) running and every other task gone
    again = launch_slurm(study, build=build)
    assert list(again.in_flight) == [first[0]]
    held = [job for job in read_jobs(study)[3:] if job.after == ("40_0",)]
    assert len(held) == 1 and sorted(filter(None, held[0].runs)) == sorted(
        run for run in plan if plan[run].trunk == first[0] and is_branch(plan[run]))
    assert "--dependency=afterok:40_0" in again.commands[-1]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_wsd_study_under_slurm_trains_each_branch_after_its_trunk(slurm_cluster, tmp_path):
    """On a real slurm (two one-CPU nodes): one trunk trains and its branches follow it task by
    task; the other trunk fails (another trainer holds its folder) and slurm cancels its
    branches, which ``l2l train --follow-up`` reports as not trained because of that trunk."""
    from training.run_lock import RunLock

    study = tmp_path / "s"
    plan_study(small_spec(), study)
    plan = read_plan(study)
    trunks = [run for run in plan if run.trunk == run.run and
              any(r.trunk == run.run and is_branch(r) for r in plan)]
    held, free = trunks
    env = slurm_cluster.env({**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})

    def l2l(*args):
        return subprocess.run([sys.executable, "-m", "l2l", *map(str, args)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    (study / held.run).mkdir()
    with RunLock(study / held.run):
        submitted = l2l("train", study, "--launcher", "slurm")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        jobs = re.search(r"\[train\] 7 submitted as slurm jobs ([\d, ]+)", submitted.stdout)
        assert jobs, submitted.stdout
        slurm_cluster.wait_jobs(*jobs.group(1).split(", "), timeout=420)
    ended = l2l("train", study, "--follow-up")
    for run in plan:
        if run.trunk == free.run or run.trunk == run.run and run.run != held.run:
            final = json.loads((study / run.run / "final.json").read_text())
            assert final["steps"] == run.steps, ended.stdout
        if is_branch(run) and run.trunk == free.run:  # it left the trunk's checkpoint
            assert (final["trunk"], final["branch_step"]) == (free.run, run.branch_step)
        if is_branch(run) and run.trunk == held.run:
            assert re.search(rf"{run.run}: not trained: its trunk {held.run} failed \(CANCELLED",
                             ended.stdout), ended.stdout + slurm_cluster.logs()
    assert f"{held.run}: " in ended.stdout and "being trained by another process" in ended.stdout
