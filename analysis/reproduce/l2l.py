"""Brandfonbrener et al. 2024, "Loss-to-Loss Prediction: Scaling Laws for All Datasets": the
single-dataset scaling fits of the paper's notebooks and its three loss-to-loss settings, from the
released sweep (KempnerInstitute/loss-to-loss-notebooks ``data/sweep.csv``).

1. ``scaling_fits.csv``: for each of the 6 training corpora, each of the 23 loss columns of the
   notebooks' ``opt_params_data.csv`` and both forms, Kaplan L = ((A/N)^(alpha/beta) + B/D)^beta + E
   and Chinchilla L = E + A/N^alpha + B/D^beta, fitted on all the corpus' runs (N = ``params``,
   D = ``tokens``) with the notebooks' objective, the MEAN Huber loss (delta 1e-3) of log residuals,
   by ``analysis.fit_laws`` (all fits of a form at once, each identical to its ``fit_law``). Check: our objective against the notebooks' parameters evaluated with
   the same float64 objective (``scaling_fits_check.csv``). The file's own ``loss`` column was
   computed in float32 (the notebooks use JAX) and differs from the float64 objective of the same
   parameters by up to ~3e-6 relative, so it is shown but not used as the bar.
2. ``train_to_train.csv``: for the 30 ordered pairs of distinct corpora, models paired by equal
   ``tokens`` (equivalently equal N and C), x = ``val_loss`` of the data0 model, y = ``val_loss``
   of the data1 model; E_x, E_y = E of each corpus' Kaplan ``val_loss`` fit (step 1); kappa and K
   by ordinary least squares of log(y - E_y) on log(x - E_x): L_y = K (L_x - E_x)^kappa + E_y.
3. ``train_to_test.csv``: per corpus and each of the 11 downstream test losses (the 12 of
   ``opt_params_data.csv`` without BoolQ, as the sweep's own ``olmo_suite_ce_loss`` averages the
   OLMo tasks without BoolQ), x = ``val_loss``, y = the test loss of the same model; E_x from the
   Kaplan ``val_loss`` fit, E_y from the Kaplan fit of that test loss.
4. ``test_to_test.csv``: per ordered pair of corpora and test loss, x, y = that test loss of the
   paired data0 and data1 models; E's from the Kaplan fits of that test loss on each corpus.
   Columns data, data1, test, kappa, K, E_x, E_y, r_squared: ``data`` (the issue's column) is
   the corpus of the x models and ``data1`` that of the y models, since a test-to-test law
   relates two corpora (the paper's "test losses of two models trained on two separate train
   datasets"); ``data`` and ``data1`` play the roles of ``train_to_train.csv``'s data0 and data1.

5. ``predictions_1e21.csv``: what each of the 276 scaling fits predicts for the paper's largest run on
   its corpus, depth 40 (d = 2560) at C = 1e21 FLOPs, which the released sweep leaves out:
   N = 2 V d + n (12 d^2 + 4 d) + d with V = 32000 (the parameter count of ``sweep.csv``'s
   ``params`` column), D = C / (6 N) as its ``tokens`` are. Columns ``PREDICTION_COLUMNS``: data,
   loss_name, form, method, N, D, C, prediction, lower, upper (the 90% prediction interval),
   choice (the fitting procedure). Three methods (issue 12):

   - ``paper`` (276 rows, one per scaling fit, first and in ``scaling_fits.csv``'s order): the
     paper's prediction, unchanged; its interval is the fitted law's own prediction interval
     (``Law.predict_interval(kind="prediction")``: delta-method parameter uncertainty combined
     with the fit's residual scatter), which knows nothing of the error of extrapolating 20x
     beyond the largest budget.
   - ``calibrated`` (276 rows): the same form and fit (``analysis.predictors.law_predictor``)
     through ``analysis.calibrate.calibrated_prediction``: nested backtests on the corpus' own
     runs (fit on the budgets up to each of the 3rd to 7th, predict the runs above) estimate how
     the error grows with the distance of extrapolation; the point is corrected by the mean
     drift and the interval widened by its spread and growth, at the distance of 1e21 from the
     sweep's budgets (2e17 to 4.84e19).
   - ``selected`` (138 rows, one per corpus and loss column; ``form`` and ``choice`` name the
     procedure): ONE fitting choice for the whole study, among ``analysis.reproduce
     .l2l_methods.fitting_choices()`` (Kaplan, Chinchilla, the over-training form in (C, M), each on every
     budget or without the smallest), chosen by ``select_predictor`` on the nested backtests of
     each corpus' ``val_loss`` runs (the study's own loss: the choice is made on it, not per
     column), then calibrated as above for every loss column. The scores of every candidate are
     in ``selection.csv`` (columns choice, mean_abs_log_error, mean_log_error, n, chosen).

   Runs with a missing value of a loss column are left out of that column's calibrated fits.

6. ``--given GIVEN.csv`` (``python -m analysis.reproduce l2l --data DIR --out DIR --given
   GIVEN.csv``): GIVEN.csv has columns ``data,val_loss``, the measured ``val_loss`` of the
   depth-40 1e21-FLOP run on one or more corpora. ``given_predictions.csv`` (columns
   ``GIVEN_COLUMNS``: data, source, method, prediction, lower, upper) predicts the ``val_loss``
   of that run on every other corpus: for each given source, ``paper`` (the train-to-train law of
   ``train_to_train.csv``, fitted on the whole sweep, with its delta-method prediction interval)
   and ``calibrated`` (the same procedure, ``l2l_methods.train_to_train_predictor``,
   through nested backtests over the paired sweep runs, at the distance of 1e21 from the sweep's
   budgets); and one row per target corpus with ``source`` = ``all``, method ``multi_source``:
   the sources' calibrated predictions combined (weights 1 / spread^2, the variance under the
   correlation of their nested errors, ``analysis.predictors.combine_calibrated``). With a
   single given source the ``all`` row equals that source's calibrated row. Bad input (missing
   file, wrong columns, unknown corpus, NaN or non-positive ``val_loss``, a corpus given twice,
   every corpus given) stops the run with a one-line error before any fit.

7. ``decisions_1e21.csv`` (columns ``metric, data_a, data_b, method, p_a_better``): for every
   ``eval/`` loss column of the sweep (34: the eight shared validation sets' cross-entropies,
   the downstream tasks' test losses and context losses; comparable across training corpora,
   unlike ``val_loss``) and each of the 15 pairs of corpora, P(the depth-40 model at 1e21 FLOPs
   has the lower loss trained on data_a than trained on data_b), by ``single_scale`` (the
   depth-matched runs at the largest budget: p 0 or 1), each calibrated method of
   ``analysis.decide_methods`` and ``selected`` (``analysis.reproduce.l2l_decisions``).
   ``decisions_1e21_details.csv`` adds the predicted losses, the predicted gap y_a / y_b - 1
   with its 90% interval and the expected regret of choosing the favourite;
   ``decisions_selection.csv`` the nested-backtest scores that chose the method;
   ``decisions_1e21.png`` the selected method's gaps on the validation sets.

8. ``--max-flops C`` (``python -m analysis.reproduce l2l --data DIR --out DIR --max-flops C``):
   every fit of the reproduction (the scaling fits, their predictions, the loss-to-loss laws,
   ``--given`` and the decisions) on the runs of at most C FLOPs only, so that any output can be
   backtested from a smaller grid; the notebooks' parameters, fitted on every run, are then not
   compared (``scaling_fits_check.csv`` lacks their columns). At least 5 budgets must remain.
   Without it every output is as before, byte for byte.

``r_squared`` of the scaling fits is on the loss scale (as the notebooks'); of the loss-to-loss
fits it is the R^2 of the log-log regression. A point with x <= E_x or y <= E_y has no logarithm;
such points are left out and counted (``n_excluded`` in ``loss_to_loss_check.csv``). It happens only
for SciQ, whose Kaplan fits put E above some of the corpus' own SciQ losses (22 of ~10,000 points).

Reference: the paper's appendix tables of kappa and K (FineWeb -> StarCoder: kappa 1.09041,
K 0.62303); with the notebooks' own E's our OLS gives those numbers exactly (printed as
"with notebook E's"); with our refitted E's they agree to the digits printed below.
``figure1.png`` shows the paper's three settings (train-to-train, train-to-test, test-to-test)
with FineWeb (``fineweb-100b``) models on the x axis.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.decide import gap_figure
from analysis.reproduce.l2l_decisions import (
    DECISION_DETAIL_COLUMNS,
    DECISION_SELECTION_COLUMNS,
    DECISIONS_COLUMNS,
    MIN_BUDGETS,
    decision_metrics,
    decisions_at_1e21,
    summary_lines,
)
from analysis.reproduce.l2l_methods import (
    GIVEN_COLUMNS,
    SELECTION_COLUMNS,
    calibrated_predictions,
    given_predictions,
    read_given,
)
from analysis.reproduce.l2l_paper import (
    LARGEST_C,
    LARGEST_DEPTH,
    LEVEL,
    LOSS_NAMES,
    PREDICTION_COLUMNS,
    REFERENCE,
    SCALING_COLUMNS,
    TEST_LOSSES,
    TEST_TO_TEST_COLUMNS,
    TRAIN_TO_TEST_COLUMNS,
    TRAIN_TO_TRAIN_COLUMNS,
    VAL_LOSS,
    all_pairs,
    figure1,
    kaplan_E,
    largest_run_predictions,
    loss_to_loss,
    scaling_fits,
    test_to_test,
    train_to_test,
    train_to_train,
)
from analysis.reproduce.report import (
    Reproduction,
    fmt,
    frame_lines,
    save_figure,
    side_by_side,
    write_csv,
)
from analysis.sizes import paper_param_count
from analysis.testbeds import load_l2l, wide
from analysis.testbeds.l2l import read_opt_params


def restrict_budget(tidy: pd.DataFrame, max_flops: float) -> pd.DataFrame:
    """The sweep's runs of at most ``max_flops`` FLOPs; ValueError (one line) if that leaves
    fewer than the decisions' MIN_BUDGETS budgets."""
    if not (np.isfinite(max_flops) and max_flops > 0):
        raise ValueError(f"--max-flops must be a positive number of FLOPs, got {max_flops}")
    budgets = np.sort(tidy["C"].unique())
    kept = tidy[tidy["C"] <= max_flops]
    n = kept["C"].nunique()
    if n < MIN_BUDGETS:
        raise ValueError(f"--max-flops {max_flops:.3g} keeps {n} of the sweep's budgets; the "
                         f"calibrated fits and decisions need at least {MIN_BUDGETS} (--max-flops "
                         f"{budgets[MIN_BUDGETS - 1]:.3g} or more)")  # fmt: skip
    return kept


