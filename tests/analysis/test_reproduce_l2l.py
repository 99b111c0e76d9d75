"""Loss-to-loss reproduction: the notebooks' 276 scaling fits and the paper's kappa, K; the
calibrated and selected predictions at 1e21 and ``--given``."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis import get_form
from analysis.predictors import law_predictor
from analysis.reproduce import l2l, l2l_methods, l2l_paper
from analysis.reproduce.__main__ import main as reproduce_main
from analysis.reproduce.l2l_methods import GIVEN_COLUMNS
from analysis.reproduce.l2l_paper import (
    CORPORA,
    FORMS,
    LOSS_NAMES,
    PREDICTION_COLUMNS,
    SCALING_COLUMNS,
    TEST_LOSSES,
    TEST_TO_TEST_COLUMNS,
    TRAIN_TO_TEST_COLUMNS,
    TRAIN_TO_TRAIN_COLUMNS,
    loss_to_loss,
)
from analysis.sizes import paper_param_count
from analysis.testbeds.l2l import read_opt_params
from tests.conftest import shared_path

# --given for the fixture's run: two sources, so that the combination has something to combine
GIVEN = pd.DataFrame({"data": ["fineweb-100b", "starcoder"], "val_loss": [2.42, 0.99]})


@pytest.fixture(scope="module")
def l2l_outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("l2l")
    result = l2l.reproduce(shared_path("l2l"), out, given=GIVEN)
    return out, result


def test_csv_columns_and_sizes(l2l_outputs):
    out, _ = l2l_outputs
    expected = {
        "scaling_fits.csv": (SCALING_COLUMNS, 6 * 23 * 2),
        "train_to_train.csv": (TRAIN_TO_TRAIN_COLUMNS, 30),
        "train_to_test.csv": (TRAIN_TO_TEST_COLUMNS, 6 * 11),
        "test_to_test.csv": (TEST_TO_TEST_COLUMNS, 30 * 11),
    }
    for name, (columns, rows) in expected.items():
        frame = pd.read_csv(out / name)
        assert tuple(frame.columns) == columns, name
        assert len(frame) == rows, name
        assert np.isfinite(frame.select_dtypes("number").to_numpy()).all(), name
    assert set(pd.read_csv(out / "train_to_test.csv")["test"]) == set(TEST_LOSSES)
    for name in ("train_to_test.csv", "test_to_test.csv"):  # the columns, by name
        assert {"data", "test", "kappa", "K", "E_x", "E_y"} <= set(expected[name][0]), name
    assert (out / "figure1.png").stat().st_size > 10_000
    check = pd.read_csv(out / "loss_to_loss_check.csv")
    assert len(check) == 30 + 66 + 330
    # points without a logarithm are rare (SciQ only) and counted
    assert check["n_excluded"].sum() < 0.01 * check["n_points"].sum()


def test_scaling_fits_at_or_below_the_notebooks(l2l_outputs):
    out, _ = l2l_outputs
    check = pd.read_csv(out / "scaling_fits_check.csv")
    notebook = read_opt_params(shared_path("l2l"))
    assert len(check) == len(notebook) == 276
    # Same float64 objective on both sides; 1e-9 relative absorbs summation-order noise only.
    ratio = check["objective"] / check["objective_notebook_params"]
    assert (ratio <= 1 + 1e-9).all(), check.loc[ratio > 1 + 1e-9, ["data", "loss_name", "form"]]


def test_fineweb_to_starcoder_matches_the_paper(l2l_outputs):
    out, result = l2l_outputs
    t2t = pd.read_csv(out / "train_to_train.csv").set_index(["data0", "data1"])
    row = t2t.loc[("fineweb-100b", "starcoder")]
    # the appendix prints 5 decimals; our E's are refitted, so allow a few units in the last one
    assert row["kappa"] == pytest.approx(1.09041, abs=5e-5)
    assert row["K"] == pytest.approx(0.62303, abs=5e-5)
    assert row["r_squared"] > 0.99
    assert "with notebook E's" in result.text


def test_loss_to_loss_recovers_a_shifted_power_law():
    x = np.linspace(2.5, 4.0, 30)
    y = 0.7 * (x - 2.1) ** 1.2 + 0.9
    fit = loss_to_loss(x, y, 2.1, 0.9)
    assert fit["kappa"] == pytest.approx(1.2) and fit["K"] == pytest.approx(0.7)
    assert fit["r_squared"] == pytest.approx(1.0) and fit["n_excluded"] == 0
    # points below an asymptote have no logarithm: left out and counted
    assert loss_to_loss(np.r_[x, 2.0], np.r_[y, 1.0], 2.1, 0.9)["n_excluded"] == 1


def test_predictions_for_the_papers_largest_runs(l2l_outputs):
    """Each of the 276 fits evaluated at depth 40 and 1e21 FLOPs, the runs the sweep leaves out:
    the paper rows keep the paper's numbers (recomputed here from the fitted parameters)."""
    out, result = l2l_outputs
    everything = pd.read_csv(out / "predictions_1e21.csv")
    assert tuple(everything.columns) == PREDICTION_COLUMNS
    table = everything[everything["method"] == "paper"]
    fits = pd.read_csv(out / "scaling_fits.csv")
    assert len(table) == len(fits) == 276
    assert list(everything["method"][:276]) == ["paper"] * 276  # the paper's rows first
    N = paper_param_count(40)
    assert (everything["N"] == N).all() and np.allclose(everything["D"], 1e21 / (6 * N), rtol=1e-15)
    assert (everything["C"] == 1e21).all()
    for fit, row in zip(fits.to_dict("records"), table.to_dict("records"), strict=True):
        assert (row["data"], row["loss_name"], row["form"]) == (fit["data"], fit["loss_name"],
                                                               fit["form"])  # fmt: skip
        expected = get_form(fit["form"]).predict(
            fit, {"N": np.array([N]), "D": np.array([row["D"]])}
        )
        assert row["prediction"] == pytest.approx(float(expected[0]), rel=1e-12)
        assert row["choice"] == row["form"]
    # 20x the largest released budget: each corpus' val_loss below anything it has reached
    sweep = pd.read_csv(shared_path("l2l") / "sweep.csv")
    own = table[table["loss_name"] == "val_loss"]
    for row in own.to_dict("records"):
        assert row["prediction"] < sweep.loc[sweep["data"] == row["data"], "val_loss"].min()
    assert "depth-40 run at C = 1e+21" in result.text


