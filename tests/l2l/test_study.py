"""The ``l2l`` command: presets become study folders, the fits predict held-out targets, and the
smoke study runs every stage end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.sizes import param_count
from l2l.cli import main
from l2l.fits import fit_study, loss_column, task_column
from l2l.plan import STUDY_RECORD, plan_study, read_record, run_training_config
from l2l.presets import PRESETS, Shape, StudyPreset, Target, get_preset

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------- planning
def test_tiny_plan_is_the_grid_and_one_target_per_corpus(tmp_path):
    runs = plan_study("tiny", tmp_path / "study")
    preset = PRESETS["tiny"]
    record = read_record(tmp_path / "study")
    assert len(runs) == 2 * (4 * 3 + 1) and record["preset"] == "tiny"
    assert len(record["targets"]) == 2
    tokens_per_step = preset.global_batch_size * preset.seq_len
    for run in runs:
        assert run.N == param_count(run.d_model, run.n_layers, preset.vocab_size)
        assert run.D == run.steps * tokens_per_step
        assert abs(6 * run.N * run.D - run.C) / run.C < 0.05  # D = C / 6N, whole steps
    targets = [r for r in runs if r.run in record["targets"]]
    assert {(r.d_model, r.n_layers, r.C) for r in targets} == {(192, 2, 6e12)}
    assert max(r.C for r in runs if r.run not in record["targets"]) < 6e12


def test_each_run_gets_its_width_heads_and_learning_rate(tmp_path):
    runs = plan_study("tiny", tmp_path / "study")
    run = next(r for r in runs if (r.d_model, r.n_layers) == (128, 1))
    cfg = run_training_config(tmp_path / "study", run, PRESETS["tiny"])
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.model.n_layers) == (128, 2, 1)
    assert cfg.optim.lr == pytest.approx(5e-3 / math.sqrt(2), rel=1e-5)
    assert cfg.data.tokenizer == "offline:2048" and cfg.data.seq_len == 128
    assert cfg.run.steps == run.steps and cfg.run.output_dir == str(tmp_path / "study")


def test_replanning_keeps_the_study_and_another_preset_is_refused(tmp_path):
    first = plan_study("smoke", tmp_path / "study")
    assert plan_study("smoke", tmp_path / "study") == first
    with pytest.raises(ValueError, match="is a study of preset 'smoke', not 'tiny'"):
        plan_study("tiny", tmp_path / "study")


def test_unknown_preset_and_non_study_folders_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown study preset 'tnyi' .did you mean 'tiny'"):
        get_preset("tnyi")
    assert main(["study", "--preset", "tnyi", "--out", str(tmp_path / "s")]) == 2
    assert main(["fit", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: unknown study preset" in err and f"error: {tmp_path} is not an l2l study" in err
    assert not (tmp_path / "s").exists()


def test_paper_presets_plan_the_papers_grids(tmp_path):
    runs = plan_study("paper-fineweb-edu", tmp_path / "paper")
    record = read_record(tmp_path / "paper")
    targets = [r for r in runs if r.run in record["targets"]]
    assert [(r.n_layers, r.C) for r in targets] == [(40, 1e21)]
    assert len(runs) == 96  # the 95 (depth, budget) pairs of the sweep and the 1e21 run
    ladder = plan_study("olmo-ladder", tmp_path / "ladder")
    target = read_record(tmp_path / "ladder")["targets"]
    assert len(ladder) == 20 and len(target) == 1 and "olmo-ladder" in json.loads(
        (tmp_path / "ladder" / "study.json").read_text())["preset"]


def test_slurm_dry_run_writes_configs_and_prints_the_dependent_jobs(tmp_path, capsys):
    assert main(["study", "--preset", "paper-fineweb-edu", "--out", str(tmp_path / "p"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would submit: sbatch --parsable --array=0-95" in out
    assert "[train] 96 would be submitted as one slurm array" in out  # was "nothing to do"
    # the follow-up job with its dependency (the array's id not known yet), which was left out
    assert ("would submit: sbatch --parsable '--dependency=afterany:<array job id>' "
            "--job-name=l2l-p-fit") in out
    assert "-m l2l study --preset paper-fineweb-edu" in out and "--follow-up" in out
    assert len(list((tmp_path / "p" / "configs").glob("L2L_*.yaml"))) == 96


def test_help_is_fast_and_loads_no_model_code():
    probe = ("import sys; from l2l.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- the fits
def _synthetic_results(seed: int = 0) -> pd.DataFrame:
    """Two corpora whose losses follow known Chinchilla laws (plus 0.3% noise) on a grid of
    (N, D), with one larger target run per corpus; b's reducible loss is 0.75 of a's, so the
    loss-to-loss relation holds exactly (kappa 1, K 0.75)."""
    rng = np.random.default_rng(seed)
    laws = {"a": (1.8, 400.0, 0.34, 900.0, 0.28), "b": (2.2, 300.0, 0.34, 675.0, 0.28)}
    rows = []
    sizes = [2e6, 4e6, 8e6, 16e6]
    points = [(n, c) for n in sizes for c in (1e14, 3e14, 1e15)] + [(32e6, 3e15)]
    for corpus, (E, A, alpha, B, beta) in laws.items():
        other = "b" if corpus == "a" else "a"
        for i, (n, c) in enumerate(points):
            d = c / (6 * n)
            loss = E + A / n**alpha + B / d**beta
            oe, oa, _, ob, _ = laws[other]
            rows.append({"run": f"{corpus}-{i}", "dataset": corpus, "N": n, "D": d, "C": c,
                         loss_column(corpus): loss * (1 + 0.003 * rng.standard_normal()),
                         loss_column(other): (oe + 0.5) + oa / n**alpha + ob / d**beta,
                         task_column("t"): 3.0 + 2 * A / n**alpha + 2 * B / d**beta})
    return pd.DataFrame(rows)


def test_fits_predict_the_held_out_targets_within_their_intervals():
    results = _synthetic_results()
    targets = ["a-12", "b-12"]
    fits = fit_study(results, ["a", "b"], targets, ["t"], n_resamples=50, progress=False)
    preds = fits.predictions
    assert set(preds.run) == set(targets) and not fits.missing
    single = preds[preds.law.str.startswith("chinchilla")]
    assert len(single) == 2 and single.relative_error.abs().max() < 0.01
    translated = preds[preds.law.str.startswith("train-to-train")]
    assert len(translated) == 2 and translated.relative_error.abs().max() < 0.01
    assert len(preds) == 8 and preds.relative_error.abs().max() < 0.01  # and train-to-test
    assert single.covered.all()
    assert (preds.lower < preds.prediction).all() and (preds.prediction < preds.upper).all()


def test_missing_points_are_named_not_filled_in():
    results = _synthetic_results()
    # b keeps 6 grid runs of its 12 and its target; a's target was never evaluated.
    results = results[~((results.dataset == "b") & (results.N > 4e6) & (results.run != "b-12"))]
    results = results[results.run != "a-12"]
    fits = fit_study(results, ["a", "b"], ["a-12", "b-12"], [], n_resamples=20, progress=False)
    assert "target a-12: no results (not trained or not evaluated)" in fits.missing
    assert "train-to-train-a-to-b at b-12: no measured a target" in fits.missing
    # what can still be predicted is: b's own law, and its train-to-test law of a's loss
    assert set(fits.predictions.law) == {"chinchilla-b", "train-to-test-b-eval-a-val-CrossEntropyLoss"}


# ----------------------------------------------------------------------------- the command
def test_a_second_study_process_on_the_folder_is_refused(tmp_path, capsys):
    from training.run_lock import RunLock

    plan_study("smoke", tmp_path / "s")
    with RunLock(tmp_path / "s"):
        assert main(["study", "--preset", "smoke", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "being trained by another process" in err
    # l2l study has no --resume: it is run again (the message told users to pass --resume)
    assert "then run the same command again" in err and "--resume" not in err


@pytest.mark.slow
def test_smoke_study_end_to_end(smoke_study, tmp_path):
    """Every stage and artefact of ``l2l study --preset smoke`` (tests/l2l/conftest.py runs it
    once for the session), and a rerun that recomputes nothing."""
    study, cmd, env, done = smoke_study.study, smoke_study.cmd, smoke_study.env, smoke_study.done
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((study / STUDY_RECORD).read_text())
    assert len(list(study.glob("L2L_*/final.json"))) == 14
    rows = [json.loads(line) for line in (study / "results.jsonl").read_text().splitlines()]
    metrics = {row["metric"] for row in rows}
    assert {"val_loss", loss_column("python-stdlib"), loss_column("python-prose"),
            task_column("arc_easy")} <= metrics or {"val_loss", loss_column("python-stdlib"),
                                                   loss_column("python-prose")} <= metrics
    preds = pd.read_csv(study / "predictions.csv")
    assert set(preds.run) == set(record["targets"])
    assert {"prediction", "lower", "upper", "actual"} <= set(preds.columns)
    assert (preds.lower <= preds.upper).all()
    report = (study / "report.md").read_text()
    assert "## Target runs: predicted against measured" in report
    figures = sorted((study / "figures").glob("*.png"))
    assert figures and all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
    from analysis import load_law

    for folder in (study / "laws").iterdir():
        assert load_law(folder).form in ("chinchilla", "loss_to_loss")
    assert (study / "release" / "README.md").is_file()
    # A released run loads, with its code, where this package is not installed.
    from tests.l2l.test_release import _expected_logits, _load_without_the_package

    released = sorted((study / "release").glob("L2L_*"))
    assert len(released) == 14
    expected = _expected_logits(study / released[0].name, tmp_path)
    loaded = _load_without_the_package([{"model": str(released[0]), "expected": expected}],
                                       tmp_path, {})
    assert loaded.returncode == 0 and "SAME_LOGITS" in loaded.stdout, loaded.stderr[-2000:]
    # A rerun trains and evaluates nothing again.
    again = subprocess.run(cmd, cwd=smoke_study.cwd, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "[train] 14 already finished" in again.stdout
    assert len((study / "results.jsonl").read_text().splitlines()) == len(rows)


def test_custom_presets_are_plain_records(tmp_path):
    preset = StudyPreset(name="two", description="x", corpora=("python-stdlib",),
                         shapes=(Shape(1, 1),), budgets=(5e10,), targets=(Target(Shape(1, 2), 1e11),))
    runs = plan_study(preset, tmp_path / "two")
    assert len(runs) == 2 and read_record(tmp_path / "two")["targets"] == [runs[1].run]


def test_the_packages_launcher_trains_an_l2l_study_at_its_planned_widths(tmp_path):
    """``training.launch`` on a study of decoupled shapes: the planned width reaches the config
    (run_config ignored PlannedRun.d_model and built width 64 x layers)."""
    from training.launch import write_run_configs
    from training.study import read_plan

    plan_study("smoke", tmp_path / "s")
    widths = {run.run: run.d_model for run in read_plan(tmp_path / "s")}
    from training.config import TrainingConfig

    for run, path in write_run_configs(tmp_path / "s"):
        cfg = TrainingConfig.from_yaml(path)
        assert (cfg.model.d_model or 64 * cfg.model.n_layers) == widths[run.run]
