"""Warmup-stable-decay: schedule values, trunks that keep their branch points, decay branches
that equal the same schedule trained in one go, bad trunks refused, and the launch order."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import tiny_config, train_until_crash
from training.branches import (
    BranchError,
    LaunchWaves,
    check_one_schedule,
    launch_waves,
    plan_branches,
    train_in_order,
)
from training.checkpoint import list_checkpoints, read_train_state, save_checkpoint
from training.config import ConfigError
from training.schedule import decay_start, decay_steps_for, lr_at_step
from training.study import PlannedRun, run_schedule
from training.trainer import train

TOKENS_PER_STEP = 8 * 32  # tiny_config: 8 sequences of 32


# --------------------------------------------------------------------------------- schedule
def wsd(step: int, shape: str, total: int = 100) -> float:
    return lr_at_step(step, peak_lr=1.0, total_steps=total, warmup_steps=10,
                      final_lr_fraction=0.1, warmup_start_fraction=0.0, kind="wsd",
                      decay_steps=decay_steps_for(total, 0.2), decay_shape=shape)


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_wsd_warms_up_holds_the_peak_then_decays_over_the_last_fifth(shape):
    assert decay_steps_for(100, 0.2) == 20 and decay_start(100, 0.2) == 80
    assert wsd(4, shape) == pytest.approx(0.5)  # warmup as before (1-based update 5 of 10)
    assert [wsd(s, shape) for s in range(9, 80)] == [1.0] * 71  # stable: steps 9..79
    assert wsd(99, shape) == pytest.approx(0.1)  # the last update ends the decay
    assert wsd(500, shape) == pytest.approx(0.1)
    decay = [wsd(s, shape) for s in range(79, 100)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))


def test_wsd_decay_shapes():
    # update 90 (step 89) is 10 of the 20 decay updates: progress 1/2
    assert wsd(89, "linear") == pytest.approx(1.0 - 0.9 * 0.5)
    assert wsd(89, "1-sqrt") == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.5)))
    assert wsd(80, "1-sqrt") == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(1 / 20)))
    with pytest.raises(ValueError, match="decay shape"):
        wsd(90, "cosine")


def test_decay_steps_round_like_the_warmup():
    assert decay_steps_for(1095, 0.2) == 219
    assert decay_steps_for(3, 0.2) == 1  # at least one decayed update
    assert decay_start(743, 0.2) == 743 - 148


def test_wsd_config_errors_name_the_field(tmp_path, tokenizer_dir, data_dir):
    def config(*overrides, steps=20):
        return tiny_config(tokenizer_dir, data_dir, tmp_path, "schedule.kind=wsd", *overrides,
                           steps=steps)

    with pytest.raises(ConfigError, match="schedule.decay_fraction: the decay .* before its"):
        config("schedule.warmup_fraction=0.5", "schedule.decay_fraction=0.6")
    with pytest.raises(ConfigError, match="schedule.decay_fraction"):
        config("schedule.decay_fraction=1.0")
    with pytest.raises(ConfigError, match="schedule.trunk: a decay branch needs"):
        tiny_config(tokenizer_dir, data_dir, tmp_path, "schedule.trunk=other")
    with pytest.raises(ConfigError, match="schedule.trunk_steps: must be at least"):
        config("schedule.trunk_steps=10")
    with pytest.raises(ConfigError, match="schedule.trunk: a run cannot branch off itself"):
        config("schedule.trunk=tiny")
    with pytest.raises(ConfigError, match="schedule.decay_shape"):
        config("schedule.decay_shape=cosine")
    with pytest.raises(ConfigError, match="checkpoint.keep_steps"):
        config("checkpoint.keep_steps=[0]")


# ------------------------------------------------------------------------- trunk and branch
TRUNK_STEPS, BRANCH_STEPS = 20, 10  # the branch decays over its last 2 steps: from step 8
BRANCH_STEP = decay_start(BRANCH_STEPS, 0.2)


def wsd_config(tokenizer_dir, data_dir, out, name, steps, *overrides):
    return tiny_config(tokenizer_dir, data_dir, out, "schedule.kind=wsd",
                       f"schedule.warmup_tokens={2 * TOKENS_PER_STEP}", f"run.name={name}",
                       "checkpoint.every_steps=4", "checkpoint.keep_last=1", *overrides,
                       steps=steps)


def train_trunk(tokenizer_dir, data_dir, out) -> Path:
    train(wsd_config(tokenizer_dir, data_dir, out, "trunk", TRUNK_STEPS,
                     f"checkpoint.keep_steps=[{BRANCH_STEP}]"))
    return out / "trunk"


def branch_config(tokenizer_dir, data_dir, out, *overrides, name="branch", steps=BRANCH_STEPS):
    return wsd_config(tokenizer_dir, data_dir, out, name, steps, "schedule.trunk=trunk",
                      f"schedule.trunk_steps={TRUNK_STEPS}", *overrides)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {x["step"]: x["loss"] for x in lines if "loss" in x}


def test_a_branch_equals_the_same_schedule_trained_in_one_go(tmp_path, tokenizer_dir, data_dir):
    trunk = train_trunk(tokenizer_dir, data_dir, tmp_path)
    # keep_last=1 rotated every other checkpoint away; the branch point stays
    assert [step for step, _ in list_checkpoints(trunk / "checkpoints")] == [BRANCH_STEP,
                                                                               TRUNK_STEPS]
    final = train(branch_config(tokenizer_dir, data_dir, tmp_path))
    alone = train(wsd_config(tokenizer_dir, data_dir, tmp_path, "alone", BRANCH_STEPS,
                             f"schedule.trunk_steps={TRUNK_STEPS}"))
    branch = tmp_path / "branch"
    ours, reference = weights(branch), weights(tmp_path / "alone")
    assert ours.keys() == reference.keys()
    for key in ours:
        assert torch.equal(ours[key], reference[key]), key
    assert losses(branch) == losses(tmp_path / "alone")  # the trunk's steps 1..8, then its own
    assert final["final_val_loss"] == alone["final_val_loss"]
    assert final["steps"] == BRANCH_STEPS and final["D"] == BRANCH_STEPS * TOKENS_PER_STEP
    assert (final["schedule"], final["trunk"], final["branch_step"]) == ("wsd", "trunk", 8)
    assert alone["schedule"] == "wsd" and "trunk" not in alone
    assert run_schedule(branch) == "wsd"
    # the branch's copy of the checkpoint is linked, not moved: the trunk keeps its own
    assert (trunk / "checkpoints" / "step_00000008" / "train_state.json").is_file()
    # finished: the branch is not trained again
    assert train(branch_config(tokenizer_dir, data_dir, tmp_path)) == final
    # the comparison sees the data: in a data order of its own length, the run differs
    train(wsd_config(tokenizer_dir, data_dir, tmp_path, "own-order", BRANCH_STEPS))
    assert losses(tmp_path / "own-order")[1] != losses(branch)[1]


def test_a_branch_killed_after_it_started_resumes_from_its_own_checkpoint(
        tmp_path, tokenizer_dir, data_dir, monkeypatch):
    train_trunk(tokenizer_dir, data_dir, tmp_path)
    train_until_crash(branch_config(tokenizer_dir, data_dir, tmp_path), monkeypatch, step=9)
    with pytest.raises(FileExistsError, match="--resume"):
        train(branch_config(tokenizer_dir, data_dir, tmp_path))  # its own state: as any run
    train(branch_config(tokenizer_dir, data_dir, tmp_path, "checkpoint.resume=true"))
    train(wsd_config(tokenizer_dir, data_dir, tmp_path, "alone", BRANCH_STEPS,
                     f"schedule.trunk_steps={TRUNK_STEPS}"))
    ours, reference = weights(tmp_path / "branch"), weights(tmp_path / "alone")
    assert all(torch.equal(ours[k], reference[k]) for k in ours)


def assert_refused(cfg, match: str) -> None:
    with pytest.raises(BranchError, match=match) as info:
        train(cfg)
    assert "\n" not in str(info.value)
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    assert not list_checkpoints(run_dir / "checkpoints")  # never trained from another state
    assert not (run_dir / "final.json").exists()


def test_bad_trunks_are_refused_in_one_line_naming_them(tmp_path, tokenizer_dir, data_dir):
    assert_refused(branch_config(tokenizer_dir, data_dir, tmp_path, name="early"),
                   "its trunk trunk .* has not been trained")
    trunk = train_trunk(tokenizer_dir, data_dir, tmp_path)
    # beyond the trunk's stable phase: a 20-step branch with a 10% decay leaves at step 18
    assert_refused(branch_config(tokenizer_dir, data_dir, tmp_path,
                                 "schedule.decay_fraction=0.1", name="late",
                                 steps=TRUNK_STEPS),
                   "branch step 18 is beyond the trunk's stable phase, which ends at step 16")
    # another recipe
    assert_refused(branch_config(tokenizer_dir, data_dir, tmp_path, "optim.lr=1e-3",
                                 name="other-lr"),
                   r"was trained differently \(optim.lr 0.003 in the trunk, 0.001 here\)")
    assert_refused(branch_config(tokenizer_dir, data_dir, tmp_path, "schedule.trunk_steps=24",
                                 name="other-data"),
                   "schedule.trunk_steps 24 here, the trunk reads a data order of 20 steps")
    # no checkpoint at the branch step: a 12-step branch leaves at step 10
    assert_refused(branch_config(tokenizer_dir, data_dir, tmp_path, name="unkept", steps=12),
                   r"has no checkpoint at step 10 \(.*step_00000010 is missing\)")
    # a damaged checkpoint
    kept = trunk / "checkpoints" / "step_00000008"
    weights_file = next(kept.rglob("model.safetensors"))
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 0xFF
    weights_file.write_bytes(bytes(data))
    assert_refused(branch_config(tokenizer_dir, data_dir, tmp_path, name="damaged"),
                   "its checkpoint .*step_00000008 is damaged .*does not match its checksum")
    shutil.rmtree(kept)
    assert_refused(branch_config(tokenizer_dir, data_dir, tmp_path, name="gone"),
                   "has no checkpoint at step 8")


def test_the_training_command_says_why_a_branch_cannot_start(tmp_path, tokenizer_dir, data_dir,
                                                             capsys):
    from training.__main__ import main

    config = tmp_path / "branch.yaml"
    branch_config(tokenizer_dir, data_dir, tmp_path).to_yaml(config)
    assert main(["--config", str(config), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: decay branch branch: its trunk trunk") and "\n" not in err


def test_kept_steps_survive_rotation_and_do_not_count_in_keep_last(tmp_path):
    class OneProcess:
        is_main_process = True

        def wait_for_everyone(self):
            pass

        def save_state(self, path, safe_serialization=True):
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "model.safetensors").write_bytes(b"x")

    for step in range(1, 9):
        save_checkpoint(OneProcess(), tmp_path, {"step": step}, keep_last=2, keep_steps={3, 5})
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 5, 7, 8]
    assert read_train_state(tmp_path / "step_00000003")["step"] == 3


# ------------------------------------------------------------------------------- launch order
def planned(name: str, steps: int, trunk: str = "", branch_step: int = 0,
            C: float = 1.0) -> PlannedRun:
    return PlannedRun(run=name, dataset="d", N=1, D=steps, C=C, n_layers=1, d_model=64,
                      steps=steps, tokens_per_param=1.0, global_batch_size=1, seq_len=1,
                      grid="g", schedule="wsd" if trunk else "cosine", trunk=trunk,
                      branch_step=branch_step)


def test_plan_branches_picks_the_longest_run_of_each_shape_as_trunk():
    runs = [planned("a", 10, C=1), planned("b", 50, C=5), planned("c", 100, C=10)]
    other = PlannedRun(**{**runs[0].__dict__, "run": "z", "d_model": 128})
    wsd_runs = plan_branches([*runs, other], 0.2)
    assert [(r.run, r.trunk, r.branch_step) for r in wsd_runs] == [  # trunks first
        ("c", "c", 80), ("z", "z", 8), ("a", "c", 8), ("b", "c", 40)]
    assert all(r.schedule == "wsd" for r in wsd_runs)
    from training.branches import grid_flops, train_flops

    assert grid_flops(wsd_runs) == 17
    assert train_flops(wsd_runs) == pytest.approx(10 + 0.2 * 1 + 0.2 * 5 + 1)
    kept = plan_branches([*runs, other], 0.2, only={"a", "c"})
    assert [(r.run, r.trunk) for r in kept] == [("b", ""), ("c", "c"), ("z", ""), ("a", "c")]


def test_branches_start_after_their_trunk_and_in_parallel():
    todo = [(planned("b1", 10, "t1", 8), None), (planned("b2", 20, "t1", 16), None),
            (planned("t1", 30, "t1", 24, C=3), None), (planned("solo", 5, C=0.5), None),
            (planned("b3", 10, "t2", 8), None), (planned("t2", 30, "t2", 24, C=3), None),
            (planned("b4", 10, "done", 8), None)]  # its trunk finished in an earlier session
    events, both = [], threading.Barrier(2, timeout=10)

    def train_one(item):
        run = item[0]
        events.append(("start", run.run))
        if run.run in ("b1", "b2"):
            both.wait()  # both branches of t1 run at once, or this times out
        if run.run == "t2":
            time.sleep(0.05)
            return "exit status 1"
        events.append(("end", run.run))
        return None

    failed = train_in_order(todo, train_one, workers=2)
    assert failed == {"t2": "exit status 1", "b3": "not trained: its trunk t2 failed"}
    order = [name for what, name in events if what == "start"]
    assert events.index(("start", "b1")) > events.index(("end", "t1"))
    assert events.index(("start", "b2")) > events.index(("end", "t1"))
    assert "b3" not in order and {"b4", "solo", "t1", "t2"} <= set(order)


def test_the_launcher_here_trains_a_branch_after_its_trunk_and_never_after_a_failed_one(
        monkeypatch):
    """``run_local`` in sequence: the plan's trunks before their branches, and a branch of a
    trunk that failed reported, not started (it would fail to start from a missing checkpoint)."""
    import training.launch as launch

    started = []
    monkeypatch.setattr(launch, "train_command", lambda config, *a: (
        started.append(config) or ["false" if config.startswith("t2") else "true"]))
    todo = [(planned("b1", 10, "t1", 8), "b1.yaml"), (planned("t1", 30, "t1", 24, C=3), "t1.yaml"),
            (planned("b3", 10, "t2", 8), "b3.yaml"), (planned("t2", 30, "t2", 24, C=3), "t2.yaml")]
    said = []
    failed = launch.run_local(todo, say=said.append)
    assert failed == {"t2": "exit status 1", "b3": "not trained: its trunk t2 failed"}
    assert started.index("b1.yaml") > started.index("t1.yaml") and "b3.yaml" not in started
    assert said[0].startswith("[1/4] t")  # a trunk first: the largest budget


def test_launch_waves_put_each_branch_at_its_trunks_array_index():
    items = [(planned("t1", 30, "t1", 24), "t1.yaml"), (planned("b1", 10, "t1", 8), "b1.yaml"),
             (planned("b2", 20, "t1", 16), "b2.yaml"), (planned("solo", 5), "solo.yaml"),
             (planned("t2", 30, "t2", 24), "t2.yaml"), (planned("b3", 10, "t2", 8), "b3.yaml"),
             (planned("b4", 10, "gone", 8), "b4.yaml")]
    waves = launch_waves(items)
    assert isinstance(waves, LaunchWaves)
    assert [r.run for r, _ in waves.first] == ["t1", "solo", "t2", "b4"]
    assert [{i: r.run for i, (r, _) in wave.items()} for wave in waves.then] == [
        {0: "b1", 2: "b3"}, {0: "b2"}]


# --------------------------------------------------------------------------------- fitting
def test_fits_refuse_mixed_schedules_unless_asked(tmp_path):
    check_one_schedule({"a": "wsd", "b": "wsd", "c": None})
    with pytest.raises(ValueError, match=r"mixes learning-rate schedules \(1 cosine .*; 2 wsd"):
        check_one_schedule({"a": "wsd", "b": "wsd", "c": "cosine"})
    check_one_schedule({"a": "wsd", "c": "cosine"}, allow_mixed=True)
    run = tmp_path / "run"
    run.mkdir()
    assert run_schedule(run) is None
    (run / "training_config.yaml").write_text("schedule:\n  kind: cosine\n")
    assert run_schedule(run) == "cosine"
    (run / "final.json").write_text(json.dumps({"schedule": "wsd"}))
    assert run_schedule(run) == "wsd"