def test_every_prediction_has_an_ordered_interval(l2l_outputs):
    out, _ = l2l_outputs
    table = pd.read_csv(out / "predictions_1e21.csv")
    values = table[["prediction", "lower", "upper"]].to_numpy()
    assert np.isfinite(values).all()
    assert ((table["lower"] <= table["prediction"]) & (table["prediction"] <= table["upper"])).all()
    assert (table["lower"] > 0).all() and (table["upper"] > table["lower"]).all()


def test_calibrated_and_selected_rows(l2l_outputs):
    """calibrated: every (data, loss_name, form) in the fits' order; selected: the study's one
    choice (recorded in selection.csv, made on val_loss) for every (data, loss_name)."""
    out, result = l2l_outputs
    table = pd.read_csv(out / "predictions_1e21.csv")
    calibrated = table[table["method"] == "calibrated"]
    assert list(zip(calibrated["data"], calibrated["loss_name"], calibrated["form"],
                    strict=True)) == list(itertools.product(CORPORA, LOSS_NAMES, FORMS))  # fmt: skip
    assert (calibrated["choice"] == calibrated["form"]).all()
    selection = pd.read_csv(out / "selection.csv")
    assert tuple(selection.columns) == l2l_methods.SELECTION_COLUMNS
    assert selection["chosen"].sum() == 1 and len(selection) == 6
    chosen = selection.loc[selection["chosen"], "choice"].iloc[0]
    assert selection.loc[selection["chosen"], "mean_abs_log_error"].iloc[0] == pytest.approx(
        selection["mean_abs_log_error"].min()
    )
    selected = table[table["method"] == "selected"]
    assert list(zip(selected["data"], selected["loss_name"], strict=True)) == list(
        itertools.product(CORPORA, LOSS_NAMES)
    )
    assert (selected["choice"] == chosen).all() and (selected["form"] == chosen).all()
    assert "fitting choice for the study" in result.text and chosen in result.text
    assert set(table["method"]) == {"paper", "calibrated", "selected"}


