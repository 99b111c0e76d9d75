"""The sweep planner: the loss-to-loss grid, ladders, over-training grids, the study folder."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np
import pytest

from analysis.run_names import parse_run_name
from modeling_l2l import paper_param_count
from tests.conftest import shared_path
from training.corpora import PAPER_CORPORA
from training.study import (
    FINAL_NAME,
    finished_folders,
    is_finished,
    read_plan,
    run_config,
    run_finished,
)
from training.sweep import (
    PAPER_BUDGETS,
    ladder_grid,
    loss_to_loss_grid,
    main,
    overtraining_grid,
    plan_runs,
    summarize,
    training_flops,
)


def depths_by_budget(runs):
    found = defaultdict(set)
    for r in runs:
        found[r.C].add(r.n_layers)
    return {c: sorted(v) for c, v in found.items()}


def test_budgets_are_the_papers_geomspace():
    np.testing.assert_allclose(PAPER_BUDGETS[:6], np.geomspace(2e17, 1e19, 6), rtol=1e-12)
    assert PAPER_BUDGETS[6:] == (2.2e19, 4.84e19)


def test_loss_to_loss_grid_depths_per_budget():
    runs = loss_to_loss_grid(["fineweb-100b"])
    by_budget = depths_by_budget(runs)
    assert by_budget[2e17] == list(range(4, 12))
    assert by_budget[4.84e19] == [*range(15, 23), 24, 26, 28, 30, 32]
    assert by_budget[1e21] == [40]
    assert len(runs) == 95 + 1
    for r in runs:
        assert r.N == paper_param_count(r.n_layers) and r.d_model == 64 * r.n_layers
        assert r.D == int(r.C / (6 * r.N))
        assert r.steps == r.D // 524_288
        if r.C != 1e21:
            assert 2 < r.D / r.N < 200
        name = parse_run_name(r.run)
        assert name.dataset == "fineweb-100b"
        assert f"{name.N:.1e}" == f"{r.N:.1e}" and f"{name.C:.1e}" == f"{r.C:.1e}"
    full = loss_to_loss_grid()
    assert len(full) == 6 * 96
    assert {r.dataset for r in full} == set(PAPER_CORPORA)


def test_grid_matches_the_released_sweep():
    """Every released run is in the plan with the same N, D and C, and each budget plans exactly
    the depths that the released runs of that budget use (sweep.csv lacks a few runs per corpus:
    529 released of the 570 planned at budgets up to 4.84e19)."""
    path = shared_path("l2l", "sweep.csv")
    with open(path, newline="") as handle:
        released = list(csv.DictReader(handle))
    planned = {(r.dataset, round(r.C, -14), r.n_layers): r
               for r in loss_to_loss_grid(include_large=False, round_steps=5)}
    released_depths = defaultdict(set)
    for row in released:
        key = (row["data"], round(float(row["iso_flop"]), -14), int(row["n_layers"]))
        assert key in planned, key
        run = planned[key]
        assert run.N == int(row["params"])
        assert run.D == pytest.approx(float(row["tokens"]), abs=1)
        # The released runs took floor(D / 524288) rounded down to a multiple of 5 steps.
        assert run.steps == int(row["steps"])
        released_depths[key[1]].add(key[2])
    planned_depths = defaultdict(set)
    for _dataset, c, n in planned:
        planned_depths[c].add(n)
    assert dict(released_depths) == dict(planned_depths)
    assert len(released) == 529 and len(planned) == 570


def test_ladder_and_overtraining_grids():
    ladder = ladder_grid([4, 8], ["c4"])
    assert sorted({round(r.tokens_per_param, 6) for r in ladder}) == [10, 20, 40, 100, 200]
    assert all(r.C == pytest.approx(6 * r.N * r.tokens_per_param * r.N) for r in ladder)
    over = overtraining_grid([4], ["c4"], multipliers=[5, 640])
    assert [round(r.D / r.N) for r in over] == [5, 640]
    assert {r.grid for r in over} == {"overtrain"}


def test_custom_tiny_grid_and_errors():
    runs = plan_runs([1, 2], ["python-stdlib"], budgets=[1e11, 1e12], ratio_range=(0.5, 500),
                     vocab_size=384, global_batch_size=8, seq_len=32)
    assert runs and all(r.global_batch_size == 8 and r.seq_len == 32 for r in runs)
    assert all(r.steps == r.D // (8 * 32) for r in runs)
    with pytest.raises(ValueError, match="less than one step"):
        plan_runs([8], ["c4"], budgets=[1e9])
    with pytest.raises(ValueError, match="either budgets"):
        plan_runs([8], ["c4"])
    # per-depth batch (OLMo-ladder scales it with N)
    runs = plan_runs([4, 8], ["c4"], tokens_per_param=[20], global_batch_size=lambda n: 32 * n)
    assert [r.global_batch_size for r in runs] == [128, 256]


def test_summary_counts_compute_and_skips_finished(tmp_path):
    runs = loss_to_loss_grid(["starcoder"], include_large=False)
    (tmp_path / runs[0].run).mkdir()
    (tmp_path / runs[0].run / "final.json").write_text("{}")
    s = summarize(runs, study_dir=tmp_path, mfu=0.5, peak_flops=1e15)
    assert s["runs"] == 95 and s["finished"] == 1 and s["to_run"] == 94
    assert s["compute_6ND"] == pytest.approx(sum(6 * r.N * r.D for r in runs))
    flops = sum(training_flops(r) for r in runs[1:])
    assert s["gpu_hours_to_run"] == pytest.approx(flops / (0.5 * 1e15) / 3600)
    # 6 N_matmul + 12 n d T differs from 6 N D: the input embedding is a lookup (a third of N
    # at n = 4), attention scores add 12 n d T
    small, large = runs[0], max(runs, key=lambda r: r.N)
    d = small.d_model
    expected = (6 * (small.N - 32000 * d - (4 * small.n_layers + 1) * d)
                + 12 * small.n_layers * d * 512) * small.steps * 524_288
    assert training_flops(small) == expected
    assert 0.6 < training_flops(small) / (6 * small.N * small.D) < 0.7
    assert 0.95 < training_flops(large) / (6 * large.N * large.D) < 1.1


def test_cli_writes_the_study_folder(tmp_path, capsys):
    study = tmp_path / "study"
    runs = main(["--grid", "custom", "--depths", "1", "2", "--multipliers", "20", "40",
                 "--corpora", "python-stdlib", "model.vocab_size=384", "data.seq_len=32",
                 "batch.global_batch_size=8", "batch.micro_batch_size=4", "--out", str(study)])
    out = capsys.readouterr().out
    assert "4 runs planned" in out and "GPU-hours" in out
    for name in ("runs.csv", "runs.json", "study.json", "base_config.yaml"):
        assert (study / name).is_file()
    assert read_plan(study) == runs
    assert [r["run"] for r in json.loads((study / "runs.json").read_text())] == [r.run for r in runs]
    cfg = run_config(study, runs[-1])
    assert cfg.model.n_layers == runs[-1].n_layers and cfg.model.vocab_size == 384
    assert cfg.run.name == runs[-1].run and cfg.run.output_dir == str(study)
    assert cfg.total_steps == runs[-1].steps and cfg.run.tokens == runs[-1].D
    (study / runs[0].run).mkdir()
    (study / runs[0].run / "final.json").write_text("{}")
    main(["--grid", "custom", "--depths", "1", "2", "--multipliers", "20", "40",
          "--corpora", "python-stdlib", "model.vocab_size=384", "data.seq_len=32",
          "batch.global_batch_size=8", "batch.micro_batch_size=4", "--out", str(study)])
    assert "1 finished, 3 to run" in capsys.readouterr().out


def test_a_run_is_finished_when_its_folder_holds_final_json(tmp_path):
    """training.study's finished test, the one the trainer, evaluation and the release use."""
    for name, make in (("done", "file"), ("running", None), (".release.building-x", "file"),
                       ("odd", "folder")):  # fmt: skip
        (tmp_path / name).mkdir()
        if make == "file":
            (tmp_path / name / FINAL_NAME).write_text("{}")
        elif make == "folder":  # a folder named final.json is not the trainer's summary
            (tmp_path / name / FINAL_NAME).mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert finished_folders(tmp_path) == [tmp_path / "done"]  # hidden folders are not runs
    assert run_finished(tmp_path / "done") and is_finished(tmp_path, "done")
    assert not is_finished(tmp_path, "running") and not is_finished(tmp_path, "absent")


