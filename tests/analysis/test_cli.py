"""python -m analysis fit / predict on a small CSV written by the test; plots are PNGs."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import FORMS, FitWarning, Law, fit_law, load_law
from analysis.__main__ import main
from analysis.plots import plot_law

ROOT = Path(__file__).resolve().parents[2]
TRUTH = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runs_csv(tmp_path):
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 6), np.geomspace(4e8, 8e10, 6)))
    loss = FORMS["chinchilla"].predict(TRUTH, {"N": n, "D": d})
    loss = loss * np.exp(np.random.default_rng(0).normal(0, 1e-3, loss.size))
    frame = pd.DataFrame({"run": np.arange(36) // 2, "params": n, "tokens": d, "loss": loss})
    frame["corpus"] = "mine"
    path = tmp_path / "runs.csv"
    pd.concat([frame, frame.assign(corpus="other", loss=frame["loss"] + 1)]).to_csv(
        path, index=False
    )
    return path


def test_cli_fit_then_predict(runs_csv, tmp_path, capsys):
    out, png = tmp_path / "law", tmp_path / "fit.png"
    code = main(
        [
            "fit",
            str(runs_csv),
            "--form",
            "chinchilla",
            "--target",
            "loss",
            "--input",
            "N=params",
            "--input",
            "D=tokens",
            "--where",
            "corpus=mine",
            "--bootstrap",
            "20",
            "--group",
            "run",
            "--out",
            str(out),
            "--plot",
            str(png),
            "--extrapolate-to",
            "1e22",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "objective huber_log (delta 0.001, mean)" in printed and "90% interval" in printed
    law = load_law(out)
    assert law.n_points == 36 and law.samples.shape == (20, 5)
    assert law.bootstrap_info["grouped"] and law.bootstrap_info["n_groups"] == 18
    assert law.metadata["where"] == ["corpus=mine"]
    assert law.params["alpha"] == pytest.approx(0.34, rel=0.1)
    assert png.read_bytes().startswith(PNG)

    planned = tmp_path / "planned.csv"
    pd.DataFrame({"params": [7e10, 1e9], "tokens": [1.4e12, 2e10]}).to_csv(planned, index=False)
    predictions = tmp_path / "pred.csv"
    assert (
        main(
            [
                "predict",
                str(out),
                "--csv",
                str(planned),
                "--input",
                "N=params",
                "--input",
                "D=tokens",
                "--out",
                str(predictions),
            ]
        )
        == 0
    )
    table = pd.read_csv(predictions)
    assert list(table.columns) == ["N", "D", "prediction", "lower", "upper"]
    np.testing.assert_allclose(table["prediction"], law.predict(N=table["N"], D=table["D"]))
    assert np.all(table["lower"] < table["prediction"]) and np.all(
        table["prediction"] < table["upper"]
    )

    capsys.readouterr()
    assert main(["predict", str(out), "--at", "N=7e10,D=1.4e12"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "N,D,prediction,lower,upper" and len(lines) == 2
    # where a new run lands: the law's interval widened by the runs' scatter
    assert main(["predict", str(out), "--at", "N=7e10,D=1.4e12", "--interval", "prediction"]) == 0
    run_lines = capsys.readouterr().out.strip().splitlines()
    law_ends = [float(v) for v in lines[1].split(",")[3:]]
    run_ends = [float(v) for v in run_lines[1].split(",")[3:]]
    assert run_ends[0] < law_ends[0] and law_ends[1] < run_ends[1]


def test_cli_objective_fixed_and_bounds(runs_csv, tmp_path, capsys):
    out = tmp_path / "law"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)  # printed once in the summary, not warned
        assert (
            main(
                [
                    "fit",
                    str(runs_csv),
                    "--form",
                    "chinchilla",
                    "--target",
                    "loss",
                    "--input",
                    "N=params",
                    "--input",
                    "D=tokens",
                    "--where",
                    "corpus=mine",
                    "--reduction",
                    "sum",
                    "--fix",
                    "E=1.69",
                    "--bound",
                    "alpha=0:0.3",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    assert "  warning: alpha sits at its upper bound 0.3" in capsys.readouterr().out
    law = load_law(out)
    assert law.objective.reduction == "sum" and law.params["E"] == 1.69 and law.fixed == ("E",)
    assert law.params["alpha"] <= 0.3 and any("upper bound" in w for w in law.warnings)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--target", "loss", "--input", "N=nope", "--input", "D=tokens"],
            "no column 'nope' for input 'N'",
        ),
        (
            ["--target", "nope", "--input", "N=params", "--input", "D=tokens"],
            "no target column 'nope'",
        ),
        (["--target", "loss", "--input", "X=params"], "not inputs of this law"),
        (
            ["--target", "loss", "--input", "N=params", "--input", "D=tokens", "--fix", "E"],
            "NAME=VALUE",
        ),
        (
            [
                "--target",
                "loss",
                "--input",
                "N=params",
                "--input",
                "D=tokens",
                "--where",
                "corpus=none",
            ],
            "no rows of",
        ),
    ],
)
def test_cli_errors_name_the_problem(runs_csv, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(runs_csv), "--form", "chinchilla", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_runs_as_a_module(runs_csv, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis",
            "fit",
            str(runs_csv),
            "--form",
            "chinchilla",
            "--target",
            "loss",
            "--input",
            "N=params",
            "--input",
            "D=tokens",
            "--where",
            "corpus=mine",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "chinchilla: L = E + A / N^alpha + B / D^beta" in result.stdout


@pytest.mark.parametrize(
    "form, inputs, params",
    [
        ("compute", {"C": np.geomspace(1e17, 1e21, 12)}, dict(A=60.0, E=1.7, alpha=0.09)),
        (
            "overtrain",
            {"C": np.repeat(np.geomspace(1e17, 1e20, 4), 3), "M": np.tile([10.0, 40.0, 160.0], 4)},
            dict(E=1.51, a=141.0, b=190.0, eta=0.121),
        ),
        ("sigmoid", {"L": np.linspace(0.5, 2.5, 20)}, dict(a=-0.7, b=0.95, k=3.0, L0=1.3)),
    ],
)
def test_plot_law_writes_png(tmp_path, form, inputs, params):
    target = FORMS[form].predict(params, inputs)
    law = fit_law(form, inputs, target * (1 + 1e-3 * np.sin(np.arange(target.size))))
    path = tmp_path / f"{form}.png"
    figure = plot_law(
        law, inputs, target, path, extrapolate_to=np.max(list(inputs.values())[0]) * 10
    )
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 10_000
    assert len(figure.axes[0].lines) >= 2  # fit and extrapolation


def test_plot_without_interval_still_draws(tmp_path):
    law = Law(form="chinchilla", params=TRUTH)  # e.g. a translated law: no samples, no covariance
    n, d = np.geomspace(1e8, 1e9, 4), np.geomspace(1e9, 1e10, 4)
    plot_law(law, {"N": n, "D": d}, law.predict(N=n, D=d), tmp_path / "plain.png")
    assert (tmp_path / "plain.png").read_bytes().startswith(PNG)


def test_cli_fits_evaluations_tidy_results(tmp_path, capsys):
    """python -m evaluation writes tidy (run, dataset, N, D, C, metric, value) rows; fit reads them
    pivoted to one column per metric, the extra columns of each row ignored."""
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 4), np.geomspace(4e8, 8e10, 4)))
    loss = FORMS["chinchilla"].predict(TRUTH, {"N": n, "D": d})
    rows = []
    for i, (n_i, d_i, loss_i) in enumerate(zip(n, d, loss, strict=True)):
        coords = dict(run=f"run{i}", dataset="mine", N=n_i, D=d_i, C=6 * n_i * d_i)
        rows.append({**coords, "metric": "val_loss", "value": loss_i, "n": 1024})
        rows.append({**coords, "metric": "eval/c4_val/CrossEntropyLoss", "value": loss_i + 0.5})
    path, out = tmp_path / "results.jsonl", tmp_path / "law"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)

    assert (
        main(["fit", str(path), "--form", "chinchilla", "--target", "val_loss", "--out", str(out)])
        == 0
    )
    law = load_law(out)
    assert law.n_points == 16
    for name, value in TRUTH.items():
        assert law.params[name] == pytest.approx(value, rel=1e-3)

    # The same row twice (a table appended to twice) is one row; two values of one (run, metric)
    # are an error naming both.
    pd.DataFrame(rows + rows[:1]).to_json(path, orient="records", lines=True)
    assert main(["fit", str(path), "--form", "chinchilla", "--target", "val_loss"]) == 0
    assert "on 16 points" in capsys.readouterr().out
    clash = {**rows[0], "value": rows[0]["value"] + 0.1}
    pd.DataFrame(rows + [clash]).to_json(path, orient="records", lines=True)
    with pytest.raises(SystemExit):
        main(["fit", str(path), "--form", "chinchilla", "--target", "val_loss"])
    err = capsys.readouterr().err
    assert "(run, metric) rows appear twice with different values" in err
    named = re.search(r"run 'run0', metric 'val_loss': ([0-9.]+) and ([0-9.]+);", err)
    assert named, err
    assert [float(v) for v in named.groups()] == pytest.approx([rows[0]["value"], clash["value"]])


def _fit_args(path, *extra):
    return ["fit", str(path), "--form", "chinchilla", "--target", "loss",
            "--input", "N=params", "--input", "D=tokens", *extra]  # fmt: skip


def test_cli_table_errors_name_the_column_and_rows(tmp_path, capsys):
    """Text in a numeric column, a missing value, an unreadable file: the error names the file,
    the column, its role and the rows (before: "input 'D' has 1 NaN or infinite value(s) at
    [1]", after a silent coercion of the text to NaN; pandas' parse errors named no file)."""
    text = tmp_path / "text.csv"
    text.write_text("params,tokens,loss\n1e8,1e9,3.0\n2e8,x,2.9\n")
    with pytest.raises(SystemExit):
        main(_fit_args(text))
    assert (
        "column 'tokens' (input D) has 1 value(s) that are not numbers, e.g. 'x' (data row 2)"
        in (capsys.readouterr().err)
    )
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SystemExit):
        main(_fit_args(empty))
    assert f"could not read {empty} as a CSV table" in capsys.readouterr().err