def reproduce(
    data: str | os.PathLike | None, out: Path, given: str | os.PathLike | pd.DataFrame | None = None,
    max_flops: float | None = None,
) -> Reproduction:
    """The reproduction; with ``given`` (GIVEN.csv or its frame, checked first, before any fit)
    also ``given_predictions.csv``; with ``max_flops`` every fit on the runs of at most that
    many FLOPs only (checked before any fit: the decisions need MIN_BUDGETS budgets)."""
    given = None if given is None else read_given(given)
    out = Path(out)
    result = Reproduction("l2l")
    tidy = load_l2l(data)
    notebook_comparable = True
    if max_flops is not None:
        tidy = restrict_budget(tidy, max_flops)
        notebook_comparable = False  # the notebooks fitted every run: not the same fits
    sweep = wide(tidy, sorted(set(LOSS_NAMES)))
    try:
        notebook = read_opt_params(data) if notebook_comparable else None
    except FileNotFoundError:
        notebook = None
    fits, laws = scaling_fits(sweep, notebook)
    result.tables["scaling_fits.csv"] = write_csv(fits, out, "scaling_fits.csv", SCALING_COLUMNS)
    check_columns = [c for c in fits.columns if c not in ("A", "B", "alpha", "beta")]
    result.tables["scaling_fits_check.csv"] = write_csv(
        fits, out, "scaling_fits_check.csv", check_columns
    )

    calibrated, selection = calibrated_predictions(sweep)
    largest = pd.concat([largest_run_predictions(fits, laws), calibrated], ignore_index=True)
    result.tables["predictions_1e21.csv"] = write_csv(
        largest, out, "predictions_1e21.csv", PREDICTION_COLUMNS
    )
    result.tables["selection.csv"] = write_csv(selection, out, "selection.csv", SELECTION_COLUMNS)

    E_val = kaplan_E(fits, VAL_LOSS)
    E_test = {test: kaplan_E(fits, test) for test in TEST_LOSSES}
    pairs_of = all_pairs(sweep)
    t2t = train_to_train(pairs_of, E_val)
    tr2te = train_to_test(sweep, E_val, E_test)
    te2te = test_to_test(pairs_of, E_test)
    for name, frame, columns in (
        ("train_to_train.csv", t2t, TRAIN_TO_TRAIN_COLUMNS),
        ("train_to_test.csv", tr2te, TRAIN_TO_TEST_COLUMNS),
        ("test_to_test.csv", te2te, TEST_TO_TEST_COLUMNS),
    ):
        result.tables[name] = write_csv(frame, out, name, columns)
    check = pd.concat(
        [t2t.assign(setting="train_to_train"), tr2te.assign(setting="train_to_test"),
         te2te.assign(setting="test_to_test")], ignore_index=True,
    )  # fmt: skip
    check_columns = ["setting", "data", "data0", "data1", "test", "n_points", "n_excluded"]
    result.tables["loss_to_loss_check.csv"] = write_csv(
        check, out, "loss_to_loss_check.csv", check_columns
    )
    excluded = int(check["n_excluded"].sum())
    result.figures.append(
        save_figure(figure1(sweep, pairs_of, t2t, tr2te, te2te), out, "figure1.png")
    )

    result.say("Brandfonbrener et al. 2024 (loss-to-loss): 6 corpora x 23 losses x 2 forms, "
               "mean Huber(1e-3) on log residuals; loss-to-loss by OLS in log space")  # fmt: skip
    if "objective_notebook_params" in fits:
        ratio = fits["objective"] / fits["objective_notebook_params"] - 1
        result.say(
            f"scaling fits: objective at or below the notebooks' parameters (same float64 "
            f"objective) in {int((ratio <= 1e-9).sum())} of {len(fits)} fits; median relative "
            f"difference {np.median(ratio):+.2e}, worst {ratio.max():+.2e}, best {ratio.min():+.2e}"
        )
    for (data0, data1), paper in REFERENCE.items():
        ours = t2t[(t2t["data0"] == data0) & (t2t["data1"] == data1)].iloc[0]
        rows = [(f"kappa ({data0} -> {data1})", ours["kappa"], paper["kappa"]),
                (f"K ({data0} -> {data1})", ours["K"], paper["K"])]  # fmt: skip
        if notebook is not None:
            E_nb = notebook[(notebook["loss_name"] == VAL_LOSS) & notebook["kaplan"]]
            E_nb = dict(zip(E_nb["data"], E_nb["E"], strict=True))
            pairs = pairs_of[data0, data1]
            nb = loss_to_loss(pairs[f"{VAL_LOSS}_x"], pairs[f"{VAL_LOSS}_y"], E_nb[data0],
                              E_nb[data1])  # fmt: skip
            rows += [("kappa, with notebook E's", nb["kappa"], paper["kappa"]),
                     ("K, with notebook E's", nb["K"], paper["K"])]  # fmt: skip
        result.say("reference: the paper's appendix table of train-to-train kappa and K")
        result.say(*side_by_side(rows))
    table = t2t.pivot(index="data0", columns="data1", values="kappa")
    result.say("train-to-train kappa (rows: x corpus, columns: y corpus):", *frame_lines(
        table.reset_index(), digits=4))  # fmt: skip
    result.say(
        f"train-to-test: kappa {fmt(tr2te['kappa'].min())} to {fmt(tr2te['kappa'].max())}, "
        f"median R^2 {tr2te['r_squared'].median():.4f}; test-to-test: kappa "
        f"{fmt(te2te['kappa'].min())} to {fmt(te2te['kappa'].max())}, median R^2 "
        f"{te2te['r_squared'].median():.4f}; points without a logarithm (x <= E_x or y <= E_y) "
        f"left out: {excluded}"
    )
    own = largest[largest["loss_name"] == VAL_LOSS]
    chosen = selection.loc[selection["chosen"], "choice"].iloc[0]
    result.say(
        f"fitting choice for the study (nested backtests of each corpus' val_loss runs, "
        f"mean |log error| {selection.loc[selection['chosen'], 'mean_abs_log_error'].iloc[0]:.4f}): "
        f"{chosen}"
    )
    label = [m if m == "selected" else f"{m} {f}" for m, f in zip(own["method"], own["form"],
                                                                  strict=True)]  # fmt: skip
    table = own.assign(method=label).assign(
        interval=lambda f: [f"{p:.4f} [{lo:.4f}, {hi:.4f}]" for p, lo, hi in
                            zip(f["prediction"], f["lower"], f["upper"], strict=True)],
    ).pivot(index="data", columns="method", values="interval")  # fmt: skip
    result.say(f"predicted val_loss of the depth-{LARGEST_DEPTH} run at C = {LARGEST_C:.0e} "
               f"(N = {paper_param_count(LARGEST_DEPTH):.4g}; not in the released sweep), "
               f"{LEVEL:.0%} prediction intervals:", *frame_lines(table.reset_index()))  # fmt: skip
    metrics = decision_metrics(tidy)
    decisions = decisions_at_1e21(wide(tidy, metrics), metrics)
    decided = decisions.table
    result.tables["decisions_1e21.csv"] = write_csv(decided, out, "decisions_1e21.csv",
                                                    DECISIONS_COLUMNS)  # fmt: skip
    result.tables["decisions_1e21_details.csv"] = write_csv(
        decided, out, "decisions_1e21_details.csv", DECISION_DETAIL_COLUMNS)  # fmt: skip
    result.tables["decisions_selection.csv"] = write_csv(
        decisions.selection, out, "decisions_selection.csv", DECISION_SELECTION_COLUMNS)  # fmt: skip
    validation = [m for m in metrics if m.endswith("_val/CrossEntropyLoss")]
    result.figures.append(save_figure(gap_figure(
        decided, validation, "selected", f"predicted gaps at C = {LARGEST_C:.0e}, depth 40 "
        f"(selected method: {decisions.chosen}), {LEVEL:.0%} intervals"), out, "decisions_1e21.png"))  # fmt: skip
    result.say(*summary_lines(decisions, metrics))
    if given is not None:
        predicted = given_predictions(sweep, given, E_val)
        result.tables["given_predictions.csv"] = write_csv(
            predicted, out, "given_predictions.csv", GIVEN_COLUMNS
        )
        combined = predicted[predicted["method"] == "multi_source"]
        result.say(
            f"val_loss at C = {LARGEST_C:.0e} from the given run(s) on "
            f"{', '.join(given['data'])} (train-to-train; all: the calibrated sources combined):",
            *(f"  {r.data}: {r.prediction:.4f} [{r.lower:.4f}, {r.upper:.4f}]"
              for r in combined.itertuples()),
        )  # fmt: skip
    return result