def test_local_corpus_labels_map_back_to_paths(tmp_path):
    files = tmp_path / "my_corpus"
    files.mkdir()
    (files / "a.jsonl").write_text('{"text": "hello"}\n')
    study = tmp_path / "study"
    runs = main(["--grid", "overtrain", "--depths", "1", "--multipliers", "20", "--corpora",
                 str(files), "--preset", "tiny-cpu", "model.vocab_size=384", "--out", str(study)])
    assert runs[0].dataset == "my-corpus"
    assert run_config(study, runs[0]).data.corpus == str(files)


def test_the_release_is_the_planned_grid_launched_as_job_arrays():
    """Why sweep.csv has 529 runs where the rule plans 570 (95 pairs x 6 corpora): its run names
    are slurm array tasks, ``olmo_<job>_<task>``, and every task number is
    1 + 6 x (the pair's position in the plan, budgets then depths ascending) + the corpus'
    position in (fineweb-100b, starcoder, proof-pile-2, fineweb-edu-100b, slimpajama-chunk1,
    smollm-corpus). Job 45006229 ran the 69 pairs of the six geomspace budgets (tasks 1-414),
    45438845 the 26 pairs of 2.2e19 and 4.84e19 (tasks 1-156), 45566725 re-ran 18 of the
    latter. The 41 missing runs are single tasks absent from those arrays, scattered over all
    corpora and D/N from 2.6 to 141: no other reading of the filter (bounds, N without
    embeddings, a minimum of steps) yields the release, the 2 < D/N < 200 rule does."""
    path = shared_path("l2l", "sweep.csv")
    with open(path, newline="") as handle:
        released = list(csv.DictReader(handle))
    corpora = ("fineweb-100b", "starcoder", "proof-pile-2", "fineweb-edu-100b",
               "slimpajama-chunk1", "smollm-corpus")
    plan = loss_to_loss_grid(corpora, include_large=False)
    pairs = sorted({(r.C, r.n_layers) for r in plan})
    arrays = {"45006229": [p for p in pairs if p[0] < 2e19],
              "45438845": [p for p in pairs if p[0] > 2e19],
              "45566725": [p for p in pairs if p[0] > 2e19]}
    assert [len(v) for v in arrays.values()] == [69, 26, 26]
    launched = set()
    for row in released:
        _, job, task = row["name"].split("_")
        pair, corpus = divmod(int(task) - 1, 6)
        c, n = arrays[job][pair]
        assert (corpora[corpus], n) == (row["data"], int(row["n_layers"])), row["name"]
        assert float(row["iso_flop"]) == pytest.approx(c, rel=1e-9)
        launched.add((row["data"], round(c, -14), n))
    planned = {(r.dataset, round(r.C, -14), r.n_layers) for r in plan}
    assert launched <= planned and len(planned - launched) == 41
    assert {d for d, _, _ in planned - launched} == set(corpora)  # scattered, not a filter


