"""Backtest: held-out predictions with intervals, on synthetic points and the papers' data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.backtest import (
    COLUMNS,
    METHOD_COLUMNS,
    SUMMARY_COLUMNS,
    backtest_chinchilla,
    backtest_gadre,
    backtest_l2l,
    main,
    run_backtest,
    shortfalls,
    summarize,
    summarize_methods,
)
from tests.conftest import shared_path


def write_chinchilla_like(folder, noise=0.0, seed=0):
    """Points on an exact Chinchilla law at budgets 1e18..1e22 (the largest ones get held out)."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in np.geomspace(1e18, 1e22, 9):
        for n in np.geomspace(5e7, 5e9, 8):
            d = budget / (6 * n)
            loss = 1.8 + 480 / n**0.35 + 2000 / d**0.37
            rows.append((n, budget, loss * np.exp(noise * rng.standard_normal())))
    pd.DataFrame(rows, columns=["Model Size", "Training FLOP", "loss"]).to_csv(
        folder / "svg_extracted_data.csv", index=False
    )
    return folder


def test_exact_law_is_predicted_exactly(tmp_path):
    every = pd.DataFrame(backtest_chinchilla(write_chinchilla_like(tmp_path), 20, 0.9, 0))
    assert tuple(every.columns) == COLUMNS
    assert set(every["method"]) == {"paper", "calibrated", "selected"}
    assert (every["C"] > 1.7e21).all() and len(every) == 3 * 16  # the two largest budgets
    assert every["rel_error"].abs().max() < 1e-5  # an exact law: nothing to correct
    new = every[every["method"] != "paper"]
    assert (new["lower_pred"] <= new["predicted"]).all()
    assert (new["upper_pred"] >= new["predicted"]).all()
    rows = every[every["method"] == "paper"]
    assert rows["rel_error"].abs().max() < 1e-6
    assert (rows["lower"] <= rows["predicted"] + 1e-9).all()
    assert (rows["upper"] >= rows["predicted"] - 1e-9).all()


def test_noisy_law_intervals_and_summary(tmp_path):
    folder = tmp_path / "chinchilla"
    folder.mkdir()
    write_chinchilla_like(folder, noise=0.01)
    results = run_backtest(["chinchilla"], tmp_path, resamples=20)
    results = results[results["method"] == "paper"]
    assert results["rel_error"].abs().max() < 0.1
    assert results["covered"].isin([True, False]).all()
    summary = summarize(results)
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    row = summary.iloc[0]
    assert row["n"] == 16 and 0 <= row["coverage"] <= 1 and row["mean_rel_width"] > 0
    assert row["mean_abs_rel_error"] == pytest.approx(results["rel_error"].abs().mean())
    # the prediction interval adds the runs' scatter to the law's uncertainty
    assert (results["lower_pred"] < results["lower"]).all()
    assert (results["upper_pred"] > results["upper"]).all()
    assert row["mean_rel_width_pred"] > row["mean_rel_width"]
    assert row["coverage_pred"] >= row["coverage"]
    assert row["coverage_pred"] + row["above_pred"] + row["below_pred"] == pytest.approx(1.0)


def test_held_out_runs_from_the_same_law_are_covered_by_prediction_intervals(tmp_path):
    """1% scatter around an exact Chinchilla law: the prediction interval holds about 90% of the
    held-out runs, the confidence interval (the law alone) far fewer."""
    coverage, coverage_pred = [], []
    for seed in range(6):
        folder = tmp_path / str(seed) / "chinchilla"
        folder.mkdir(parents=True)
        write_chinchilla_like(folder, noise=0.01, seed=seed)
        results = run_backtest(["chinchilla"], folder.parent, resamples=40, seed=seed)
        summary = summarize(results[results["method"] == "paper"])
        coverage.append(summary["coverage"].iloc[0])
        coverage_pred.append(summary["coverage_pred"].iloc[0])
    assert 0.75 <= np.mean(coverage_pred) <= 1.0, coverage_pred
    assert np.mean(coverage) < np.mean(coverage_pred) - 0.2, (coverage, coverage_pred)


def test_shortfalls_tell_a_biased_law_from_scatter():
    summary = pd.DataFrame(
        [
            ("l2l", "biased", "paper", "big", 10, 0.02, 0.5, 0.0, 0.5),
            ("l2l", "scattered", "paper", "big", 10, 0.0, 0.6, 0.2, 0.2),
            ("l2l", "fine", "paper", "big", 10, 0.0, 0.9, 0.1, 0.0),
            ("l2l", "one miss", "paper", "big", 6, 0.0, 5 / 6, 1 / 6, 0.0),
        ],
        columns=["testbed", "setting", "method", "holdout", "n", "mean_rel_error", "coverage_pred",
                 "above_pred", "below_pred"],
    )  # fmt: skip
    notes = shortfalls(summary, 0.9)
    assert len(notes) == 3
    assert "systematic extrapolation error (the law is too high" in notes[0]
    assert "(0 run(s) above, 5 below)" in notes[0]
    assert "misses on both sides" in notes[1]
    assert "a single miss among 6 runs" in notes[2]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown testbed"):
        run_backtest(["pile"], tmp_path)
    with pytest.raises(ValueError, match="level must be in"):
        run_backtest(["chinchilla"], tmp_path, level=1.5)
    with pytest.raises(ValueError, match="at least 10 bootstrap resamples"):
        run_backtest(["chinchilla"], tmp_path, resamples=3)
    assert main(["--testbeds", "chinchilla", "--data-root", str(tmp_path / "none"),
                 "--out", str(tmp_path / "out")]) == 1  # fmt: skip


