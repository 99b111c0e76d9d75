"""Workflows: compute-optimal allocation, loss-to-loss settings, translation, the two-step chain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from analysis import FORMS, Law, bootstrap
from analysis.workflows import (
    TwoStepLaw,
    compute_optimal,
    fit_loss_to_loss,
    fit_two_step,
    pair_runs,
    test_to_test,
    train_to_test,
    train_to_train,
    translate_law,
)

CHIN = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)
KAPLAN = dict(A=3e8, B=5e9, E=1.5, alpha=0.35, beta=0.4)


def _law(form, params):
    return Law(form=form, params=params)


@pytest.mark.parametrize("form, params", [("chinchilla", CHIN), ("kaplan", KAPLAN)])
def test_compute_optimal_matches_a_numerical_minimum(form, params):
    law = _law(form, params)
    budgets = np.array([1e19, 1e21, 1e23])
    table = compute_optimal(law, budgets)
    assert list(table.columns) == ["C", "N", "D", "tokens_per_param", "loss"]
    np.testing.assert_allclose(6 * table["N"] * table["D"], budgets, rtol=1e-12)
    for c, n in zip(budgets, table["N"], strict=True):
        best = minimize_scalar(
            lambda log_n, c=c: float(law.predict(N=np.exp(log_n), D=c / (6 * np.exp(log_n)))),
            bounds=(np.log(1e3), np.log(1e15)),
            method="bounded",
            options={"xatol": 1e-10},
        )
        assert np.log(n) == pytest.approx(best.x, abs=1e-4)
    assert np.all(np.diff(table["loss"]) < 0)


def test_compute_optimal_chinchilla_exponent_and_overtrain():
    table = compute_optimal(_law("chinchilla", CHIN), [1e20, 1e22])
    # N_opt ~ C^(beta / (alpha + beta))
    slope = np.diff(np.log(table["N"])) / np.diff(np.log(table["C"]))
    assert slope[0] == pytest.approx(0.28 / 0.62, rel=1e-12)
    over = _law("overtrain", dict(E=1.51, a=141.0, b=190.0, eta=0.121))
    table = compute_optimal(over, [1e20, 1e22])
    m_star = (190.0 / 141.0) ** (1 / 0.242)
    np.testing.assert_allclose(table["tokens_per_param"], m_star, rtol=1e-12)
    best = minimize_scalar(
        lambda log_m: float(over.predict(C=1e20, M=np.exp(log_m))),
        bounds=(-5, 10),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert np.exp(best.x) == pytest.approx(m_star, rel=1e-4)
    with pytest.raises(ValueError, match="needs a law of N and D"):
        compute_optimal(_law("compute", dict(A=1.0, E=1.0, alpha=0.1)), 1e20)


def _runs(law_params, seed, noise=5e-4):
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 5), np.geomspace(4e8, 8e10, 5)))
    loss = FORMS["kaplan"].predict(law_params, {"N": n, "D": d})
    loss = loss * np.exp(np.random.default_rng(seed).normal(0, noise, loss.size))
    return pd.DataFrame({"N": n, "D": d, "loss": loss})


def test_loss_to_loss_settings_recover_kappa_and_k():
    e_x, e_y, kappa, k = KAPLAN["E"], 0.8, 1.09, 0.623
    x_runs = _runs(KAPLAN, 0, noise=0.0)
    y_runs = x_runs.assign(loss=k * (x_runs["loss"] - e_x) ** kappa + e_y)
    law = train_to_train(x_runs, y_runs, E_x=e_x, E_y=e_y)
    assert law.objective.name == "log_ols"
    assert law.params["kappa"] == pytest.approx(kappa, rel=1e-9)
    assert law.params["K"] == pytest.approx(k, rel=1e-9)
    assert law.metadata["setting"] == "train_to_train" and law.metadata["n_pairs"] == 25
    assert law.metadata["r_squared_log"] == pytest.approx(1.0, abs=1e-12)
    # E's taken from fitted laws, as the paper takes them from each corpus' Kaplan fit
    x_law = Law(form="kaplan", params={**KAPLAN})
    y_law = Law(form="kaplan", params={**KAPLAN, "E": e_y})
    assert train_to_train(x_runs, y_runs, E_x=x_law, E_y=y_law).params == law.params
    same = x_runs.assign(test=y_runs["loss"])
    assert (
        train_to_test(same, x="loss", y="test", E_x=e_x, E_y=e_y).metadata["setting"]
        == "train_to_test"
    )
    assert train_to_test(same, x="loss", y="test", E_x=e_x, E_y=e_y).params == law.params
    free = fit_loss_to_loss(x_runs["loss"], y_runs["loss"])  # all four parameters, Huber
    assert free.objective.name == "huber_log" and free.fixed == ()


def test_test_to_test_pairs_models_of_two_datasets():
    """The paper's third setting: the same test loss of models trained on two datasets, paired
    by size and budget (not two test losses of one model). The y table comes shuffled and
    without two of its runs: pairing, not row order, decides which points go together."""
    e_x, e_y, kappa, k = 1.2, 0.9, 1.3, 0.7
    x_runs = _runs(KAPLAN, 0, noise=0.0).assign(test=lambda f: f["loss"] + 0.3)
    y_runs = x_runs.assign(test=k * (x_runs["test"] - e_x) ** kappa + e_y)
    y_runs = y_runs.sample(frac=1.0, random_state=0).iloc[2:]
    law = test_to_test(x_runs, y_runs, x="test", E_x=e_x, E_y=e_y)
    assert law.params["kappa"] == pytest.approx(kappa, rel=1e-9)
    assert law.params["K"] == pytest.approx(k, rel=1e-9)
    assert law.metadata["setting"] == "test_to_test" and law.metadata["n_pairs"] == 23
    assert law.metadata["paired_on"] == ["N", "D"]
    with pytest.raises(ValueError, match="no column 'nope'"):
        test_to_test(x_runs, y_runs, x="nope")


def test_pairing_and_its_errors():
    left = pd.DataFrame({"N": [1, 2, 3], "D": [10, 20, 30], "loss": [3.0, 2.9, 2.8]})
    right = pd.DataFrame({"N": [2, 3, 4], "D": [20, 30, 40], "loss": [2.5, 2.4, 2.3]})
    pairs = pair_runs(left, right)
    assert list(pairs["N"]) == [2, 3] and list(pairs["loss_y"]) == [2.5, 2.4]
    with pytest.raises(ValueError, match="no runs of the two tables share"):
        pair_runs(left, right.assign(N=[7, 8, 9]))
    with pytest.raises(ValueError, match="pairing column"):
        pair_runs(left, right, on=("C",))
    with pytest.raises(ValueError, match="no column 'nope'"):
        train_to_test(left, x="loss", y="nope")


def test_translate_law_is_exact_for_kaplan():
    l2l = Law(form="loss_to_loss", params=dict(K=0.623, kappa=1.09, E_x=KAPLAN["E"], E_y=0.8))
    translated = translate_law(_law("kaplan", KAPLAN), l2l)
    n, d = np.geomspace(1e7, 1e11, 9), np.geomspace(1e9, 1e13, 9)
    source = FORMS["kaplan"].predict(KAPLAN, {"N": n, "D": d})
    expected = l2l.predict(L=source)
    np.testing.assert_allclose(translated.predict(N=n, D=d), expected, rtol=1e-12)
    assert translated.params["alpha"] == pytest.approx(1.09 * 0.35)
    assert translated.params["E"] == 0.8
    with pytest.warns(UserWarning, match="differs from the law's E"):
        translate_law(
            _law("kaplan", KAPLAN), Law(form="loss_to_loss", params={**l2l.params, "E_x": 1.0})
        )
    with pytest.raises(ValueError, match="kaplan law and a loss_to_loss law"):
        translate_law(_law("chinchilla", CHIN), l2l)


def test_two_step_chain_fits_predicts_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    step1_truth = dict(A=20.0, B=60.0, E=0.6, alpha=0.2, beta=0.25)
    step2_truth = dict(a=-0.7, b=0.95, k=4.0, L0=1.0)
    n, d = (
        a.ravel() for a in np.meshgrid(np.geomspace(1.9e8, 1.3e9, 4), np.geomspace(4e9, 1.3e11, 4))
    )
    task = FORMS["chinchilla"].predict(step1_truth, {"N": n, "D": d}) * np.exp(
        rng.normal(0, 1e-3, 16)
    )
    checkpoints = np.linspace(task.min() * 0.9, task.max() * 1.4, 60)
    accuracy = FORMS["sigmoid"].predict(step2_truth, {"L": checkpoints}) + rng.normal(0, 3e-3, 60)
    chain = fit_two_step({"N": n, "D": d}, task, checkpoints, accuracy)
    assert (
        chain.step1.objective.reduction == "sum" and chain.step2.objective.name == "least_squares"
    )
    target = {"N": 7e9, "D": 4e12}
    truth = FORMS["sigmoid"].predict(
        step2_truth,
        {
            "L": FORMS["chinchilla"].predict(
                step1_truth, {k: np.array([v]) for k, v in target.items()}
            )
        },
    )[0]
    assert float(chain.predict(**target)) == pytest.approx(truth, abs=0.02)
    boot = TwoStepLaw(
        bootstrap(chain.step1, {"N": n, "D": d}, task, n_resamples=20),
        bootstrap(chain.step2, {"L": checkpoints}, accuracy, n_resamples=20),
    )
    lower, upper = boot.predict_interval(0.9, **target)
    assert lower <= chain.predict(**target) <= upper
    assert np.ndim(lower) == 0 and isinstance(upper, float)  # one point, one number (as Law)
    boot.save_pretrained(tmp_path / "chain")
    back = TwoStepLaw.from_pretrained(tmp_path / "chain")
    assert back.step1.params == boot.step1.params and back.step2.params == boot.step2.params
    with pytest.raises(ValueError, match="neither step has bootstrap samples"):
        chain.predict_interval(0.9, **target)
    # as Law.predict_interval (numpy said only "Quantiles must be in the range [0, 1]")
    with pytest.raises(ValueError, match="level must be strictly between 0 and 1, got 90"):
        boot.predict_interval(90, **target)