TINY = ["--grid", "custom", "--depths", "1", "--multipliers", "20", "--corpora", "python-stdlib",
        "model.vocab_size=384", "data.seq_len=32", "batch.global_batch_size=8",
        "batch.micro_batch_size=4"]


def refused(capsys, argv):
    """The one-line error of a refused command line (exit status 2, no traceback)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_unknown_corpus_is_refused_before_anything_is_written(tmp_path, capsys):
    """It planned (and wrote) a study of a corpus that does not exist; training failed later."""
    study = tmp_path / "study"
    err = refused(capsys, [*TINY, "--corpora", "pyhton-stdlib", "--out", str(study)])
    assert "'pyhton-stdlib' is neither a registered corpus" in err
    assert "fineweb-100b" in err and "did you mean 'python-stdlib'?" in err
    assert not study.exists()
    # two local folders named alike would share run names (and one path in study.json)
    for name in ("a", "b"):
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data" / "docs.jsonl").write_text('{"text": "hello"}\n')
    err = refused(capsys, [*TINY, "--corpora", str(tmp_path / "a" / "data"),
                           str(tmp_path / "b" / "data"), "--out", str(study)])
    assert "both go by 'data' in run names" in err
    assert not study.exists()


def test_out_must_be_a_new_or_empty_folder_or_a_study(tmp_path, capsys):
    """--out onto a file was a FileExistsError traceback; onto a folder of other things it wrote
    (and replaced) runs.csv, runs.json, study.json and base_config.yaml among them."""
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert "notes.txt is a file, not a study folder" in refused(
        capsys, [*TINY, "--out", str(target)])
    assert target.read_text() == "mine\n"
    other = tmp_path / "results"
    other.mkdir()
    (other / "runs.csv").write_text("model,loss\na,1.0\n")
    (other / "paper.tex").write_text("draft")
    err = refused(capsys, [*TINY, "--out", str(other)])
    assert "results is not a study folder" in err and "paper.tex, runs.csv" in err
    assert sorted(p.name for p in other.iterdir()) == ["paper.tex", "runs.csv"]
    assert (other / "runs.csv").read_text() == "model,loss\na,1.0\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    main([*TINY, "--out", str(empty)])  # a new study in an empty folder
    main([*TINY, "--multipliers", "40", "--out", str(empty)])  # re-planning a study
    assert [r.tokens_per_param for r in read_plan(empty)] == [40]


@pytest.mark.parametrize("argv, message", [
    # flags the grid would have ignored: the default grid planned all 576 runs of the paper
    (["--depths", "2"], "--depths is not used by --grid loss-to-loss"),
    (["--grid", "ladder", "--depths", "2", "--budgets", "1e18"],
     "--budgets is not used by --grid ladder"),
    (["--grid", "overtrain", "--depths", "2", "--no-large"],
     "--no-large is not used by --grid overtrain"),
    ([*TINY, "--ratio-range", "1", "9"], "--ratio-range filters iso-FLOP pairs"),
    (["--grid", "ladder"], "--depths is required for --grid ladder"),
    # numbers out of range: ZeroDivisionError tracebacks, or a sum that means nothing
    ([*TINY, "--round-steps", "0"], "--round-steps must be at least 1, got 0"),
    ([*TINY, "--mfu", "0"], "--mfu is a fraction of the peak in (0, 1], got 0"),
    ([*TINY, "--peak-flops", "0"], "--peak-flops must be a positive number"),
    ([*TINY, "--multipliers", "nan"], "--multipliers must be positive finite numbers"),
    (["--grid", "custom", "--depths", "1", "--budgets=-1e12"],
     "--budgets must be positive finite numbers, got [-1000000000000.0]"),
    (["--grid", "custom", "--depths", "1", "--budgets", "1e12", "--ratio-range", "200", "2"],
     "--ratio-range LOW HIGH needs 0 <= LOW < HIGH, got 200 2"),
    # bad values that were already caught, now in the CLIs' one form
    ([*TINY, "model.nope=1"], "model.nope: unknown field"),
    ([*TINY, "--device", "Z80"], "unknown device 'Z80': pass --peak-flops"),
])
def test_bad_command_lines_are_one_line_errors(argv, message, capsys):
    assert message in refused(capsys, argv)


def test_a_plan_without_runs_is_refused(tmp_path, capsys):
    """A D/N window that keeps no pair wrote an empty study that launched nothing."""
    study = tmp_path / "study"
    err = refused(capsys, ["--grid", "custom", "--depths", "1", "--budgets", "1e12",
                           "--ratio-range", "2", "3", "--corpora", "python-stdlib",
                           "model.vocab_size=384", "--out", str(study)])
    assert "no (depth, budget) pair has 2 < D/N < 3" in err
    assert not study.exists()
