"""Data decisions with odds (analysis.decide, analysis.decide_methods), the compute-optimal
allocation (analysis.allocation) and the l2l reproduction's decisions_1e21.csv and --max-flops."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

from analysis import bootstrap, fit_law
from analysis.allocation import ALLOCATION_COLUMNS, isoflop_optimum, parametric_optimum
from analysis.calibrate import ExtrapolationError
from analysis.decide import (
    DECISION_COLUMNS,
    calibration_table,
    decision_from_ratio,
    difference_spread,
    error_correlation,
    expected_regret,
    gap_figure,
    pairwise_decisions,
    probability_a_better,
    rank_corpora,
    score_decisions,
    with_outcomes,
)
from analysis.decide_methods import (
    CANDIDATES,
    attach_actuals,
    decide,
    pair_table,
    ratio_trend_predictor,
    shapes_at,
    single_scale_predictor,
)
from analysis.workflows import compute_optimal
from tests.conftest import shared_path

# ----------------------------------------------------------------------------- probabilities


def test_probability_is_the_normal_tail_of_the_log_ratio():
    assert probability_a_better(np.log(0.98), 0.01) == pytest.approx(ndtr(-np.log(0.98) / 0.01))
    assert probability_a_better(0.0, 0.05) == pytest.approx(0.5)
    # where higher is better the same distribution favours the other corpus
    p = probability_a_better(0.02, 0.03)
    assert probability_a_better(0.02, 0.03, higher_is_better=True) == pytest.approx(1 - p)
    # no spread: certain, an exact tie is a coin
    assert probability_a_better([-0.1, 0.1, 0.0], [0.0, 0.0, 0.0]).tolist() == [1.0, 0.0, 0.5]
    assert np.isnan(probability_a_better(np.nan, 0.1))


def test_regret_is_the_expected_loss_given_up_by_the_favourite():
    """Monte Carlo over X = log(y_a / y_b): the favourite's E[(y_fav - y_other)^+], with the
    other corpus at its predicted value."""
    rng = np.random.default_rng(0)
    b = 3.0
    for mean, spread in ((-0.01, 0.02), (0.03, 0.05), (-0.2, 0.01)):
        x = mean + spread * rng.standard_normal(400_000)
        a = b * np.exp(mean)
        if mean <= 0:  # a favoured: y_a = b e^X against b
            given_up = b * np.exp(x) - b
        else:  # b favoured: y_b = a e^-X against a
            given_up = a * np.exp(-x) - a
        monte_carlo = np.mean(np.maximum(given_up, 0))
        assert expected_regret(mean, spread, a, b) == pytest.approx(monte_carlo, rel=0.03,
                                                                    abs=1e-7)  # fmt: skip
    assert expected_regret(-0.1, 0.0, 1.0, 1.1) == 0.0
    # higher is better (an accuracy): the favourite a gives up E[(y_b - y_a)^+]
    x = 0.02 + 0.05 * rng.standard_normal(400_000)
    monte_carlo = np.mean(np.maximum(0.5 - 0.5 * np.exp(x), 0))
    exact = expected_regret(0.02, 0.05, 0.5 * np.exp(0.02), 0.5, higher_is_better=True)
    assert exact == pytest.approx(monte_carlo, rel=0.03)
    columns = decision_from_ratio(-0.01, 0.02, 1.98, 2.0)
    assert columns["regret"] == pytest.approx(expected_regret(-0.01, 0.02, 1.98, 2.0))
    assert columns["gap"] == pytest.approx(np.expm1(-0.01))
    assert columns["gap_lower"] < columns["gap"] < columns["gap_upper"]


def test_correlated_errors_narrow_the_difference():
    assert difference_spread(0.03, 0.03, 0.0) == pytest.approx(0.03 * np.sqrt(2))
    assert difference_spread(0.03, 0.03, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert difference_spread(0.03, 0.02, 0.9) < difference_spread(0.03, 0.02, 0.5)
    close = {"x": 2.00, "y": 2.02}
    spreads = {"x": 0.02, "y": 0.02}
    independent = pairwise_decisions(close, spreads, 0.0)["p_a_better"].iloc[0]
    correlated = pairwise_decisions(close, spreads, 0.9)["p_a_better"].iloc[0]
    assert 0.5 < independent < correlated < 1.0  # the shared error is not uncertainty of the gap


def test_pairwise_table_columns_order_and_missing_corpus():
    points = {"a": 2.0, "b": 2.1, "c": np.nan, "d": 1.9}
    spreads = {"a": 0.02, "b": 0.02, "c": 0.02, "d": 0.01}
    matrix = pd.DataFrame(0.5, index=list(points), columns=list(points))
    table = pairwise_decisions(points, spreads, matrix, metric="m", target="t", method="law")
    assert tuple(table.columns) == DECISION_COLUMNS
    assert list(zip(table["data_a"], table["data_b"], strict=True)) == list(
        itertools.combinations(points, 2))
    assert table.loc[table["data_b"] == "c", "p_a_better"].isna().all()
    ab = table[(table["data_a"] == "a") & (table["data_b"] == "b")].iloc[0]
    assert ab["p_a_better"] > 0.9 and ab["gap_lower"] < ab["gap"] < ab["gap_upper"] < 0
    assert ab["predicted_a"] == 2.0 and ab["regret"] > 0
    reversed_ = pairwise_decisions(points, spreads, matrix, pairs=[("b", "a")])
    assert reversed_["p_a_better"].iloc[0] == pytest.approx(1 - ab["p_a_better"])


def test_error_correlation_from_matched_nested_errors():
    rng = np.random.default_rng(3)
    rows = pd.DataFrame([(cut, n) for cut in range(4) for n in range(30)], columns=["cut", "N"])
    shared = rng.standard_normal(len(rows))
    errors = {}
    for corpus in ("a", "b"):
        own = rng.standard_normal(len(rows))
        errors[corpus] = rows.assign(D=1.0, distance=0.5,
                                     log_error=0.01 * (0.9 * shared + np.sqrt(1 - 0.81) * own))  # fmt: skip
    errors["c"] = rows.iloc[:2].assign(D=1.0, distance=0.5, log_error=0.01)  # too few matches
    model = ExtrapolationError(0.0, 0.0, 0.0, 0.01, 10, 4)
    matrix = error_correlation(errors, dict.fromkeys(errors, model), ["cut", "N", "D"])
    assert matrix.loc["a", "b"] == pytest.approx(0.81, abs=0.08)
    assert matrix.loc["a", "c"] == 0.0  # unmeasured: independent, not certain


def test_scores_calibration_and_ranking():
    table = pd.DataFrame({
        "target": "t", "metric": "m", "data_a": ["x", "x", "y", "x"],
        "data_b": ["y", "z", "z", "y"], "method": ["one", "one", "one", "two"],
        "p_a_better": [0.95, 0.6, 0.05, 1.0], "actual_a": [1.0, 2.0, 1.5, 1.0],
        "actual_b": [1.1, 1.9, 1.2, 1.1],
    })  # fmt: skip
    scored = with_outcomes(table)
    assert scored["a_better"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert scored["right"].tolist() == [1.0, 0.0, 1.0, 1.0]
    scores = score_decisions(scored).set_index("method")
    assert scores.loc["one", "accuracy"] == pytest.approx(2 / 3)
    assert scores.loc["one", "brier"] == pytest.approx((0.05**2 + 0.6**2 + 0.05**2) / 3)
    assert scores.loc["one", "n_confident"] == 2 and scores.loc["one", "confident_right"] == 2
    calibration = calibration_table(scored)
    one = calibration[calibration["method"] == "one"].set_index("bin")
    assert one.loc["[0.95, 0.99)", "n"] == 2 and one.loc["[0.6, 0.7)", "fraction_right"] == 0.0
    ranking = rank_corpora(table[table["method"] == "one"])
    assert ranking["data"].tolist() == ["x", "z", "y"]  # wins: x 1.55, z 1.35, y 0.1
    assert ranking["p_beats_next"].iloc[0] == pytest.approx(0.6)


# ----------------------------------------------------------------------------- the methods


def synthetic_runs(seed: int = 0) -> pd.DataFrame:
    """Three corpora on the same grid (6 budgets x 5 shapes), Chinchilla losses with 0.3%
    scatter: 'far' is much worse everywhere; 'late' is behind 'early' at small scale and ahead
    at large (a lower E, a larger data term: their losses cross at D = 1.5e10 tokens, at the
    grid's largest budget)."""
    rng = np.random.default_rng(seed)
    laws = {"early": (1.8, 400.0, 0.34, 1500.0, 0.3), "late": (1.6, 400.0, 0.34, 1726.0, 0.3),
            "far": (2.6, 400.0, 0.34, 1500.0, 0.3)}  # fmt: skip
    rows = []
    for budget in np.geomspace(1e17, 1e19, 6):
        for n in np.geomspace(budget ** 0.5 / 30, budget ** 0.5 / 3, 5):
            d = budget / (6 * n)
            for corpus, (e, a, alpha, b, beta) in laws.items():
                loss = (e + a / n**alpha + b / d**beta) * np.exp(0.003 * rng.standard_normal())
                rows.append({"dataset": corpus, "N": n, "D": d, "C": budget, "loss": loss})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def synthetic_decisions():
    runs = synthetic_runs()
    targets = pd.DataFrame({"N": [2e9], "D": [1e21 / (6 * 2e9)], "C": [1e21]})
    return runs, decide(runs, ["loss"], targets, diagnostics=True)


def test_decide_gives_every_method_every_pair(synthetic_decisions):
    _, decisions = synthetic_decisions
    table = decisions.table
    assert tuple(table.columns[: len(DECISION_COLUMNS)]) == DECISION_COLUMNS
    methods = set(table["method"])
    assert {"single_scale", "selected", *CANDIDATES} <= methods
    assert {"law_kaplan_independent", "single_scale_smoothed"} <= methods  # diagnostics
    for method in ("single_scale", "selected", *CANDIDATES):
        mine = table[table["method"] == method]
        assert len(mine) == 3, method  # three pairs, one target
        assert mine["p_a_better"].between(0, 1).all(), method
    assert set(table.loc[table["method"] == "single_scale", "p_a_better"]) <= {0.0, 1.0}
    assert decisions.chosen in CANDIDATES
    assert decisions.selection["chosen"].sum() == 1
    assert (decisions.selection["spread_scale"] > 0).all()
    selected = table[table["method"] == "selected"].reset_index(drop=True)
    chosen = table[table["method"] == decisions.chosen].reset_index(drop=True)
    pd.testing.assert_series_equal(selected["p_a_better"], chosen["p_a_better"])


def test_far_apart_corpora_are_certain_and_the_crossing_is_caught(synthetic_decisions):
    runs, decisions = synthetic_decisions
    table = decisions.table.set_index(["method", "data_a", "data_b"])["p_a_better"]
    for method in ("selected", *CANDIDATES):
        assert table[method, "early", "far"] > 0.99, method
        assert table[method, "late", "far"] > 0.99, method
    # 'late' is behind 'early' in every run of the grid, ahead at the target (by its laws):
    # single-scale ranking misses the crossing, the methods that extrapolate the gap catch it
    top = runs[runs["C"] == runs["C"].max()].pivot_table(index="N", columns="dataset",
                                                         values="loss")  # fmt: skip
    assert (top["early"] < top["late"]).all()
    assert table["single_scale", "early", "late"] == 1.0
    for method in ("ratio_trend", "blend", "single_scale_calibrated", "selected"):
        assert table[method, "early", "late"] < 0.5, method


def test_single_scale_ranks_the_largest_budget_runs_nearest_in_shape():
    runs = synthetic_runs(1)
    top = runs[runs["C"] == runs["C"].max()]
    target = pd.DataFrame({"N": [top["N"].max() * 3], "D": [1e20 / (6 * top["N"].max() * 3)],
                           "C": [1e20]})  # fmt: skip
    table = decide(runs, ["loss"], target, candidates=["ratio_trend"]).table
    single = table[table["method"] == "single_scale"].set_index(["data_a", "data_b"])
    at = top.assign(M=top["D"] / top["N"])
    nearest = at[np.isclose(at["M"], at["M"].min())].set_index("dataset")["loss"]
    assert single.loc[("early", "late"), "predicted_a"] == pytest.approx(nearest["early"])
    assert single.loc[("early", "late"), "p_a_better"] == float(nearest["early"] < nearest["late"])


def test_pair_predictors_predict_their_own_budget_and_extrapolate_a_trend():
    runs = synthetic_runs(2).assign(M=lambda f: f["D"] / f["N"])
    pairs = pair_table(runs, "early", "late", "loss")
    assert (pairs["actual"] == pairs["y_a"] / pairs["y_b"]).all()
    level = single_scale_predictor()
    top = pairs[pairs["C"] == pairs["C"].max()]
    # beyond the fit: the largest budget's line in log M, whatever the budget
    far = top.assign(C=1e22)
    np.testing.assert_allclose(level.fit_predict(pairs, far), level.fit_predict(pairs, top))
    # an exact log-linear trend in C and a quadratic in log M is recovered
    exact = pairs.assign(actual=np.exp(0.1 - 0.02 * np.log(pairs["C"]) + 0.01 * np.log(pairs["M"])))
    far = exact.iloc[:3].assign(C=1e21)
    expected = np.exp(0.1 - 0.02 * np.log(1e21) + 0.01 * np.log(far["M"]))
    np.testing.assert_allclose(ratio_trend_predictor().fit_predict(exact, far), expected, rtol=1e-9)


def test_backtest_helpers_attach_what_the_targets_measured():
    runs = synthetic_runs(3).assign(M=lambda f: f["D"] / f["N"])
    largest = runs["C"].max()
    targets = shapes_at(runs, largest)
    assert len(targets) == 5 and targets["target"].is_unique
    fit = runs[runs["C"] < largest]
    table = decide(fit, ["loss"], targets, candidates=["single_scale_calibrated"]).table
    table = with_outcomes(attach_actuals(table, runs, targets))
    row = table.iloc[0]
    measured = runs[(runs["N"] == targets.set_index("target").loc[row["target"], "N"])]
    assert row["actual_a"] == measured.set_index("dataset").loc[row["data_a"], "loss"]
    assert table["right"].notna().all()
    scores = score_decisions(table).set_index("method")
    assert scores.loc["selected", "accuracy"] >= 0.8


def test_a_grid_too_small_for_nested_decisions_still_decides():
    """Three budgets (a tiny study's grid): no nested decision to choose by, so every score is
    NaN, no spread is widened and the first candidate is selected; every method still decides."""
    runs = synthetic_runs()
    runs = runs[runs["C"].isin(sorted(runs["C"].unique())[:3])]
    target = pd.DataFrame({"N": [1e9], "D": [1e19 / 6e9], "C": [1e19]})
    decisions = decide(runs, ["loss"], target)
    assert decisions.chosen == CANDIDATES[0]
    assert decisions.selection["brier"].isna().all()
    assert (decisions.selection["spread_scale"] == 1.0).all()
    table = decisions.table
    assert table.loc[table["method"] == "selected", "p_a_better"].notna().all()


def test_bad_input_is_one_clear_error():
    runs = synthetic_runs()
    target = pd.DataFrame({"N": [1e9], "D": [1e10], "C": [6e19]})
    with pytest.raises(ValueError, match="lacks the column"):
        decide(runs.drop(columns="C"), ["loss"], target)
    with pytest.raises(ValueError, match="single budget"):
        decide(runs[runs["C"] == runs["C"].max()], ["loss"], target)
    with pytest.raises(ValueError, match="unknown or no candidate"):
        decide(runs, ["loss"], target, candidates=["magic"])
    with pytest.raises(ValueError, match="targets lack"):
        decide(runs, ["loss"], target.drop(columns="D"))
    with pytest.raises(ValueError, match="two corpora"):
        decide(runs[runs["dataset"] == "far"], ["loss"], target)


def test_gap_figure_draws_each_metric(synthetic_decisions):
    _, decisions = synthetic_decisions
    figure = gap_figure(decisions.table, ["loss"], "selected")
    axis = figure.axes[0]
    assert axis.get_title() == "loss" and len(axis.get_yticklabels()) == 3


def test_gap_figure_panels_fit_their_pairs_and_never_overlap():
    """A two-corpus study has one pair per metric: its panels are short (the tiny study's figure
    was 9 inches tall for three points, panels of 4 inches around one), and no panel's labels
    run into another's."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    metrics = ["loss on a", "loss on b", "arc_easy test loss"]
    table = pd.DataFrame({"metric": metrics, "method": "selected", "data_a": "a", "data_b": "b",
                          "p_a_better": [1.0, 0.0, 0.0], "gap": [-0.26, 0.24, 0.1],
                          "gap_lower": [-0.31, 0.19, 0.08], "gap_upper": [-0.21, 0.3, 0.11]})
    figure = gap_figure(table, metrics, "selected", title="gaps")
    FigureCanvasAgg(figure).draw()
    boxes = [ax.get_tightbbox() for ax in figure.axes if ax.get_visible()]
    assert len(boxes) == 3 and figure.get_figheight() < 6
    for one, other in itertools.combinations(boxes, 2):
        assert not one.overlaps(other), (one, other)


# ----------------------------------------------------------------------------- allocation


def chinchilla_law(**params) -> object:
    from analysis.law import Law

    return Law(form="chinchilla", params=params)


def test_parametric_optimum_is_compute_optimal_with_bootstrap_bounds():
    runs = synthetic_runs(4)
    early = runs[runs["dataset"] == "early"]
    inputs = {"N": early["N"].to_numpy(), "D": early["D"].to_numpy()}
    law = fit_law("chinchilla", inputs, early["loss"].to_numpy())
    table = parametric_optimum(law, [1e20, 1e21])
    assert tuple(table.columns) == ALLOCATION_COLUMNS
    point = compute_optimal(law, [1e20, 1e21])
    np.testing.assert_allclose(table["N"], point["N"])
    np.testing.assert_allclose(table["loss"], point["loss"])
    assert table["N_lower"].isna().all()  # no samples: no bounds
    law = bootstrap(law, inputs, early["loss"].to_numpy(), n_resamples=40)
    table = parametric_optimum(law, [1e20, 1e21])
    for quantity in ("N", "D", "loss"):
        assert (table[f"{quantity}_lower"] < table[f"{quantity}_upper"]).all(), quantity
    np.testing.assert_allclose(table["C"], 6 * table["N"] * table["D"])


def test_isoflop_optimum_recovers_the_chinchilla_allocation():
    """Runs on a noiseless Chinchilla law: the parabolas' vertices follow N* ~ C^(beta /
    (alpha + beta)) and the extrapolated optimum is close to the law's own."""
    law = chinchilla_law(E=1.7, A=400.0, alpha=0.34, B=1500.0, beta=0.28)
    rows = []
    for budget in np.geomspace(1e17, 1e20, 7):
        exact = compute_optimal(law, budget)["N"].iloc[0]
        for n in exact * np.geomspace(0.25, 4, 9):
            d = budget / (6 * n)
            rows.append({"N": n, "C": budget, "loss": float(law.predict(N=n, D=d))})
    runs = pd.DataFrame(rows)
    table = isoflop_optimum(runs, [1e21, 1e22], n_resamples=20)
    truth = compute_optimal(law, [1e21, 1e22])
    np.testing.assert_allclose(table["N"], truth["N"], rtol=0.1)
    np.testing.assert_allclose(table["loss"], truth["loss"], rtol=0.01)
    assert (table["n_budgets"] == 7).all()
    slope = np.log(table["N"].iloc[1] / table["N"].iloc[0]) / np.log(10)
    assert slope == pytest.approx(0.28 / 0.62, abs=0.03)
    with pytest.raises(ValueError, match="at least 3 budgets"):
        isoflop_optimum(runs[runs["C"] < 3e17], 1e21)