def test_cli_missing_values_are_an_error_or_left_out_with_dropna(runs_csv, tmp_path, capsys):
    frame = pd.read_csv(runs_csv)
    frame["run"] = [f"r{i}" for i in range(len(frame))]
    frame.loc[[3, 5], "loss"] = np.nan  # two unfinished runs
    path = tmp_path / "gaps.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(SystemExit):
        main(_fit_args(path, "--where", "corpus=mine"))
    assert "column 'loss' (target) has 2 missing or infinite value(s) (runs r3, r5); pass " \
        "--dropna" in capsys.readouterr().err  # fmt: skip
    out = tmp_path / "law"
    assert main(_fit_args(path, "--where", "corpus=mine", "--dropna", "--out", str(out))) == 0
    assert "left out 2 row(s) with a missing value" in capsys.readouterr().out
    assert load_law(out).n_points == 34


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bound", "alpha=a:b"], "--bound alpha=a:b: LOW and HIGH must be numbers"),
        (["--level", "1.5"], "argument --level: must be strictly between 0 and 1"),
        (["--bootstrap", "-3"], "argument --bootstrap: must be >= 0"),
        (["--extrapolate-to", "1e22"], "--extrapolate-to extends the figure: give --plot"),
        (["--plot", "x.png", "--extrapolate-to", "-1"], "compute C in FLOPs here: it must be > 0"),
    ],
)
def test_cli_option_errors_come_before_the_fit(runs_csv, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(_fit_args(runs_csv, "--where", "corpus=mine", *extra))
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and "objective" not in captured.out  # nothing was fitted


def test_cli_predict_with_a_missing_law_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path / "no_such_law"), "--at", "N=1e9,D=1e10"])
    assert exit_info.value.code == 2
    assert "no saved law at" in capsys.readouterr().err


