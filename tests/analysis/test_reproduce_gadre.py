"""Gadre et al. reproduction: the paper's Table 6 from its released runs; its fitting procedure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.reproduce import reproduce
from analysis.reproduce.gadre import (
    COLUMNS,
    METHODS,
    MIN_FIT_SIZES,
    OPEN_LM_7B_PARAMS,
    PAPER_CHOICE,
    PREDICTION_COLUMNS,
    error_law,
    fit_error_law,
    fit_loss_law,
    loss_law,
    open_lm_params,
)
from analysis.testbeds.gadre import SUBSET_17
from tests.analysis.test_testbeds import write_gadre_run
from tests.conftest import shared_path


def test_gadre_reproduces_table_6(tmp_path):
    result = reproduce("gadre", shared_path("gadre"), tmp_path)
    fits = pd.read_csv(tmp_path / "gadre_fits.csv")
    assert tuple(fits.columns) == COLUMNS
    assert fits["dataset"].tolist() == ["c4_original", "rpj", "rw_original"]
    c4 = fits.set_index("dataset").loc["c4_original"]
    # Table 6 prints 3 significant digits: agree to half a unit of the last one
    table_6 = {"E": (1.51, 0.005), "a": (141, 0.5), "b": (190, 0.5), "eta": (0.121, 0.0005),
               "epsilon": (0.850, 0.0005), "k": (2.08, 0.005), "gamma": (0.756, 0.0005)}  # fmt: skip
    for name, (paper, half_unit) in table_6.items():
        assert abs(c4[name] - paper) <= half_unit, (name, c4[name], paper)
    assert c4["M_star"] == pytest.approx((c4["b"] / c4["a"]) ** (1 / (2 * c4["eta"])))
    assert (tmp_path / "gadre_fits.png").stat().st_size > 10_000
    assert "Table 6" in result.text


@pytest.fixture(scope="module")
def gadre_out(tmp_path_factory):
    """One reproduction for the tests of its tables (the new methods' nested fits take ~30 s)."""
    out = tmp_path_factory.mktemp("gadre")
    result = reproduce("gadre", shared_path("gadre"), out)
    return out, result


# The paper's predictions of its 6.9B target (M = 20) before the new methods were added:
# (loss, error) per corpus, from the paper's laws; the paper rows must keep them.
PAPER_6_9B = {"c4_original": (2.2799, 0.4789), "rpj": (2.4427, 0.4719),
              "rw_original": (2.4150, 0.4637)}  # fmt: skip
PREDICTED = ("loss_predicted", "error_predicted")


def test_predictions_for_held_out_runs_and_the_papers_targets(gadre_out):
    tmp_path, _ = gadre_out
    fits = pd.read_csv(tmp_path / "gadre_fits.csv").set_index("dataset")
    every = pd.read_csv(tmp_path / "gadre_predictions.csv")
    assert tuple(every.columns) == PREDICTION_COLUMNS
    table = every[every["method"] == "paper"]
    assert (table["choice"] == PAPER_CHOICE).all()
    # every corpus gets the 6.9B model at M = 20, which the released data lack
    big = table[table["size"] == "6.9B"]
    assert sorted(big["dataset"]) == ["c4_original", "rpj", "rw_original"]
    assert (big["N"] == OPEN_LM_7B_PARAMS).all() and (big["M"] == 20).all()
    assert (~big["in_data"]).all() and big["loss_observed"].isna().all()
    # predictions are the fitted laws, chained: loss from (C, M), error from that loss
    for row in table.to_dict("records"):
        fit = fits.loc[row["dataset"]]
        eta = fit["eta"]
        loss = fit["E"] + (fit["a"] * row["M"] ** eta + fit["b"] * row["M"] ** -eta) * row["C"] ** -eta
        assert row["loss_predicted"] == pytest.approx(loss, rel=1e-12)
        assert row["error_predicted"] == pytest.approx(
            error_law(loss, fit["k"], fit["gamma"], fit["epsilon"]), rel=1e-12)
        assert row["C"] == pytest.approx(6 * row["N"] * row["D"]) and row["D"] == row["M"] * row["N"]
    # the paper's over-trained target is in the data for RedPajama: 1.4B at M = 640
    rpj = table[(table["dataset"] == "rpj") & (table["size"] == "1.4B") & (table["M"] == 640)]
    assert len(rpj) == 1 and bool(rpj["in_data"].iloc[0])
    assert abs(rpj["loss_relative_error"].iloc[0]) < 0.02
    held_out = table[table["in_data"]]
    assert held_out["loss_observed"].notna().all() and len(held_out) > 80
    # the paper's numbers are unchanged by the new methods' rows
    for dataset, (loss, error) in PAPER_6_9B.items():
        row = big[big["dataset"] == dataset].iloc[0]
        assert (row["loss_predicted"], row["error_predicted"]) == pytest.approx((loss, error),
                                                                                abs=5e-5)


def test_every_method_predicts_the_same_targets_within_its_interval(gadre_out):
    tmp_path, result = gadre_out
    table = pd.read_csv(tmp_path / "gadre_predictions.csv")
    assert list(dict.fromkeys(table["method"])) == list(METHODS)
    key = ["dataset", "size", "M"]
    by_method = {m: table[table["method"] == m][key].reset_index(drop=True) for m in METHODS}
    for method in METHODS[1:]:
        pd.testing.assert_frame_equal(by_method[method], by_method["paper"])
    # every predicted column has its 90% interval around the prediction, on every row
    for column in PREDICTED:
        rows = table[table[column].notna()]
        assert (rows[f"{column}_lower"] <= rows[column]).all(), column
        assert (rows[column] <= rows[f"{column}_upper"]).all(), column
        assert (rows[f"{column}_lower"] < rows[f"{column}_upper"]).all(), column
        assert table[column].isna().eq(table[f"{column}_lower"].isna()).all(), column
    assert table.loc[table["method"] == "paper", list(PREDICTED)].notna().all().all()
    # the new methods extrapolate: from at least MIN_FIT_SIZES sizes below the target only
    sizes = table.groupby("dataset")["N"].apply(lambda n: sorted(n.unique()))
    for method in METHODS[1:]:
        rows = table[table["method"] == method]
        for dataset, group in rows.groupby("dataset"):
            below = group["N"].map(lambda n, d=dataset: sum(v < n for v in sizes[d]))
            assert group.loc[below < MIN_FIT_SIZES, list(PREDICTED)].isna().all().all()
            predicted = group[below >= MIN_FIT_SIZES]
            assert set(predicted["size"]) == {"1.4B", "6.9B"}
            assert predicted[list(PREDICTED)].notna().all().all(), (method, dataset)
            observed = predicted[predicted["in_data"]]
            np.testing.assert_allclose(
                observed["loss_relative_error"],
                observed["loss_predicted"] / observed["loss_observed"] - 1)
    # the choice is recorded: the paper's procedure for calibrated, one choice per quantity
    # for the study (the same on every corpus) for selected
    new = table[(table["method"] != "paper") & table["loss_predicted"].notna()]
    assert new["choice"].str.startswith("loss: ").all() and new["interval"].str.len().gt(0).all()
    calibrated = new[new["method"] == "calibrated"]["choice"].unique().tolist()
    assert calibrated == [f"loss: {PAPER_CHOICE}; error: {PAPER_CHOICE}"]
    selected = new[new["method"] == "selected"]
    for _, group in selected.groupby("size"):
        assert group["choice"].nunique() == 1
    names = {"paper's fit set", "every run with M <= 20", "every run"}
    for choice in selected["choice"]:
        loss, error = choice.removeprefix("loss: ").split("; error: ")
        assert loss in names and error in names
    assert "selected for the 6.9B target" in result.text


def test_open_lm_parameter_count_matches_the_released_1b():
    assert open_lm_params(2048, 24) == 1_439_795_200  # open_lm_1b's released ``params``
    assert round(OPEN_LM_7B_PARAMS / 1e9, 1) == 6.9  # the paper's name for open_lm_7b


def test_loss_law_recovers_known_parameters():
    # the paper's fit design: four sizes at M = 20 and the smallest at M = 320
    N = np.array([1.1e7, 7.9e7, 1.5e8, 4.1e8, 1.1e7])
    M = np.array([20, 20, 20, 20, 320.0])
    A, B, p, E = 400.0, 250.0, -0.24, 1.6
    fit = fit_loss_law(N, M, loss_law(np.array([N, M]), A, B, p, E))
    eta = -p / 2
    assert fit["eta"] == pytest.approx(eta, rel=1e-6)
    assert fit["a"] == pytest.approx(A * 6**eta, rel=1e-5)
    assert fit["b"] == pytest.approx(B, rel=1e-5) and fit["E"] == pytest.approx(E, rel=1e-6)


def test_error_law_recovers_known_parameters():
    loss = np.linspace(2.5, 5.5, 6)
    fit = fit_error_law(loss, error_law(loss, 2.1, 0.75, 0.85))
    assert (fit["k"], fit["gamma"], fit["epsilon"]) == pytest.approx((2.1, 0.75, 0.85), rel=1e-6)


def test_gadre_needs_the_papers_tasks_and_runs(tmp_path):
    write_gadre_run(tmp_path, "rpj", "d=96_l=8_h=4", 1.0, params=10_000_000)
    with pytest.raises(ValueError, match="lack tasks of the paper's 17-task subset"):
        reproduce("gadre", tmp_path, tmp_path / "out")
    for mult in (1.0, 16.0):
        write_gadre_run(tmp_path, "rpj", "d=96_l=8_h=4", mult, params=10_000_000, tasks=SUBSET_17)
    with pytest.raises(ValueError, match="needs the 4 small models at M = 20"):
        reproduce("gadre", tmp_path, tmp_path / "out")


def test_command_line(tmp_path, capsys, gadre_out):  # after gadre_out: its fits are cached
    from analysis.reproduce.__main__ import main

    assert main(["gadre", "--data", str(shared_path("gadre")), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "c4_original" in printed and "wrote gadre_fits.csv" in printed
    assert main(["gadre", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 1
    assert "error: no models/ folder" in capsys.readouterr().err
