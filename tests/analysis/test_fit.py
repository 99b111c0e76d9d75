"""fit_law: every form recovers known parameters from noisy synthetic data; objectives; fixed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from analysis import FORMS, FitWarning, fit_law, fit_laws, huber_log, least_squares
from analysis.fit import make_problem


def _grid_nd():
    n, d = np.meshgrid(np.geomspace(2e7, 2e9, 7), np.geomspace(2e8, 5e10, 7))
    return {"N": n.ravel(), "D": d.ravel()}


def _overtrain_inputs():
    c, m = np.meshgrid(np.geomspace(1e17, 1e21, 6), np.array([5.0, 10, 20, 40, 80, 160, 320]))
    return {"C": c.ravel(), "M": m.ravel()}


# form -> (inputs, true parameters, noise: multiplicative for loss laws, additive otherwise)
CASES = {
    "chinchilla": (_grid_nd(), dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28), 1e-3),
    "kaplan": (_grid_nd(), dict(A=3e8, B=5e9, E=1.5, alpha=0.35, beta=0.4), 1e-3),
    "compute": ({"C": np.geomspace(1e17, 1e22, 25)}, dict(A=60.0, E=1.7, alpha=0.09), 1e-3),
    "overtrain": (_overtrain_inputs(), dict(E=1.51, a=141.0, b=190.0, eta=0.121), 1e-3),
    "loss_to_loss": (
        {"L": np.linspace(2.2, 5.0, 40)},
        dict(K=0.62, kappa=1.09, E_x=1.6, E_y=0.7),
        2e-4,
    ),
    "loss_to_error": (
        {"L": np.linspace(2.0, 5.0, 30)},
        dict(epsilon=0.85, k=2.08, gamma=0.756),
        2e-3,
    ),
    "sigmoid": ({"L": np.linspace(0.4, 2.6, 40)}, dict(a=-0.7, b=0.95, k=3.0, L0=1.3), 5e-3),
}


def _noisy(form, inputs, params, noise, seed=0):
    rng = np.random.default_rng(seed)
    clean = FORMS[form].predict(params, inputs)
    if FORMS[form].default_objective == "huber_log":
        return clean * np.exp(rng.normal(0.0, noise, clean.size))
    return clean + rng.normal(0.0, noise, clean.size)


@pytest.mark.parametrize("form", list(CASES))
def test_every_form_recovers_known_parameters(form):
    inputs, truth, noise = CASES[form]
    target = _noisy(form, inputs, truth, noise)
    law = fit_law(form, inputs, target)
    assert law.converged, law.message
    assert law.n_points == target.size
    assert set(law.params) == set(FORMS[form].params)
    for name, value in truth.items():
        assert law.params[name] == pytest.approx(value, rel=0.15), (name, law.params)
    # the fit is at least as good as the truth itself on its own objective
    problem = make_problem(form, inputs, target)
    at_truth = float(problem.objective_value(FORMS[form].to_theta(truth)))
    assert law.objective_value <= at_truth * (1 + 1e-9)
    np.testing.assert_allclose(law.predict(**inputs), FORMS[form].predict(law.params, inputs))


def test_fit_is_deterministic():
    inputs, truth, noise = CASES["kaplan"]
    target = _noisy("kaplan", inputs, truth, noise)
    first, second = fit_law("kaplan", inputs, target), fit_law("kaplan", inputs, target)
    assert first.params == second.params
    assert first.objective_value == second.objective_value


def test_predict_broadcasts_and_keeps_shape():
    inputs, truth, noise = CASES["chinchilla"]
    law = fit_law("chinchilla", inputs, _noisy("chinchilla", inputs, truth, noise))
    grid = law.predict(N=np.array([[1e9], [1e10]]), D=np.array([2e10, 2e11, 2e12]))
    assert grid.shape == (2, 3)
    assert np.all(np.diff(grid, axis=1) < 0)  # more data, lower loss
    assert law.predict(N=7e10, D=1.4e12).shape == ()


def test_mean_and_sum_reductions_share_the_minimiser():
    inputs, truth, noise = CASES["chinchilla"]
    target = _noisy("chinchilla", inputs, truth, noise)
    mean = fit_law("chinchilla", inputs, target, objective=huber_log(reduction="mean"))
    total = fit_law("chinchilla", inputs, target, objective=huber_log(reduction="sum"))
    assert mean.objective.reduction == "mean" and total.objective.reduction == "sum"
    assert total.objective_value == pytest.approx(mean.objective_value * target.size, rel=1e-6)
    for name in truth:
        assert total.params[name] == pytest.approx(mean.params[name], rel=1e-4)


def test_objectives_are_the_written_huber_and_squares_with_their_derivatives():
    """Huber (delta 1e-3): r^2/2 inside, delta (|r| - delta/2) outside; least squares r^2; mean
    or sum over points; rho' and rho'' against finite differences away from the kink."""
    r = np.array([-5e-3, -1e-3, -4e-4, 0.0, 3e-4, 9.9e-4, 2e-3, 0.1])
    written = np.where(np.abs(r) <= 1e-3, 0.5 * r**2, 1e-3 * (np.abs(r) - 5e-4))
    for objective, rho in ((huber_log(), written), (least_squares(), r**2)):
        value, _ = objective.value_and_grad(r)
        assert value == pytest.approx(rho.mean(), rel=1e-14)
        total, _ = type(objective)(objective.name, reduction="sum").value_and_grad(r)
        assert total == pytest.approx(rho.sum(), rel=1e-14)
        pieces = objective.pieces(r)
        np.testing.assert_allclose(pieces[0], rho, rtol=1e-14)
        h = 1e-7
        smooth = np.abs(np.abs(r) - 1e-3) > 2 * h  # not across Huber's kink
        up, down = objective.pieces(r + h), objective.pieces(r - h)
        np.testing.assert_allclose(
            pieces[1][smooth], ((up[0] - down[0]) / (2 * h))[smooth], rtol=1e-6, atol=1e-12
        )
        np.testing.assert_allclose(
            pieces[2][smooth], ((up[1] - down[1]) / (2 * h))[smooth], rtol=1e-6, atol=1e-9
        )
        nonzero = r != 0
        np.testing.assert_allclose(pieces[3][nonzero], pieces[1][nonzero] / r[nonzero], rtol=1e-14)


