"""OLMo-ladder reproduction: the repository's published fit errors and 13B predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.reproduce import reproduce
from analysis.reproduce.__main__ import main
from analysis.reproduce.ladder import (
    CHECK_COLUMNS,
    COLUMNS,
    METHODS,
    PAPER_CHOICE,
    PREDICTED,
    PUBLISHED,
    fit_sigmoid,
    fit_task_loss,
    sigmoid,
    task_loss_law,
    trailing_mean,
)
from tests.analysis.test_testbeds import write_ladder_run
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def ladder_out(tmp_path_factory):
    """One reproduction for the tests of its tables."""
    out = tmp_path_factory.mktemp("ladder")
    return out, reproduce("ladder", shared_path("ladder"), out)


# The paper rows' 7B-4T predictions (task loss, accuracy) before the new methods were added.
PAPER_7B = {"mmlu": (0.786944, 0.483814), "hellaswag": (0.671263, 0.825231),
            "arc_challenge": (0.794133, 0.514960), "arc_easy": (0.603764, 0.765883),
            "piqa": (0.890325, 0.812202), "csqa": (0.712346, 0.757123),
            "socialiqa": (1.004462, 0.587427), "openbookqa": (1.284767, 0.441688)}  # fmt: skip


def test_ladder_reproduces_the_repositorys_outputs(ladder_out):
    tmp_path, _ = ladder_out
    fits = pd.read_csv(tmp_path / "ladder_fits.csv")
    assert tuple(fits.columns) == COLUMNS
    assert fits["task"].tolist() == list(PUBLISHED)
    every = pd.read_csv(tmp_path / "ladder_check.csv")
    assert tuple(every.columns) == CHECK_COLUMNS
    checks = every[every["method"] == "paper"]
    assert checks["task"].tolist() == list(PUBLISHED)
    assert (checks["choice"] == PAPER_CHOICE).all()
    for name in ("fit_error", "pred_13b_task_loss", "pred_13b_accuracy"):
        np.testing.assert_allclose(
            checks[name], checks[f"{name}_published"], rtol=1e-4, err_msg=name
        )
    # the 7B-4T target, through the same two laws; it has less compute than the 13B-5T one
    fits_by_task = fits.set_index("task")
    for row in checks.to_dict("records"):
        fit = fits_by_task.loc[row["task"]]
        theta = [np.log(fit["A"]), np.log(fit["B"]), fit["alpha"], fit["beta"], fit["E"]]
        loss = task_loss_law(6_887_575_552, 3_945_065_873_408, np.array(theta))
        assert row["pred_7b_task_loss"] == pytest.approx(float(loss), rel=1e-9)
        assert row["pred_7b_task_loss"] > row["pred_13b_task_loss"]
        assert row["pred_7b_accuracy"] == pytest.approx(
            float(sigmoid(loss, fit["a"], fit["L0"], fit["k"], fit["b"])), rel=1e-9)
        assert (row["pred_7b_task_loss"], row["pred_7b_accuracy"]) == pytest.approx(
            PAPER_7B[row["task"]], abs=5e-6)
    assert (fits[["A", "B", "E", "alpha", "beta"]] >= 0).all().all()  # bounded at 0, as upstream
    assert ((fits["a"] >= -1) & (fits["a"] <= 0) & (fits["b"] <= 1)).all()
    assert (tmp_path / "ladder_fits.png").exists()


def test_every_method_and_task_has_its_row_and_interval(ladder_out):
    tmp_path, result = ladder_out
    checks = pd.read_csv(tmp_path / "ladder_check.csv")
    assert list(dict.fromkeys(checks["method"])) == list(METHODS)
    for method in METHODS:
        assert checks.loc[checks["method"] == method, "task"].tolist() == list(PUBLISHED)
    # every row: lower <= prediction <= upper for every predicted column, accuracies in [0, 1]
    for column in PREDICTED:
        assert checks[[column, f"{column}_lower", f"{column}_upper"]].notna().all().all()
        assert (checks[f"{column}_lower"] <= checks[column]).all(), column
        assert (checks[column] <= checks[f"{column}_upper"]).all(), column
        assert (checks[f"{column}_lower"] < checks[f"{column}_upper"]).all(), column
        if "accuracy" in column:
            assert checks[f"{column}_lower"].ge(0).all() and checks[f"{column}_upper"].le(1).all()
    # the published columns and the fitting error belong to the paper's rows
    new = checks[checks["method"] != "paper"]
    published = [c for c in CHECK_COLUMNS if c.endswith("_published")] + ["fit_error"]
    assert new[published].isna().all().all()
    # the choice: the paper's step 1 for calibrated; one step 1 for the whole ladder for selected
    assert (checks.loc[checks["method"] == "calibrated", "choice"] == PAPER_CHOICE).all()
    selected = checks.loc[checks["method"] == "selected", "choice"]
    assert selected.nunique() == 1
    assert selected.iloc[0] in {PAPER_CHOICE, "over-training form in (C, M) for step 1"}
    assert f"{selected.iloc[0]} (chosen)" in result.text
    # the calibrated method refits the paper's two steps on the same runs: near the paper's
    paper = checks[checks["method"] == "paper"].set_index("task")
    calibrated = checks[checks["method"] == "calibrated"].set_index("task")
    np.testing.assert_allclose(calibrated["pred_13b_task_loss"], paper["pred_13b_task_loss"],
                               rtol=0.1)  # fmt: skip


def test_step1_recovers_a_known_law():
    N = np.repeat([1.9e8, 3.7e8, 7.6e8, 1.3e9], 4)
    D = N * np.tile([20.0, 40, 100, 200], 4)
    theta = np.array([np.log(50.0), np.log(300.0), 0.25, 0.3, 0.6])
    result = fit_task_loss(N, D, task_loss_law(N, D, theta))
    np.testing.assert_allclose(task_loss_law(N, D, result.x), task_loss_law(N, D, theta), rtol=1e-6)
    assert result.fun < 1e-12


def test_step2_recovers_a_known_sigmoid():
    loss = np.concatenate([np.linspace(0.7, 1.6, 200), [0.0]])
    accuracy = sigmoid(loss, -0.7, 1.0, 5.0, 0.95)
    (a, L0, k, b), warned = fit_sigmoid(loss, accuracy, chance=0.25)
    assert (a, L0, k, b) == pytest.approx((-0.7, 1.0, 5.0, 0.95), rel=1e-5) and not warned


def test_trailing_mean_matches_the_repositorys_moving_average():
    values = np.array([1.0, 2, 3, 4, 5, 6, 7])
    assert trailing_mean(values, 5).tolist() == [1, 1.5, 2, 2.5, 3, 4, 5]
    assert trailing_mean(values[:3], 5).tolist() == [1, 1.5, 2]


def test_ladder_needs_the_papers_runs(tmp_path, capsys):
    write_ladder_run(tmp_path, "190M-1xC")
    with pytest.raises(ValueError, match="not in the table"):
        reproduce("ladder", tmp_path, tmp_path / "out")
    # the command line reports it as an error (a missing metric used to be a KeyError trace)
    assert main(["ladder", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "error: metric(s) not in the table" in capsys.readouterr().err
