"""The ``l2l`` command: presets become study folders, the fits predict held-out targets, and the
smoke study runs every stage end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2l.cli import main
from l2l.fits import fit_study
from l2l.plan import STUDY_RECORD, plan_study
from l2l.presets import get_preset
from l2l.quantities import loss_column, task_column
from l2l.spec import Evaluation, Grid, Prediction, Shape, StudySpec, Target

REPO = Path(__file__).resolve().parents[2]


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


def synthetic_spec(tasks=("t",), resamples=50) -> StudySpec:
    """The spec the synthetic results stand for: two corpora a and b."""
    spec = get_preset("tiny")
    spec.corpora = {"a": "a.jsonl", "b": "b.jsonl"}
    spec.evaluation = Evaluation(tasks=list(tasks))
    spec.prediction = Prediction(bootstrap=resamples)
    return spec


def test_fits_predict_the_held_out_targets_within_their_intervals():
    results = _synthetic_results()
    targets = ["a-12", "b-12"]
    fits = fit_study(results, synthetic_spec(), targets, progress=False)
    preds = fits.predictions
    paper = preds[preds.method == "paper"]
    assert set(preds.run) == set(targets)
    single = paper[paper.law.str.startswith("chinchilla")]
    assert len(single) == 2 and single.relative_error.abs().max() < 0.01
    translated = paper[paper.law.str.startswith("train-to-train")]
    assert len(translated) == 2 and translated.relative_error.abs().max() < 0.01
    assert len(paper) == 8 and paper.relative_error.abs().max() < 0.01  # and train-to-test
    assert single.covered.all()
    assert (preds.lower < preds.prediction).all() and (preds.prediction < preds.upper).all()
    # every quantity by the new methods too: three budgets give one nested cut (scatter only)
    assert set(preds.method) >= {"paper", "calibrated"}
    calibrated = preds[preds.method == "calibrated"]
    assert len(calibrated) == 8 and calibrated.relative_error.abs().max() < 0.01
    assert calibrated.interval.str.len().min() > 0


def test_missing_points_are_named_not_filled_in():
    results = _synthetic_results()
    # b keeps 6 grid runs of its 12 and its target; a's target was never evaluated.
    results = results[~((results.dataset == "b") & (results.N > 4e6) & (results.run != "b-12"))]
    results = results[results.run != "a-12"]
    fits = fit_study(results, synthetic_spec(tasks=(), resamples=20), ["a-12", "b-12"],
                     progress=False)
    assert "target a-12: no results (not trained or not evaluated)" in fits.missing
    # what can still be predicted is: b's own law, and its train-to-test law of a's loss
    paper = fits.predictions[fits.predictions.method == "paper"]
    assert set(paper.law) == {"chinchilla-b", "train-to-test-b-eval-a-val-CrossEntropyLoss"}


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
    # every metric the smoke spec asks for, the ARC-Easy test loss included
    assert {"val_loss", loss_column("python-stdlib"), loss_column("python-prose"),
            task_column("arc_easy")} <= metrics
    preds = pd.read_csv(study / "predictions.csv")
    assert set(preds.run) == set(record["targets"])
    assert {"method", "prediction", "lower", "upper", "actual", "relative_error",
            "covered"} <= set(preds.columns)
    assert {"paper", "calibrated"} <= set(preds.method)
    assert (preds.lower <= preds.upper).all()
    assert (study / "tokenizer" / "tokenizer.json").is_file()  # the study's own tokenizer
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


def test_a_spec_built_in_python_plans_like_a_preset(tmp_path):
    spec = get_preset("smoke")
    spec.name = "two"
    spec.corpora = {"python-stdlib": "python-stdlib"}
    spec.grid = Grid(shapes=[Shape(64, 1), Shape(64, 2), Shape(128, 1)],
                     budgets=[2e10, 5e10])
    spec.targets = [Target(Shape(128, 2), flop_budget=1e11)]
    runs = plan_study(spec.check(), tmp_path / "two")
    assert len(runs) == 7 and runs[-1].d_model == 128 and runs[-1].n_layers == 2


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


def test_every_study_decides_between_its_corpora_with_odds(tmp_path):
    """decisions.csv: every comparable metric (each corpus' held-out loss, the task; never a
    corpus' own loss against another's), the pair, single-scale and the new methods, the
    targets' measured values beside. Each corpus' models are best on its own validation set; b's
    models are best on the task (its law's coefficients are smaller)."""
    from l2l.decisions import COLUMNS

    results = _synthetic_results()
    fits = fit_study(results, synthetic_spec(), ["a-12", "b-12"], progress=False)
    table = fits.decisions
    assert list(table.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert set(table.metric) == {loss_column("a"), loss_column("b"), task_column("t")}
    assert "val_loss" not in set(table.metric)
    assert {"single_scale", "selected"} <= set(table.method)
    assert set(zip(table.data_a, table.data_b, strict=True)) == {("a", "b")}
    assert table.actual_a.notna().all() and table.actual_b.notna().all()
    selected = table[table.method == "selected"].set_index("metric").p_a_better
    assert selected[loss_column("a")] > 0.9 and selected[loss_column("b")] < 0.1
    assert selected[task_column("t")] < 0.1
    from l2l.fits import save_fits

    study = tmp_path / "study"
    study.mkdir()
    save_fits(fits, study)
    written = pd.read_csv(study / "decisions.csv")
    assert list(written.columns[:len(COLUMNS)]) == list(COLUMNS) and len(written) == len(table)


def test_a_refit_leaves_no_law_of_the_earlier_fit_behind(tmp_path):
    """A fit that can no longer make a law (a NaN loss, a run removed) replaces laws/ as a
    whole: the stale law would otherwise be read, and released, beside the new ones."""
    from l2l.fits import save_fits

    results = _synthetic_results()
    study = tmp_path / "study"
    study.mkdir()
    save_fits(fit_study(results, synthetic_spec(), ["a-12", "b-12"], progress=False), study)
    before = {p.name for p in (study / "laws").iterdir()}
    fewer = results[~((results.dataset == "a") & (results.run != "a-12"))]  # a has no grid left
    save_fits(fit_study(fewer, synthetic_spec(), ["a-12", "b-12"], progress=False), study)
    after = {p.name for p in (study / "laws").iterdir()}
    assert "chinchilla-a" in before and "chinchilla-a" not in after and after < before
    assert not list(study.glob(".laws*"))  # no temporary folder left behind


def test_predict_budget_is_checked(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--budget", "-1"]) == 2
    assert "--budget -1.0: a FLOP budget is a positive number" in capsys.readouterr().err


def test_runs_missing_from_the_results_or_the_plan_are_named(smoke_study, tmp_path):
    """A planned grid run without results, and results of a run that runs.csv no longer plans
    (a row removed by hand): both said in the report, the unplanned run left out of the fits."""
    import shutil

    assert smoke_study.done.returncode == 0
    study = tmp_path / "smoke"
    shutil.copytree(smoke_study.study, study, ignore=shutil.ignore_patterns("L2L_*", "release"))
    table = pd.read_csv(study / "runs.csv")
    targets = json.loads((study / STUDY_RECORD).read_text())["targets"]
    grid = table[~table.run.isin(targets)].run.tolist()
    table[table.run != grid[0]].to_csv(study / "runs.csv", index=False)  # a row removed
    (study / "runs.json").unlink()
    rows = [line for line in (study / "results.jsonl").read_text().splitlines()
            if json.loads(line)["run"] != grid[1]]  # a run never evaluated
    (study / "results.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["report", str(study), "--quiet"]) == 0
    report = (study / "report.md").read_text()
    assert f"1 planned grid run(s) have no results (not trained or not evaluated), so the fits " \
           f"do without them: {grid[1]}" in report
    assert "1 run(s) in the results table are not in the study's runs.csv" in report
    assert grid[0] in report


def test_a_law_that_cannot_be_fitted_is_named_with_its_task(monkeypatch):
    """A law whose fit fails (a 20-question task file gave 'log_ols ... the fit is impossible',
    which stopped the study naming neither law nor task): the study says which law failed and
    why, and makes every other law and prediction as before."""
    import analysis.workflows as workflows

    real = workflows.fit_loss_to_loss

    def fails_for_the_task(x, y, **kwargs):
        if kwargs.get("metadata", {}).get("y") == task_column("t"):
            raise ValueError("log_ols: no point has y above E_y; the fit is impossible")
        return real(x, y, **kwargs)

    monkeypatch.setattr(workflows, "fit_loss_to_loss", fails_for_the_task)
    fits = fit_study(_synthetic_results(), synthetic_spec(), ["a-12", "b-12"], progress=False)
    said = "\n".join(fits.missing)
    for corpus in ("a", "b"):
        assert (f"train-to-test-{corpus}-eval-downstream-ce-loss-t-test-ce-loss: the fit failed "
                "(log_ols: no point has y above E_y; the fit is impossible)") in said
    paper = fits.predictions[fits.predictions.method == "paper"]
    assert set(paper.law) == {"chinchilla-a", "chinchilla-b", "train-to-train-a-to-b",
                              "train-to-train-b-to-a", "train-to-test-a-eval-b-val-CrossEntropyLoss",
                              "train-to-test-b-eval-a-val-CrossEntropyLoss"}


def test_the_allocation_says_why_an_approach_is_left_out():
    """Each corpus gets approach 2 and approach 3 at the budget, or a line saying why not (the
    tiny study's report showed one corpus and one approach with no word about the other three)."""
    from l2l.decisions import allocation

    results = _synthetic_results()
    spec = synthetic_spec()
    fits = fit_study(results, spec, ["a-12", "b-12"], progress=False)
    table, left_out = allocation(fits, results, spec, [3e15], 0.9)
    for corpus in ("a", "b"):
        for approach in ("2", "3"):
            placed = ((table.data == corpus) & (table.approach.astype(str).str.contains(
                approach))).any()
            said = [line for line in left_out if line.startswith(f"{corpus}, approach {approach}:")]
            assert placed != bool(said), (corpus, approach, table, left_out)
    del fits.laws["chinchilla-a"]
    _, left_out = allocation(fits, results, spec, [3e15], 0.9)
    assert "a, approach 3: no Chinchilla law of its loss was fitted (see the missing laws)" in left_out


@pytest.mark.slow
def test_figure_axes_say_the_metric_and_whose_models_in_words(smoke_study, tmp_path,
                                                              monkeypatch):
    """A loss-to-loss figure's y axis names the metric in words and the models it was measured
    on ("loss on python-prose (models trained on python-stdlib)"), not the results-table
    column (issue 18: raw metric names)."""
    import analysis.plots
    from l2l.cli import _fit
    from l2l.report import draw_figures

    drawn = []
    real = analysis.plots.plot_law

    def recording(*args, **kwargs):
        drawn.append((kwargs.get("xlabel"), kwargs.get("ylabel")))
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis.plots, "plot_law", recording)
    spec, record, results, fits = _fit(smoke_study.study, False)
    figures = draw_figures(fits, results, record["targets"], tmp_path, spec.prediction.level,
                           list(spec.corpora))
    assert len(drawn) == len(fits.drawn) > 0 and len(figures) > len(drawn)  # and decisions.png
    for xlabel, ylabel in drawn:
        assert "eval/" not in ylabel and "CrossEntropyLoss" not in ylabel, ylabel
        if xlabel is not None:  # loss-to-loss: both axes say whose models
            assert "(models trained on python-" in xlabel and "(models trained on " in ylabel