def test_offline_error_names_this_commands_option(monkeypatch, capsys):
    """The download error suggests `--data` (reproduce's option); backtest's is --data-root."""
    import analysis.backtest as backtest
    from analysis.testbeds import TestbedUnavailableError

    def offline(*args, **kwargs):
        raise TestbedUnavailableError("could not download sweep.csv (offline)")

    monkeypatch.setattr(backtest, "run_backtest", offline)
    assert main(["--testbeds", "l2l"]) == 1
    assert "--data-root FOLDER, the folder holding l2l/" in capsys.readouterr().err


def test_cli_on_the_papers_chinchilla_points(tmp_path, capsys):
    root = shared_path("chinchilla").parent
    assert main(["--testbeds", "chinchilla", "--data-root", str(root), "--out", str(tmp_path),
                 "--resamples", "20"]) == 0  # fmt: skip
    results = pd.read_csv(tmp_path / "backtest.csv")
    assert tuple(results.columns) == COLUMNS
    assert len(results) == 3 * 16 and results["rel_error"].abs().max() < 0.05
    assert tuple(pd.read_csv(tmp_path / "backtest_summary.csv").columns) == SUMMARY_COLUMNS
    methods = pd.read_csv(tmp_path / "backtest_methods.csv")
    assert tuple(methods.columns) == METHOD_COLUMNS
    assert list(methods["method"]) == ["paper", "calibrated", "selected"]
    assert (tmp_path / "backtest_chinchilla.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "interval coverage" in printed and "coverage_pred" in printed
    assert "per method" in printed


def test_gadre_holds_out_the_1b_runs():
    every = pd.DataFrame(backtest_gadre(shared_path("gadre"), 20, 0.9, 0))
    assert set(every["run"].str.contains("open_lm_1b")) == {True}
    assert every.groupby("method").size().to_dict() == {"paper": 12, "calibrated": 12,
                                                        "selected": 12}  # fmt: skip
    rows = every[every["method"] == "paper"]
    assert len(rows) == 2 * 6  # loss and chained error, for 2 runs in each of 3 corpora
    loss = rows[rows["metric"] == "loss_c4_val"]
    assert loss["rel_error"].abs().max() < 0.03


def test_no_method_sees_the_runs_it_is_judged_on(tmp_path):
    """Replacing the held-out runs' losses by nonsense changes no prediction of any method, nor
    any interval or choice: calibration and selection use the fitting data only."""
    clean = pd.DataFrame(backtest_chinchilla(write_chinchilla_like(tmp_path, noise=0.01), 20,
                                             0.9, 0))  # fmt: skip
    points = pd.read_csv(tmp_path / "svg_extracted_data.csv")
    held = points["Training FLOP"] > 1.7e21
    points.loc[held, "loss"] = points.loc[held, "loss"] * 3.0
    points.to_csv(tmp_path / "svg_extracted_data.csv", index=False)
    poisoned = pd.DataFrame(backtest_chinchilla(tmp_path, 20, 0.9, 0))
    for column in ("predicted", "lower_pred", "upper_pred", "choice", "interval"):
        pd.testing.assert_series_equal(clean[column], poisoned[column])
    assert not np.allclose(clean["actual"], poisoned["actual"])


def test_summarize_methods_pools_settings_per_quantity(tmp_path):
    results = run_backtest(["chinchilla"], _chinchilla_root(tmp_path), resamples=20)
    methods = summarize_methods(results)
    assert tuple(methods.columns) == METHOD_COLUMNS
    for row in methods.itertuples():
        mine = results[results["method"] == row.method]
        assert row.n == len(mine)
        assert row.mean_abs_rel_error == pytest.approx(mine["rel_error"].abs().mean())
        assert row.coverage == pytest.approx(mine["covered_pred"].astype(float).mean())
        assert row.coverage + row.above + row.below == pytest.approx(1.0)


def _chinchilla_root(tmp_path):
    folder = tmp_path / "chinchilla"
    folder.mkdir()
    write_chinchilla_like(folder, noise=0.01)
    return tmp_path


def test_l2l_methods_on_the_papers_sweep():
    """Every method predicts every held-out run; multi-source gives one prediction per run."""
    rows = pd.DataFrame(backtest_l2l(shared_path("l2l"), 10, 0.9, 0))
    held = rows[(rows["method"] == "paper") & (rows["setting"] == "kaplan law of val_loss")]
    assert len(held) == 66
    single = rows[rows["quantity"] == "val_loss from (N, D)"]
    assert single.groupby("method").size().to_dict() == {"paper": 132, "calibrated": 132,
                                                         "selected": 66}  # fmt: skip
    assert single.loc[single["method"] == "selected", "choice"].nunique() == 1  # once per study
    multi = rows[rows["method"] == "multi_source"]
    assert len(multi) == 66 and multi["run"].is_unique
    assert (multi["lower_pred"] < multi["predicted"]).all()
    assert (multi["upper_pred"] > multi["predicted"]).all()


# The guard above, on the papers' own data: the held-out runs' values are replaced by nonsense in
# a copy of each testbed, and nothing a method predicts, bounds or chooses may move.
def _poisoned_copy(source, folder, poison):
    import shutil

    shutil.copytree(source, folder)
    poison(folder)
    return folder


def _assert_blind(clean, poisoned, rows):
    for column in ("predicted", "lower_pred", "upper_pred", "choice", "interval"):
        pd.testing.assert_series_equal(clean.loc[rows, column], poisoned.loc[rows, column])
    assert not np.allclose(clean.loc[rows, "actual"], poisoned.loc[rows, "actual"])


def test_no_method_sees_the_held_out_runs_of_the_l2l_sweep(tmp_path):
    """One corpus' held-out runs poisoned: every prediction OF them is unchanged. (A
    train-to-train prediction FROM them takes their measured loss as its input, as the paper
    does, so those rows move and are not compared.)"""
    source = shared_path("l2l")
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    sweep = pd.read_csv(source / "sweep.csv")
    sweep = sweep[sweep["data"].isin(["fineweb-100b", "starcoder", "proof-pile-2"])]  # faster
    sweep.to_csv(clean_dir / "sweep.csv", index=False)

    def poison(folder):
        table = pd.read_csv(folder / "sweep.csv")
        held = (table["iso_flop"] == table["iso_flop"].max()) & (table["data"] == "starcoder")
        table.loc[held, "val_loss"] = table.loc[held, "val_loss"] * 3.0
        table.to_csv(folder / "sweep.csv", index=False)

    clean = pd.DataFrame(backtest_l2l(clean_dir, 10, 0.9, 0))
    poisoned = pd.DataFrame(backtest_l2l(_poisoned_copy(clean_dir, tmp_path / "poisoned", poison),
                                         10, 0.9, 0))
    assert set(clean["method"]) == {"paper", "calibrated", "selected", "multi_source"}
    judged = clean.index[clean["dataset"] == "starcoder"]
    assert set(clean.loc[judged, "method"]) == {"paper", "calibrated", "selected", "multi_source"}
    _assert_blind(clean, poisoned, judged)
    single = clean.index[clean["quantity"] == "val_loss from (N, D)"]
    for column in ("predicted", "lower_pred", "upper_pred", "choice"):
        pd.testing.assert_series_equal(clean.loc[single, column], poisoned.loc[single, column])


def test_no_method_sees_the_held_out_runs_of_gadre(tmp_path):
    import json

    from analysis.reproduce.gadre import ERROR_MODEL

    def poison(folder):
        for path in (folder / "models").glob("*.json"):
            record = json.loads(path.read_text())
            if record["hyperparameters"]["model"] == ERROR_MODEL:
                for result in record["results"]:
                    result["loss"] *= 3.0
                path.write_text(json.dumps(record))
        for path in (folder / "evals").glob("*.json"):
            record = json.loads(path.read_text())
            if ERROR_MODEL in record["model"] or "d=2048" in record["name"]:
                record["eval_metrics"]["icl"] = {k: v * 0.5 for k, v in
                                                 record["eval_metrics"]["icl"].items()}
                path.write_text(json.dumps(record))

    clean = pd.DataFrame(backtest_gadre(shared_path("gadre"), 20, 0.9, 0))
    poisoned = pd.DataFrame(backtest_gadre(
        _poisoned_copy(shared_path("gadre"), tmp_path / "gadre", poison), 20, 0.9, 0))
    assert set(clean["method"]) == {"paper", "calibrated", "selected"}
    _assert_blind(clean, poisoned, clean.index)


def test_no_method_sees_the_held_out_runs_of_the_ladder(tmp_path, monkeypatch):
    from analysis.backtest import backtest_ladder
    from analysis.reproduce import ladder

    monkeypatch.setattr(ladder, "TASKS", ladder.TASKS[:1])  # the mechanism, not every task

    def poison_size(size):
        def poison(folder):
            for path in (folder / "runs").glob(f"{size}-*.csv"):
                table = pd.read_csv(path)
                metrics = [c for c in table.columns if c.startswith("eval/")]
                table[metrics] = table[metrics] * 3.0
                table.to_csv(path, index=False)
        return poison

    clean = pd.DataFrame(backtest_ladder(shared_path("ladder"), 10, 0.9, 0))
    assert set(clean["method"]) == {"paper", "calibrated", "selected"}
    for size in ("3B", "1B"):  # each hold-out: its runs poisoned, its own rows unchanged
        rows = clean.index[clean["holdout"].str.startswith(f"{size} runs")]
        assert len(rows)
        poisoned = pd.DataFrame(backtest_ladder(_poisoned_copy(
            shared_path("ladder"), tmp_path / size, poison_size(size)), 10, 0.9, 0))
        _assert_blind(clean, poisoned, rows)