def test_huber_is_robust_to_an_outlier_where_least_squares_is_not():
    inputs, truth, _ = CASES["compute"]
    target = FORMS["compute"].predict(truth, inputs)
    target[-1] *= 1.3  # one broken run
    robust = fit_law("compute", inputs, target)
    plain = fit_law("compute", inputs, target, objective=least_squares())
    assert robust.objective.name == "huber_log" and plain.objective.name == "least_squares"
    assert robust.params["alpha"] == pytest.approx(truth["alpha"], rel=0.02)
    assert abs(plain.params["alpha"] - truth["alpha"]) > 10 * abs(
        robust.params["alpha"] - truth["alpha"]
    )


def test_log_ols_is_the_straight_line_in_log_space():
    x = np.linspace(2.2, 4.0, 25)
    e_x, e_y = 1.6, 0.7
    rng = np.random.default_rng(1)
    y = 0.62 * (x - e_x) ** 1.09 * np.exp(rng.normal(0, 1e-3, x.size)) + e_y
    law = fit_law("loss_to_loss", {"L": x}, y, objective="log_ols", fixed={"E_x": e_x, "E_y": e_y})
    slope, intercept = np.polyfit(np.log(x - e_x), np.log(y - e_y), 1)
    assert law.params["kappa"] == pytest.approx(slope, rel=1e-10)
    assert law.params["K"] == pytest.approx(np.exp(intercept), rel=1e-10)
    assert law.params["E_x"] == e_x and law.params["E_y"] == e_y
    assert law.fixed == ("E_x", "E_y")
    resid = np.log(y - e_y) - intercept - slope * np.log(x - e_x)
    assert law.objective_value == pytest.approx(np.mean(resid**2), rel=1e-8)