def test_cli_where_matches_numbers_and_lists_the_values(tmp_path, capsys):
    """--where iso_flop=2e17 finds the rows pandas prints as 2e+17 (it compared text, found none);
    a filter that leaves nothing lists the values the column holds."""
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 6), np.geomspace(4e8, 8e10, 6)))
    loss = FORMS["chinchilla"].predict(TRUTH, {"N": n, "D": d})
    frame = pd.DataFrame({"params": n, "tokens": d, "loss": loss, "budget": 2e17, "corpus": "c4"})
    path = tmp_path / "runs.csv"
    pd.concat([frame, frame.assign(budget=1e18, loss=loss + 1)]).to_csv(path, index=False)
    out = tmp_path / "law"
    assert main(_fit_args(path, "--where", "budget=2e17", "--out", str(out))) == 0
    assert load_law(out).n_points == 36 and load_law(out).params["E"] == pytest.approx(1.69)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(_fit_args(path, "--where", "corpus=pile"))
    assert "left after --where corpus=pile; corpus holds c4" in capsys.readouterr().err


def test_cli_help_lists_forms_inputs_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    for name, spec in FORMS.items():
        assert f"{name:<14s}{spec.formula}" in text
        assert ", ".join(spec.params) in text
    assert "examples:" in text and "python -m analysis predict my_law --at" in text