def test_batched_fits_are_the_procedures_own():
    """``_batched`` (every nested fit made beforehand by fit_laws) gives law_predictor's numbers,
    and falls back to it on a row set it did not prepare. Synthetic runs: no data needed."""
    from analysis.calibrate import calibrated_prediction, nested_cuts

    rng = np.random.default_rng(0)
    budgets = np.geomspace(1e17, 1e19, 6)
    rows = [(C, N) for C in budgets for N in np.geomspace(1e7, 3e8, 7)]
    C, N = np.array(rows).T
    D = C / (6 * N)
    loss = ((8e7 / N) ** (0.34 / 0.3) + 5e9 / D) ** 0.3 * 2.0 + 1.7
    table = pd.DataFrame({"dataset": "x", "loss_name": "y", "N": N, "D": D, "C": C, "M": D / N,
                          "actual": loss * np.exp(rng.normal(0, 0.003, len(N)))})  # fmt: skip
    target = l2l_paper.largest_run()
    cuts = nested_cuts(table["C"], 3)
    for form, drop in (("kaplan", 0), ("chinchilla", 0), ("overtrain", 1)):
        batched = l2l_methods._batched(form, drop, {("x", "y"): table}, {("x", "y"): cuts})
        plain = law_predictor(form, drop_smallest=drop)
        assert batched.name == plain.name
        ours = calibrated_prediction(batched, table, target, "C", cuts)
        theirs = calibrated_prediction(plain, table, target, "C", cuts)
        for field in ("raw", "point", "lower", "upper"):
            assert getattr(ours, field) == pytest.approx(getattr(theirs, field), rel=1e-12)
        odd = table.iloc[::2]  # a row set not prepared: the procedure itself
        assert batched.fit_predict(odd, target) == pytest.approx(plain.fit_predict(odd, target),
                                                                 rel=1e-12)  # fmt: skip


# ----------------------------------------------------------------------------- --given


def test_given_predictions(l2l_outputs):
    out, result = l2l_outputs
    table = pd.read_csv(out / "given_predictions.csv")
    assert tuple(table.columns) == GIVEN_COLUMNS
    targets = [c for c in CORPORA if c not in set(GIVEN["data"])]
    sources = [c for c in CORPORA if c in set(GIVEN["data"])]
    expected = []
    for target in targets:
        expected += [(target, s, m) for s in sources for m in ("paper", "calibrated")]
        expected.append((target, "all", "multi_source"))
    assert list(zip(table["data"], table["source"], table["method"], strict=True)) == expected
    assert np.isfinite(table[["prediction", "lower", "upper"]].to_numpy()).all()
    assert ((table["lower"] <= table["prediction"]) & (table["prediction"] <= table["upper"])).all()
    # the paper rows are train_to_train.csv's laws at the given losses
    t2t = pd.read_csv(out / "train_to_train.csv").set_index(["data0", "data1"])
    given = dict(zip(GIVEN["data"], GIVEN["val_loss"], strict=True))
    for row in table[table["method"] == "paper"].itertuples():
        law = t2t.loc[(row.source, row.data)]
        assert row.prediction == pytest.approx(
            law["K"] * (given[row.source] - law["E_x"]) ** law["kappa"] + law["E_y"], rel=1e-9
        )
    # the combination lies within its sources' calibrated predictions
    for target in targets:
        mine = table[table["data"] == target]
        sources_points = mine.loc[mine["method"] == "calibrated", "prediction"]
        combined = mine.loc[mine["method"] == "multi_source", "prediction"].iloc[0]
        assert sources_points.min() - 1e-12 <= combined <= sources_points.max() + 1e-12
    assert "from the given run(s) on fineweb-100b, starcoder" in result.text