def test_fixed_parameters_are_pinned_exactly():
    inputs, truth, noise = CASES["loss_to_loss"]
    target = _noisy("loss_to_loss", inputs, truth, noise)
    law = fit_law("loss_to_loss", inputs, target, fixed={"E_x": 1.6, "E_y": 0.7})
    assert law.params["E_x"] == 1.6 and law.params["E_y"] == 0.7
    assert law.fixed == ("E_x", "E_y")
    assert "E_x" not in law.stderr
    assert law.params["kappa"] == pytest.approx(truth["kappa"], rel=0.02)
    chin_inputs, chin_truth, chin_noise = CASES["chinchilla"]
    chin_target = _noisy("chinchilla", chin_inputs, chin_truth, chin_noise)
    pinned = fit_law("chinchilla", chin_inputs, chin_target, fixed={"alpha": 0.34, "E": 1.69})
    assert pinned.params["alpha"] == 0.34 and pinned.params["E"] == 1.69
    assert pinned.params["beta"] == pytest.approx(chin_truth["beta"], rel=0.05)


def test_every_parameter_fixed_scores_the_law_on_the_data():
    """Nothing to fit: the law at the given values, with its objective on these data (it used
    to fail inside the start selection with numpy's 'zero-size array' error)."""
    inputs, truth, noise = CASES["chinchilla"]
    target = _noisy("chinchilla", inputs, truth, noise)
    law = fit_law("chinchilla", inputs, target, fixed=truth)
    assert law.params == truth and law.converged and law.fixed == FORMS["chinchilla"].params
    problem = make_problem("chinchilla", inputs, target)
    at_truth = float(problem.objective_value(FORMS["chinchilla"].to_theta(truth)))
    assert law.objective_value == pytest.approx(at_truth, rel=1e-12)
    assert law.stderr == {} and law.warnings == ()
    assert fit_laws("chinchilla", [inputs], [target], fixed=truth)[0].params == truth


def test_start_polishes_from_the_given_point_only():
    inputs, truth, noise = CASES["chinchilla"]
    target = _noisy("chinchilla", inputs, truth, noise)
    law = fit_law("chinchilla", inputs, target, start=truth)
    assert law.start == pytest.approx(truth)
    assert law.params["alpha"] == pytest.approx(truth["alpha"], rel=0.1)


def test_bound_and_identifiability_warnings():
    inputs, truth, noise = CASES["compute"]
    target = _noisy("compute", inputs, truth, noise)
    with pytest.warns(FitWarning, match="alpha sits at its upper bound"):
        law = fit_law("compute", inputs, target, bounds={"alpha": (0.0, 0.05)})
    assert any("upper bound" in w for w in law.warnings)
    # E and A are interchangeable when alpha = 0: not identifiable
    with pytest.warns(FitWarning, match="not identifiable"):
        fit_law("compute", inputs, target, fixed={"alpha": 0.0})


def test_a_collapsed_term_is_not_identifiable_even_beside_other_collapsed_terms():
    """Loss rising with N: the best Chinchilla law is a constant, both power terms shrink to
    ~1e-9 of the loss. Each such direction is flat in absolute terms (a unit change of log B
    moves no prediction by 1e-8), not only relative to the largest column of the Jacobian; and
    A, driven towards 0 (the bound log space cannot reach), is reported as effectively 0."""
    inputs = CASES["chinchilla"][0]
    rising = 2.0 + 1e-3 * inputs["N"] ** 0.2
    with pytest.warns(FitWarning) as caught:
        law = fit_law("chinchilla", inputs, rising)
    assert [str(w.message) for w in caught] == [f"chinchilla fit: {w}" for w in law.warnings]
    note = next(w for w in law.warnings if "not identifiable" in w)
    flat = note.split("parameter(s) ")[1].split(" not")[0].split(", ")
    assert "A" in flat and "B" in flat
    assert any(w.startswith("A=") and "effectively 0" in w for w in law.warnings)