def test_cli_reports_the_bootstrap(runs_csv, capsys):
    assert main(_fit_args(runs_csv, "--where", "corpus=mine", "--bootstrap", "6")) == 0
    captured = capsys.readouterr()
    assert "bootstrap: 6 of 6 resamples refitted (0 could not be fitted" in captured.out
    assert "6/6" in captured.err  # the progress bar counts resamples, not batches


def test_plot_extrapolates_a_loss_law_to_lower_losses(tmp_path):
    """A law of a loss is extrapolated to lower losses (bigger models): --extrapolate-to below the
    data must draw there (it was ignored: only values above the data were drawn)."""
    x = np.linspace(2.6, 4.0, 30)
    params = dict(K=0.6, kappa=1.2, E_x=1.5, E_y=0.8)
    y = FORMS["loss_to_loss"].predict(params, {"L": x}) * (1 + 1e-3 * np.sin(np.arange(30)))
    law = fit_law("loss_to_loss", {"L": x}, y)
    figure = plot_law(law, {"L": x}, y, tmp_path / "l2l.png", extrapolate_to=2.0, xlabel="L = a")
    ax = figure.axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata().min() == pytest.approx(2.0)
    assert dashed[0].get_xdata().max() == pytest.approx(2.6)  # joins the fit at the data's end
    assert (
        ax.get_xlabel() == "L = a" and ax.get_legend_handles_labels()[1].count("extrapolation") == 1
    )
    with pytest.raises(ValueError, match="extrapolate_to must be a finite value"):
        plot_law(law, {"L": x}, y, extrapolate_to=float("nan"))