def test_a_single_given_source_is_its_own_combination(l2l_outputs):
    out, _ = l2l_outputs
    from analysis.testbeds import load_l2l, wide

    sweep = wide(load_l2l(shared_path("l2l")), [l2l_paper.VAL_LOSS])
    t2t = pd.read_csv(out / "train_to_train.csv")
    E = dict(zip(t2t["data0"], t2t["E_x"], strict=False))
    given = l2l_methods.read_given(pd.DataFrame({"data": ["proof-pile-2"], "val_loss": [1.46]}))
    table = l2l_methods.given_predictions(sweep, given, E)
    assert len(table) == 5 * 3 and set(table["source"]) == {"proof-pile-2", "all"}
    for target, mine in table.groupby("data"):
        calibrated = mine[mine["method"] == "calibrated"][["prediction", "lower", "upper"]]
        combined = mine[mine["method"] == "multi_source"][["prediction", "lower", "upper"]]
        assert combined.to_numpy() == pytest.approx(calibrated.to_numpy(), rel=1e-12), target


BAD_GIVEN = {
    "missing": (None, "no such file"),
    "columns": ("data,loss\nstarcoder,1.0\n", "expected the columns data,val_loss, got data,loss"),
    "unknown": (
        "data,val_loss\nthe-pile,2.0\n",
        "unknown corpus 'the-pile'; the known corpora are " + ", ".join(CORPORA),
    ),
    "nan": ("data,val_loss\nstarcoder,\n", "val_loss must be a finite positive number"),
    "text": ("data,val_loss\nstarcoder,low\n", "val_loss must be a finite positive number"),
    "negative": ("data,val_loss\nstarcoder,-1\n", "val_loss must be a finite positive number"),
    "zero": ("data,val_loss\nstarcoder,0\n", "not so for starcoder"),
    "twice": ("data,val_loss\nstarcoder,1.0\nstarcoder,1.1\n", "more than once: starcoder"),
    "every": (
        "data,val_loss\n" + "".join(f"{c},2.0\n" for c in CORPORA),
        "nothing left to predict",
    ),
    "empty": ("", "not a CSV file with columns data,val_loss"),
    "no_rows": ("data,val_loss\n", "no rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_GIVEN))
def test_bad_given_is_a_one_line_error(case, tmp_path, capsys):
    """Checked before any fit (so no data are needed): exit status 1, one line, no --out."""
    text, message = BAD_GIVEN[case]
    path = tmp_path / "given.csv"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "out"
    code = reproduce_main(["l2l", "--data", str(tmp_path / "none"), "--out", str(out),
                           "--given", str(path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists()


def test_given_is_for_l2l_only(tmp_path, capsys):
    path = tmp_path / "given.csv"
    path.write_text("data,val_loss\nstarcoder,1.0\n")
    code = reproduce_main(["gadre", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                           "--given", str(path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err == "error: --given applies to l2l only, not gadre\n"


def test_given_is_documented(capsys):
    with pytest.raises(SystemExit):
        reproduce_main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--given GIVEN.csv" in help_text and "data,val_loss" in help_text
    assert "given_predictions.csv" in help_text and "multi_source" in help_text
    assert "--given" in l2l.__doc__ and "given_predictions.csv" in l2l.__doc__


def test_a_given_loss_below_the_laws_floor_is_refused(l2l_outputs):
    """Below E_x every train-to-train law predicts its E_y exactly, with a zero-width interval:
    that is a wrong input, not a prediction."""
    out, _ = l2l_outputs
    from analysis.testbeds import load_l2l, wide

    sweep = wide(load_l2l(shared_path("l2l")), [l2l_paper.VAL_LOSS])
    t2t = pd.read_csv(out / "train_to_train.csv")
    E = dict(zip(t2t["data0"], t2t["E_x"], strict=False))
    given = l2l_methods.read_given(pd.DataFrame({"data": ["starcoder"],
                                                 "val_loss": [E["starcoder"] * 0.9]}))
    with pytest.raises(ValueError, match=r"starcoder val_loss .* irreducible loss E"):
        l2l_methods.given_predictions(sweep, given, E)