# ----------------------------------------------------------------------------- the reproduction


def test_max_flops_is_checked_before_any_fit(tmp_path, capsys):
    from analysis.reproduce.__main__ import main
    from analysis.reproduce.l2l import restrict_budget

    tidy = pd.DataFrame({"C": np.repeat([1e17, 1e18, 1e19, 1e20, 1e21, 1e22], 2), "x": 1})
    assert restrict_budget(tidy, 1e21)["C"].max() == 1e21
    with pytest.raises(ValueError, match="keeps 4 of the sweep's budgets.*1e\\+21 or more"):
        restrict_budget(tidy, 5e20)
    assert main(["gadre", "--max-flops", "1e19", "--out", str(tmp_path / "o")]) == 1
    assert "--max-flops applies to l2l only" in capsys.readouterr().err
    assert main(["l2l", "--max-flops", "-3", "--out", str(tmp_path / "o")]) == 1
    assert "positive number of FLOPs" in capsys.readouterr().err


@pytest.mark.slow
def test_decisions_1e21_from_a_smaller_grid(tmp_path):
    """The reproduction with --max-flops 4.6e18 (5 budgets): decisions_1e21.csv has the
    issue's columns, every eval/ loss column and every pair of the six corpora, a row per
    method; nothing above the cut was fitted."""
    from analysis.reproduce.__main__ import main
    from analysis.testbeds.l2l import CORPORA

    out = tmp_path / "l2l"
    assert main(["l2l", "--data", str(shared_path("l2l")), "--out", str(out),
                 "--max-flops", "4.6e18"]) == 0  # fmt: skip
    decisions = pd.read_csv(out / "decisions_1e21.csv")
    assert tuple(decisions.columns) == ("metric", "data_a", "data_b", "method", "p_a_better")
    methods = {"single_scale", "selected", *CANDIDATES}
    assert set(decisions["method"]) == methods
    assert decisions["metric"].nunique() == 34
    assert all(m.startswith("eval/") for m in decisions["metric"])
    pairs = set(zip(decisions["data_a"], decisions["data_b"], strict=True))
    assert pairs == set(itertools.combinations(CORPORA, 2))
    assert len(decisions[decisions["method"] == "selected"]) == 34 * 15
    assert decisions["p_a_better"].dropna().between(0, 1).all()
    assert set(decisions.loc[decisions["method"] == "single_scale", "p_a_better"]) <= {0.0, 1.0}
    details = pd.read_csv(out / "decisions_1e21_details.csv")
    assert {"predicted_a", "predicted_b", "gap_lower", "gap_upper", "regret"} <= set(details.columns)
    selection = pd.read_csv(out / "decisions_selection.csv")
    assert selection["chosen"].sum() == 1 and (selection["n"] > 0).all()
    check = pd.read_csv(out / "scaling_fits_check.csv")
    assert "objective_notebook_params" not in check.columns  # the notebooks fitted every run
    assert check["n_points"].max() < 90  # runs up to 4.57e18 only (each corpus has ~60)
    assert (out / "decisions_1e21.png").stat().st_size > 10_000