def test_unwritable_outputs_are_errors_not_tracebacks(runs_csv, tmp_path, capsys):
    """--plot into a missing folder, --out onto a file: an error before the fit (they were
    tracebacks after it); python -m analysis.reproduce --out onto a file likewise."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for extra, message in (
        (["--plot", str(tmp_path / "missing" / "fit.png")], "its folder does not exist"),
        (["--out", str(a_file)], "is a file; the law is saved as a folder"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(_fit_args(runs_csv, "--where", "corpus=mine", *extra))
        assert exit_info.value.code == 2
        captured = capsys.readouterr()
        assert message in captured.err and "objective" not in captured.out
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path), "--at", "N=1e9,D=1e10"])  # not a law: no config.json
    assert exit_info.value.code == 2
    from analysis.reproduce.__main__ import main as reproduce_main

    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e8, 1e10, 5), np.geomspace(2e9, 2e11, 5)))
    loss = FORMS["chinchilla"].predict(TRUTH, {"N": n, "D": d}) * (1 + 1e-3 * np.sin(np.arange(25)))
    frame = pd.DataFrame({"Model Size": n, "Training FLOP": 6 * n * d, "loss": loss})
    frame.to_csv(tmp_path / "svg_extracted_data.csv", index=False)
    assert reproduce_main(["chinchilla", "--data", str(tmp_path), "--out", str(a_file)]) == 1
    assert f"--out {a_file} is a file; the results are written into a folder" in (
        capsys.readouterr().err
    )


def test_cli_plot_extrapolates_by_default(runs_csv, tmp_path, monkeypatch):
    """The figure shows an extrapolation without --extrapolate-to: 10x the largest compute for a
    law of N and D, a quarter of the range below the smallest loss for a law of L."""
    import analysis.plots as plots

    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs["extrapolate_to"])
        return original(*args, **kwargs)

    original = plots.plot_law
    monkeypatch.setattr(plots, "plot_law", recording)
    png = tmp_path / "fit.png"
    assert main(_fit_args(runs_csv, "--where", "corpus=mine", "--plot", str(png))) == 0
    frame = pd.read_csv(runs_csv)
    assert seen[0] == pytest.approx(10 * 6 * (frame["params"] * frame["tokens"]).max())
    assert png.read_bytes().startswith(PNG)

    law = Law(form="sigmoid", params=dict(a=-0.7, b=0.95, k=3.0, L0=1.3))
    loss = np.array([1.0, 1.4, 2.2])
    assert plots.default_extrapolation(law, {"L": loss}) == pytest.approx(1.0 - 0.3)
    compute = Law(form="compute", params=dict(A=60.0, E=1.7, alpha=0.09))
    assert plots.default_extrapolation(compute, {"C": [1e18, 3e19]}) == pytest.approx(3e20)


def test_a_missing_table_says_what_a_table_is(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["fit", str(tmp_path / "runs.csv"), "--form", "compute", "--target", "y"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "no such table file" in err and "one row per run" in err and "results.jsonl" in err


def test_a_column_named_twice_is_refused(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    path.write_text("C,loss,loss\n1e17,3.0,2.9\n1e18,2.8,2.7\n1e19,2.6,2.5\n1e20,2.5,2.4\n")
    with pytest.raises(SystemExit):
        main(["fit", str(path), "--form", "compute", "--target", "loss"])
    assert "column(s) 'loss' appear more than once" in capsys.readouterr().err


def test_predicting_far_outside_the_data_and_an_exact_fit_are_noted(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    C = np.array([1e17, 1e18, 1e19])
    pd.DataFrame({"C": C, "loss": 1.8 + 30 * C**-0.07}).to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fit's own FitWarning: exactly determined
        assert main(["fit", str(path), "--form", "compute", "--target", "loss", "--out",
                     str(tmp_path / "law")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "law"), "--at", "C=1e25"]) == 0
    err = capsys.readouterr().err
    assert "1 point(s) with C up to 1e+06 x beyond the C the law was fitted on" in err
    assert "exactly determined: 3 points for 3 free parameters" in err
    assert main(["predict", str(tmp_path / "law"), "--at", "C=5e18"]) == 0
    assert "far outside its data" not in capsys.readouterr().err