def test_no_warnings_on_a_clean_fit():
    inputs, truth, noise = CASES["overtrain"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        law = fit_law("overtrain", inputs, _noisy("overtrain", inputs, truth, noise))
    assert law.warnings == ()
    assert all(np.isfinite(v) and v > 0 for v in law.stderr.values())


def test_fit_laws_is_fit_law_for_each_problem():
    """Many fits at once: each Law is bit-for-bit the one ``fit_law`` gives alone, whatever the
    batch around it (different sizes, noise levels and a problem whose E sits at its bound)."""
    inputs, truth, _ = CASES["kaplan"]
    problems = [
        (inputs, _noisy("kaplan", inputs, truth, noise, seed))
        for seed, noise in enumerate([1e-3, 3e-3, 1e-2, 1e-4])
    ]
    problems.append(({k: v[:30] for k, v in inputs.items()}, problems[0][1][:30]))
    floorless = dict(truth, E=0.0)  # optimum on the bound E = 0
    problems.append((inputs, FORMS["kaplan"].predict(floorless, inputs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        together = fit_laws("kaplan", [p[0] for p in problems], [p[1] for p in problems])
        alone = [fit_law("kaplan", x, y) for x, y in problems]
        reversed_batch = fit_laws(
            "kaplan", [p[0] for p in problems][::-1], [p[1] for p in problems][::-1]
        )
    for batch in (together, reversed_batch[::-1]):
        for a, b in zip(batch, alone, strict=True):
            assert a.params == b.params
            assert a.objective_value == b.objective_value
            assert a.n_iterations == b.n_iterations and a.converged == b.converged
            assert a.warnings == b.warnings and a.stderr == b.stderr
            np.testing.assert_array_equal(a.residuals, b.residuals)
    assert together[0].n_points == 49 and together[4].n_points == 30


def test_fit_laws_with_fixed_parameters_start_and_metadata():
    inputs, truth, noise = CASES["loss_to_loss"]
    targets = [_noisy("loss_to_loss", inputs, truth, noise, seed) for seed in range(3)]
    fixed = {"E_x": 1.6}
    laws = fit_laws(
        "loss_to_loss", [inputs] * 3, targets, fixed=fixed, metadata=[{"i": i} for i in range(3)]
    )
    for i, (law, y) in enumerate(zip(laws, targets, strict=True)):
        alone = fit_law("loss_to_loss", inputs, y, fixed=fixed)
        assert law.params == alone.params and law.params["E_x"] == 1.6
        # the caller's metadata, and the range of each input the law was fitted on (what
        # `python -m analysis predict` measures an extrapolation against)
        assert law.metadata == {"i": i, "input_ranges": {
            k: [float(min(v)), float(max(v))] for k, v in inputs.items()}}
    warm = fit_laws("loss_to_loss", [inputs] * 3, targets, start=truth)
    for law, y in zip(warm, targets, strict=True):
        assert law.params == fit_law("loss_to_loss", inputs, y, start=truth).params


def test_fit_laws_log_ols_matches_fit_law():
    x = np.linspace(2.2, 4.0, 25)
    rng = np.random.default_rng(3)
    targets = [0.62 * (x - 1.6) ** 1.09 * np.exp(rng.normal(0, 1e-3, x.size)) + 0.7 for _ in "ab"]
    kwargs = dict(objective="log_ols", fixed={"E_x": 1.6, "E_y": 0.7})
    laws = fit_laws("loss_to_loss", [{"L": x}] * 2, targets, **kwargs)
    for law, y in zip(laws, targets, strict=True):
        assert law.params == fit_law("loss_to_loss", {"L": x}, y, **kwargs).params


def test_fit_laws_names_the_bad_fit():
    inputs, truth, noise = CASES["compute"]
    good = _noisy("compute", inputs, truth, noise)
    bad = np.where(np.arange(good.size) == 2, np.nan, good)
    with pytest.raises(ValueError, match=r"fit 1: target has 1 NaN"):
        fit_laws("compute", [inputs, inputs], [good, bad])
    with pytest.raises(ValueError, match="2 inputs but 1 targets"):
        fit_laws("compute", [inputs, inputs], [good])
    with pytest.raises(ValueError, match="1 metadata dicts for 2 fits"):
        fit_laws("compute", [inputs, inputs], [good, good], metadata=[{}])
    assert fit_laws("compute", [], []) == []


def test_lbfgs_takes_over_when_levenberg_marquardt_cannot_certify(monkeypatch):
    """An iteration cap leaves Levenberg-Marquardt short of a certified optimum: L-BFGS-B with
    tight tolerances finishes each such fit of a stack, to the same optimum."""
    import analysis.fit as fit_module

    inputs, truth, _ = CASES["chinchilla"]
    targets = [
        _noisy("chinchilla", inputs, truth, noise, seed) for seed, noise in enumerate([1e-3, 3e-3])
    ]
    reference = fit_laws("chinchilla", [inputs] * 2, targets)
    capped = fit_module.levenberg_marquardt

    def two_iterations(*args, **kwargs):
        return capped(*args, **{**kwargs, "max_iter": 2})

    monkeypatch.setattr(fit_module, "levenberg_marquardt", two_iterations)
    laws = fit_laws("chinchilla", [inputs] * 2, targets)
    for law, ref, y in zip(laws, reference, targets, strict=True):
        assert "Levenberg-Marquardt" not in law.message  # L-BFGS-B's own message
        assert law.converged
        assert law.objective_value == pytest.approx(ref.objective_value, rel=1e-7)
        assert law.params == fit_law("chinchilla", inputs, y).params  # the same in a stack of one


def test_a_fit_stopped_short_says_so(monkeypatch):
    """Both optimisers capped (Levenberg-Marquardt at 2 iterations, L-BFGS-B at 2): the Law is
    not marked converged, carries L-BFGS-B's message and warns."""
    from scipy.optimize import minimize

    import analysis.fit as fit_module
    import analysis.solvers as solvers

    inputs, truth, noise = CASES["chinchilla"]
    target = _noisy("chinchilla", inputs, truth, noise)
    capped = fit_module.levenberg_marquardt
    monkeypatch.setattr(
        fit_module, "levenberg_marquardt", lambda *a, **k: capped(*a, **{**k, "max_iter": 2})
    )
    monkeypatch.setattr(
        solvers,
        "minimize",
        lambda *a, **k: minimize(*a, **{**k, "options": {**k["options"], "maxiter": 2}}),
    )
    with pytest.warns(FitWarning, match="optimiser did not converge: STOP: TOTAL NO. OF ITER"):
        law = fit_law("chinchilla", inputs, target)
    assert not law.converged and "ITERATIONS REACHED LIMIT" in law.message
    assert "NOT converged" in law.summary()


def test_an_exactly_determined_fit_says_so():
    """Three points for three parameters: the law passes through them all, with nothing left to
    measure its error; the fit says so (warning and law.warnings) instead of looking confident."""
    C = np.array([1e18, 1e19, 1e20])
    loss = 1.8 + 40 * C**-0.08
    with pytest.warns(FitWarning, match="exactly determined: 3 points for 3 free parameters"):
        law = fit_law("compute", {"C": C}, loss)
    assert any("exactly determined" in w for w in law.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one point more: nothing to say
        fit_law("compute", {"C": np.append(C, 1e21)}, np.append(loss, 1.8 + 40 * 1e21**-0.08))


def test_a_fit_whose_scale_overflows_is_refused_with_what_pins_it():
    """A downstream loss of a tiny study's 16 runs (measured, rounded to 4 digits): the
    Chinchilla fit runs off to alpha ~ 66 with log A ~ 800, where A overflows float64. fit_law
    says so instead of returning a law with A = inf, whose bootstrap then failed with a message
    about mismatched data (issue 18)."""
    N = [98624] * 6 + [148032] * 4 + [197440] * 3 + [246848] * 2 + [295552]
    D = [210944, 337920, 540672, 864256, 1382400, 2211840, 358400, 575488, 921600, 1474560,
         432128, 690176, 1103872, 552960, 882688, 737280]
    y = [4.591, 4.4048, 4.3934, 4.3642, 4.335, 4.2795, 4.3697, 4.2898, 4.2463, 4.2376, 4.3508,
         4.2779, 4.3012, 4.2424, 4.1923, 4.2773]
    inputs = {"N": np.array(N, float), "D": np.array(D, float)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        with pytest.raises(ValueError, match=r"chinchilla fit ran off: A overflowed float64"):
            fit_law("chinchilla", inputs, np.array(y))
        # bounded exponents pin it: the same points fit
        law = fit_law("chinchilla", inputs, np.array(y), bounds={"alpha": (0.0, 2.0)})
    assert np.all(np.isfinite(list(law.params.values())))
