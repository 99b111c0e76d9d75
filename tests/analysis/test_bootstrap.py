"""bootstrap: intervals that cover the truth on synthetic data; grouped resampling; bad calls."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import FORMS, FitWarning, bootstrap, fit_law

TRUTH = dict(A=60.0, E=1.7, alpha=0.09)
C = np.geomspace(1e17, 1e22, 30)


def _data(seed, noise=2e-3):
    rng = np.random.default_rng(seed)
    return FORMS["compute"].predict(TRUTH, {"C": C}) * np.exp(rng.normal(0.0, noise, C.size))


def test_bootstrap_intervals_cover_the_truth():
    """Monte Carlo over 16 synthetic sweeps: the 90% percentile intervals of every parameter and
    of an extrapolation 100x beyond the largest budget contain the truth about 90% of the time."""
    covered, predicted, widths = [], [], []
    extrapolated = float(FORMS["compute"].predict(TRUTH, {"C": np.array([1e24])})[0])
    for seed in range(16):
        y = _data(100 + seed)
        law = bootstrap(fit_law("compute", {"C": C}, y), {"C": C}, y, n_resamples=80, seed=seed)
        assert law.samples.shape == (80, 3)
        assert law.bootstrap_info["n_failed"] == 0
        intervals = law.param_intervals(0.9)
        covered.append([intervals[k][0] <= v <= intervals[k][1] for k, v in TRUTH.items()])
        lower, upper = law.predict_interval(0.9, C=1e24)
        predicted.append(lower <= extrapolated <= upper)
        widths.append((upper - lower) / extrapolated)
    assert np.mean(covered) >= 0.75
    assert np.mean(predicted) >= 0.7
    assert 0.001 < np.median(widths) < 0.05  # informative, not trivially wide


def test_interval_shapes_and_ordering():
    y = _data(1)
    law = bootstrap(fit_law("compute", {"C": C}, y), {"C": C}, y, n_resamples=30)
    lower, upper = law.predict_interval(0.8, C=np.array([[1e21, 1e23], [1e24, 1e25]]))
    assert lower.shape == upper.shape == (2, 2)
    assert np.all(lower < upper)
    center = law.predict(C=np.array([[1e21, 1e23], [1e24, 1e25]]))
    assert np.all((lower <= center) & (center <= upper))
    narrow, wide = law.predict_interval(0.5, C=1e24), law.predict_interval(0.95, C=1e24)
    assert wide[0] <= narrow[0] and narrow[1] <= wide[1]
    with pytest.raises(ValueError, match="level"):
        law.predict_interval(1.5, C=1e24)


def test_grouped_resampling_keeps_groups_whole():
    """Each point tripled under one group label: resampling groups is resampling the distinct
    points, so with the same seed it reproduces the ungrouped bootstrap of the distinct points
    (the mean objective of tripled points is the same function)."""
    y = _data(2)
    law = fit_law("compute", {"C": C}, y)
    plain = bootstrap(law, {"C": C}, y, n_resamples=20, seed=3)
    tripled = {"C": np.repeat(C, 3)}
    y3 = np.repeat(y, 3)
    law3 = fit_law("compute", tripled, y3)
    grouped = bootstrap(
        law3, tripled, y3, n_resamples=20, seed=3, groups=np.repeat(np.arange(30), 3)
    )
    assert grouped.bootstrap_info["grouped"] and grouped.bootstrap_info["n_groups"] == 30
    np.testing.assert_allclose(grouped.samples, plain.samples, rtol=1e-5)


def test_bootstrap_keeps_fixed_parameters_and_objective():
    y = _data(4)
    law = fit_law("compute", {"C": C}, y, fixed={"E": 1.7}, objective="least_squares")
    boot = bootstrap(law, {"C": C}, y, n_resamples=10, warm_start=False)
    assert np.all(boot.samples[:, 1] == 1.7)
    assert boot.objective.name == "least_squares"
    assert boot.bootstrap_info["warm_start"] is False


def test_resamples_are_refitted_within_the_laws_own_bounds():
    """The law remembers the bounds it was fitted with; its resamples stay inside them (they
    used to be refitted with the form's defaults unless the caller repeated the bounds)."""
    y = _data(7)
    with pytest.warns(FitWarning, match="E sits at its upper bound 1.6"):  # truth: E = 1.7
        law = fit_law("compute", {"C": C}, y, bounds={"E": (0.0, 1.6)})
    assert law.bounds == {"E": (0.0, 1.6)} and law.params["E"] == pytest.approx(1.6)
    boot = bootstrap(law, {"C": C}, y, n_resamples=20)
    assert np.all(boot.samples[:, 1] <= 1.6)
    wider = bootstrap(law, {"C": C}, y, n_resamples=20, bounds={"E": (0.0, 3.0)})  # an override
    assert np.any(wider.samples[:, 1] > 1.6)


def test_bootstrap_needs_the_data_the_law_was_fitted_on():
    y = _data(8)
    law = fit_law("compute", {"C": C}, y)
    order = np.random.default_rng(0).permutation(C.size)
    bootstrap(law, {"C": C[order]}, y[order], n_resamples=4)  # same points, any order: fine
    with pytest.raises(ValueError, match="not the data the law was fitted on"):
        bootstrap(law, {"C": C}, _data(9), n_resamples=4)


def test_bootstrap_rejects_bad_calls():
    y = _data(5)
    law = fit_law("compute", {"C": C}, y)
    with pytest.raises(ValueError, match="fitted on 30 points"):
        bootstrap(law, {"C": C[:10]}, y[:10])
    with pytest.raises(ValueError, match="one label per point"):
        bootstrap(law, {"C": C}, y, groups=[1, 2])
    with pytest.raises(ValueError, match="at least two distinct"):
        bootstrap(law, {"C": C}, y, groups=np.zeros(30))
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap(law, {"C": C}, y, n_resamples=1)
    with pytest.raises(ValueError, match="no bootstrap samples"):
        law.predict_samples(C=1e24)


def test_resamples_that_cannot_be_fitted_are_counted_and_skipped():
    """Two groups, one of a single run: a resample drawing that group twice has two points for
    three parameters (a ValueError for that resample), counted in n_failed; the other
    resamples, of different sizes, are refitted together by size."""
    y = _data(6)[:8]
    groups = np.array([0] + [1] * 7)
    law = fit_law("compute", {"C": C[:8]}, y)
    boot = bootstrap(law, {"C": C[:8]}, y, n_resamples=40, seed=1, groups=groups)
    info = boot.bootstrap_info
    assert 0 < info["n_failed"] < 40
    assert len(boot.samples) == 40 - info["n_failed"]
    assert np.all(np.isfinite(boot.samples))


def test_resamples_whose_parameters_overflow_are_failed_not_kept(monkeypatch):
    """A refit whose log-space parameter runs off (A = inf) is a failed resample: kept, its NaN
    predictions made the upper bound of every interval NaN (seen on a 12-run CPU study)."""
    import sys

    module = sys.modules["analysis.bootstrap"]  # the package exports the function by that name
    real = module.solve_stacked
    spec = FORMS["compute"]
    log_param = spec.params.index(next(p for p in spec.params if p in spec.log_params))

    def one_overflows(problem, start):
        thetas, reports = real(problem, start)
        thetas = np.array(thetas, dtype=float)
        thetas[0, log_param] = 1e6  # exp overflows to inf
        return thetas, reports

    monkeypatch.setattr(module, "solve_stacked", one_overflows)
    y = _data(7)
    law = fit_law("compute", {"C": C}, y)
    boot = bootstrap(law, {"C": C}, y, n_resamples=30, seed=2)
    assert boot.bootstrap_info["n_failed"] == 1 and len(boot.samples) == 29
    lower, upper = boot.predict_interval(0.9, kind="prediction", C=1e23)
    assert np.isfinite(lower) and np.isfinite(upper)
