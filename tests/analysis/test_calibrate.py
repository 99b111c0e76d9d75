"""Extrapolation-calibrated intervals (analysis.calibrate) on synthetic errors whose growth and
drift are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.calibrate import (
    ExtrapolationError,
    Predictor,
    calibrated_prediction,
    combine_sources,
    extrapolation_distance,
    log_scatter,
    nested_cuts,
    nested_errors,
    select_predictor,
)


def synthetic_errors(drift, drift_spread, scatter, cuts=6, per_cut=20, seed=0):
    """Nested errors: each cut's fit drifts by its own b ~ N(drift, drift_spread) per unit of
    distance, plus scatter."""
    rng = np.random.default_rng(seed)
    frames = []
    for cut in range(cuts):
        b = drift + drift_spread * rng.standard_normal()
        d = rng.uniform(0.1, 1.5, per_cut)
        frames.append(pd.DataFrame({"cut": cut, "distance": d,
                                    "log_error": b * d + scatter * rng.standard_normal(per_cut)}))
    return pd.concat(frames, ignore_index=True)


def test_error_model_recovers_the_mean_drift_and_its_spread():
    model = ExtrapolationError.fit(synthetic_errors(0.05, 0.0, 0.002, cuts=6), scatter=0.002)
    assert model.bias == pytest.approx(0.05, abs=2e-3)
    assert model.bias_spread < 5e-3 and model.n_cuts == 6 and model.n_errors == 120
    spread = ExtrapolationError.fit(synthetic_errors(0.0, 0.03, 0.002, cuts=8), scatter=0.002)
    assert 0.015 < spread.bias_spread < 0.06  # one draw per cut: the spread of the drifts


def test_intervals_cover_new_fits_at_the_nominal_rate():
    """A new fit is a new draw of the drift: over many synthetic studies about 90% of targets at
    distance 1 fall inside the 90% interval (within sampling error of the few cuts)."""
    rng = np.random.default_rng(1)
    inside = []
    for seed in range(300):
        model = ExtrapolationError.fit(synthetic_errors(0.02, 0.02, 0.003, cuts=6, seed=seed),
                                       scatter=0.003)  # fmt: skip
        truth = np.exp((0.02 + 0.02 * rng.standard_normal()) + 0.003 * rng.standard_normal())
        _, lower, upper = model.interval(1.0, 1.0, 0.9)
        inside.append(lower <= truth <= upper)
    assert 0.84 <= np.mean(inside) <= 0.97


def test_a_drift_is_corrected_and_no_errors_leave_the_scatter():
    model = ExtrapolationError(bias=0.1, bias_spread=0.0, growth=0.0, scatter=0.01, n_errors=9,
                               n_cuts=3)  # fmt: skip
    point, lower, upper = model.interval(np.array([2.0]), np.array([0.5]))
    assert point[0] == pytest.approx(2.0 * np.exp(0.05))
    assert upper[0] / point[0] == pytest.approx(np.exp(1.6448536 * 0.01), rel=1e-6)
    drifting = ExtrapolationError(0.0, 0.02, 0.0, 0.0, 12, 4)  # 4 cuts: Student's t, 3 dof
    assert drifting.half_width(2.0) == pytest.approx(2.3533634 * 0.02 * 2.0, rel=1e-6)
    inside = model.interval(2.0, -0.3)  # inside the fitted runs: no correction, scatter only
    assert inside[0] == pytest.approx(2.0)
    empty = ExtrapolationError.fit(pd.DataFrame(columns=["cut", "distance", "log_error"]), 0.02)
    assert (empty.bias, empty.bias_spread, empty.growth, empty.n_cuts) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="level must be in"):
        model.interval(1.0, 1.0, level=1.0)
    with pytest.raises(ValueError, match="scatter must be"):
        ExtrapolationError.fit(empty_errors(), float("nan"))


def empty_errors():
    return pd.DataFrame(columns=["cut", "distance", "log_error"])


def test_one_cut_corrects_nothing_and_widens_both_ways():
    errors = pd.DataFrame({"cut": 0, "distance": [0.5, 1.0], "log_error": [0.05, 0.1]})
    model = ExtrapolationError.fit(errors, scatter=1e-4)
    assert model.bias == 0 and model.bias_spread == pytest.approx(0.1, rel=1e-3)


def test_distance_is_relative_to_the_fitted_span():
    assert extrapolation_distance([1e3], [1.0, 10.0, 100.0]) == pytest.approx([0.5])
    assert extrapolation_distance([10.0], [1.0, 10.0]) == pytest.approx([0.0])
    with pytest.raises(ValueError, match="single scale"):
        extrapolation_distance([10.0], [5.0, 5.0])


def test_scatter_and_cuts():
    assert log_scatter([1.0, np.e], [1.0, 1.0], n_params=1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="more than 2 points"):
        log_scatter([1.0, 2.0], [1.0, 2.0], n_params=2)
    assert nested_cuts([1, 1, 2, 3, 4, 4], min_levels=2) == [2.0, 3.0]


def power_law_table(exponent=0.3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    C = np.repeat(np.geomspace(1e17, 1e20, 7), 3)
    y = 2.0 + 50 * C**-0.1 * 0 + 30 * (C / 1e17) ** -exponent
    return pd.DataFrame({"C": C, "actual": y * np.exp(noise * rng.standard_normal(C.size))})


def curve(exponent):
    """Fits y = E + A (C/1e17)^-exponent by linear least squares for a fixed exponent."""

    def fit_predict(fit, target):
        x = (fit["C"].to_numpy() / 1e17) ** -exponent
        A, E = np.polyfit(x, fit["actual"].to_numpy(), 1)
        return E + A * (target["C"].to_numpy() / 1e17) ** -exponent

    return Predictor(f"exponent {exponent}", fit_predict, 2)


def test_nested_errors_fit_on_each_prefix_only():
    table = power_law_table()
    seen = []

    def spy(fit, target):
        seen.append((fit["C"].max(), target["C"].min()))
        return curve(0.3).fit_predict(fit, target)

    errors = nested_errors(table, "C", spy, nested_cuts(table["C"], 3))
    assert all(top < bottom for top, bottom in seen) and len(seen) == 4
    assert errors["log_error"].abs().max() < 1e-9  # the right exponent extrapolates exactly
    assert (errors["distance"] > 0).all()


def test_selection_picks_the_procedure_that_extrapolates_and_skips_untestable_ones():
    table = power_law_table(exponent=0.3)

    def never(fit, target):
        raise ValueError("cannot fit")

    candidates = [curve(0.1), curve(0.3), curve(0.6), Predictor("never", never, 2)]
    chosen, scores = select_predictor(candidates, [(table, nested_cuts(table["C"], 3))], "C")
    assert chosen.name == "exponent 0.3"
    assert scores["chosen"].sum() == 1 and np.isnan(scores.iloc[3]["mean_abs_log_error"])
    with pytest.raises(ValueError, match="no nested backtest prediction"):
        select_predictor([Predictor("never", never, 2)], [(table, [1e18])], "C")


def test_calibrated_prediction_widens_a_wrong_form_and_corrects_its_drift():
    table = power_law_table(exponent=0.3, noise=0.002)
    fit, target = table[table["C"] < 1e20], table[table["C"] == 1e20]
    wrong = calibrated_prediction(curve(0.6), fit, target, "C", nested_cuts(fit["C"], 3))
    right = calibrated_prediction(curve(0.3), fit, target, "C", nested_cuts(fit["C"], 3))
    actual = target["actual"].to_numpy()
    assert np.abs(np.log(wrong.point / actual)).mean() < np.abs(np.log(wrong.raw / actual)).mean()
    assert ((wrong.upper - wrong.lower) / wrong.point).mean() > (
        (right.upper - right.lower) / right.point).mean()


def test_combining_sources_respects_their_correlation():
    points = {"a": np.array([1.0, 1.0]), "b": np.array([1.2, np.nan])}
    spreads = {"a": np.array([0.1, 0.1]), "b": np.array([0.1, 0.1])}
    independent = pd.DataFrame(np.eye(2), index=["a", "b"], columns=["a", "b"])
    same = pd.DataFrame(np.ones((2, 2)), index=["a", "b"], columns=["a", "b"])
    center, lower, upper = combine_sources(points, spreads, independent)
    assert center[0] == pytest.approx(np.sqrt(1.2))  # equal weights: the geometric mean
    assert center[1] == pytest.approx(1.0)  # b has no run there: a alone
    half_independent = np.log(upper[0] / center[0])
    assert half_independent == pytest.approx(1.6448536 * 0.1 / np.sqrt(2))
    _, _, upper_same = combine_sources(points, spreads, same)
    assert np.log(upper_same[0] / center[0]) == pytest.approx(1.6448536 * 0.1)
    assert np.log(upper[1] / center[1]) == pytest.approx(1.6448536 * 0.1)
