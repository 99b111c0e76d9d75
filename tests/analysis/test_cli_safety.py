"""The command lines (python -m analysis fit|predict, analysis.reproduce, analysis.backtest) never
destroy a user's files, never make a folder that shadows the package, and answer bad options with
one line naming the problem, before any fit."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import FORMS, fit_law, load_law
from analysis.__main__ import main
from analysis.backtest import main as backtest_main
from analysis.reproduce.__main__ import main as reproduce_main

ROOT = Path(__file__).resolve().parents[2]
TRUTH = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)


@pytest.fixture
def runs_csv(tmp_path):
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 5), np.geomspace(4e8, 8e10, 5)))
    loss = FORMS["chinchilla"].predict(TRUTH, {"N": n, "D": d})
    loss = loss * np.exp(np.random.default_rng(0).normal(0, 1e-3, loss.size))
    path = tmp_path / "runs.csv"
    pd.DataFrame({"run": np.arange(25) // 5, "N": n, "D": d, "loss": loss}).to_csv(
        path, index=False
    )
    return path


@pytest.fixture
def saved_law(runs_csv, tmp_path):
    frame = pd.read_csv(runs_csv)
    law = fit_law("chinchilla", {"N": frame["N"], "D": frame["D"]}, frame["loss"].to_numpy())
    law.save_pretrained(tmp_path / "law")
    return tmp_path / "law"


def _fails(argv, capsys, message, entry=main, code=2):
    """``entry(argv)`` ends with ``code`` and one line on stderr holding ``message``, having
    fitted nothing."""
    if entry is main:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == code
    else:
        assert entry(argv) == code
    captured = capsys.readouterr()
    assert message in captured.err, captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert "objective" not in captured.out  # nothing was fitted
    return captured.err


def _installed() -> bool:
    try:
        importlib.metadata.distribution("l2l")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _python(args, cwd, **env):
    """``python ARGS`` run from ``cwd`` (not the repository: its folders are the packages),
    importing the project as it is installed: PYTHONPATH (only where it is not installed) puts
    the repository before any finder of an editable install, which is where shadowing happens."""
    path = {} if _installed() else {"PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **path, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _module(args, cwd, **env):
    return _python(["-m", *args], cwd, **env)


# --- output folders named like a package ---------------------------------------------------------


def test_fit_out_refuses_a_folder_that_would_shadow_the_package(runs_csv, tmp_path):
    """fit --out analysis/law from a folder that is not the repository made ./analysis, which
    then shadowed the package: 'python -m analysis predict analysis/law' died with ImportError:
    cannot import name 'Law'. Refused, before the fit, and nothing is made."""
    result = _module(
        ["analysis", "fit", str(runs_csv), "--form", "chinchilla", "--target", "loss",
         "--out", "analysis/law"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: --out analysis/law: that would make" in result.stderr
    assert "named like the package 'analysis'" in result.stderr
    assert "e.g. results/analysis/law" in result.stderr
    assert not (tmp_path / "analysis").exists() and "objective" not in result.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "LAW", "--at", "N=1e9,D=1e10", "--out", "training/p.csv"], "'training'"),
        (["predict", "LAW", "--at", "N=1e9,D=1e10", "--out", "analysis.py"], "'analysis'"),
        (["fit", "RUNS", "--form", "chinchilla", "--target", "loss", "--plot", "evaluation/f.png"],
         "'evaluation'"),
        (["fit", "RUNS", "--form", "chinchilla", "--target", "loss", "--out", "modeling_l2l"],
         "'modeling_l2l'"),
    ],
)  # fmt: skip
def test_no_output_may_shadow_a_package(
    saved_law, runs_csv, tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(tmp_path)
    argv = [{"LAW": str(saved_law), "RUNS": str(runs_csv)}.get(a, a) for a in argv]
    _fails(argv, capsys, f"named like the package {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["law", "runs.csv"]


def test_outputs_into_the_repositorys_own_packages_are_not_shadowing(monkeypatch):
    """Run from the repository, ./analysis is the package itself: nothing is shadowed."""
    from analysis.paths import shadowing_name

    monkeypatch.chdir(ROOT)
    assert shadowing_name("analysis/some_law", folder=True) is None
    assert shadowing_name("results/analysis", folder=True) is None
    assert shadowing_name("../analysis/x", folder=True) is None
    assert shadowing_name("analysis.py", folder=False) == ("analysis", "analysis.py")


def test_reproduce_and_backtest_refuse_a_shadowing_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for entry, argv in (
        (reproduce_main, ["chinchilla", "--data", str(tmp_path), "--out", "analysis"]),
        (backtest_main, ["--testbeds", "chinchilla", "--out", "training/bt"]),
    ):
        _fails(argv, capsys, "named like the package", entry=entry, code=1)
    assert list(tmp_path.iterdir()) == []


def test_a_shadowing_folder_already_there_is_one_line_not_a_traceback(saved_law, tmp_path):
    """A folder ./analysis made some other way (an older version, by hand): each command line
    says what shadows the package and what to do, in one line."""
    work = tmp_path / "work"
    (work / "analysis").mkdir(parents=True)
    saved_law.rename(work / "analysis" / "law")
    # With an editable install the project's finder comes after the current folder: the folder
    # wins. Imported otherwise (PYTHONPATH, a wheel) the package wins, and all works.
    check = _python(["-c", "import analysis; print(analysis.__file__)"], work)
    assert check.returncode == 0, check.stderr
    shadowed = check.stdout.strip() == "None"  # a namespace package: the folder there
    for args, code in (
        (["analysis", "predict", "analysis/law", "--at", "N=1e9,D=1e10"], 2),
        (["analysis.reproduce", "chinchilla", "--data", "none", "--out", "out"], 1),
        (["analysis.backtest", "--testbeds", "chinchilla", "--data-root", "none", "--out", "out"],
         1),
    ):  # fmt: skip
        result = _module(args, work, HF_HUB_OFFLINE="1")
        assert "Traceback" not in result.stderr, result.stderr
        if shadowed:
            assert result.returncode == code
            assert result.stderr.startswith(f"error: the folder {work / 'analysis'} shadows the ")
            assert "Rename or move that folder" in result.stderr
            assert result.stderr.count("\n") == 1
        elif args[0] == "analysis":
            assert result.returncode == 0 and "prediction" in result.stdout
        else:  # no data there: the command's own error
            assert result.returncode == 1 and "testbed file not found" in result.stderr
    assert not (work / "out").exists()


# --- user files never replaced -------------------------------------------------------------------


def test_fit_out_refuses_a_folder_holding_something_else(runs_csv, tmp_path, capsys):
    """--out onto a folder whose config.json is not a law's (a model, say): save_pretrained
    deleted that config.json and wrote the law's over it. Refused before the fit."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    argv = ["fit", str(runs_csv), "--form", "chinchilla", "--target", "loss", "--out", str(model)]
    _fails(argv, capsys, f"--out {model} holds a config.json that is not a saved law")
    assert (model / "config.json").read_text() == '{"model_type": "llama"}'
    (model / "config.json").write_text("[1, 2]")  # JSON, but no law either
    _fails(argv, capsys, "holds a JSON list, not an object")
    (model / "config.json").unlink()
    (model / "bootstrap.csv").write_text("mine\n")
    _fails(argv, capsys, "holds a bootstrap.csv but no saved law")
    assert (model / "bootstrap.csv").read_text() == "mine\n"


def test_fit_refits_into_its_own_law_folder(runs_csv, tmp_path, capsys):
    out = tmp_path / "law"
    argv = ["fit", str(runs_csv), "--form", "chinchilla", "--target", "loss", "--out", str(out)]
    assert main(argv) == 0
    assert main([*argv, "--fix", "E=1.6"]) == 0  # the law there is replaced, as asked
    assert load_law(out).params["E"] == 1.6
    assert "| E | 1.6 | fixed |" in (out / "README.md").read_text()  # the card too


@pytest.mark.parametrize("name", ["runs.csv", "fit", "fit.txt"])
def test_fit_plot_must_be_an_image_file_name(runs_csv, tmp_path, capsys, name):
    """--plot runs.csv wrote a PNG over the table; a name without a suffix, a PNG named so."""
    plot = tmp_path / name
    before = plot.read_bytes() if plot.exists() else None
    argv = ["fit", str(runs_csv), "--form", "chinchilla", "--target", "loss", "--plot", str(plot)]
    _fails(argv, capsys, f"--plot {plot}: not an image file name; end it in .png")
    assert (plot.read_bytes() if plot.exists() else None) == before


def test_predict_out_never_replaces_the_table_the_law_or_other_data(
    runs_csv, saved_law, tmp_path, capsys
):
    table = runs_csv.read_text()
    predict = ["predict", str(saved_law), "--csv", str(runs_csv)]
    _fails([*predict, "--out", str(runs_csv)], capsys, "is the --csv table itself")
    assert runs_csv.read_text() == table  # it held the predictions, the loss column lost
    config = (saved_law / "config.json").read_text()
    _fails([*predict, "--out", str(saved_law / "config.json")], capsys, "is a file of the law")
    assert (saved_law / "config.json").read_text() == config
    notes = tmp_path / "notes.csv"
    notes.write_text("what,when\nlunch,noon\n")
    _fails([*predict, "--out", str(notes)], capsys, "exists and is not a predictions table")
    assert notes.read_text() == "what,when\nlunch,noon\n"
    _fails([*predict, "--out", str(tmp_path)], capsys, f"--out {tmp_path} is a folder; give the")
    out = tmp_path / "predictions.csv"
    assert main([*predict, "--out", str(out)]) == 0
    assert main([*predict, "--out", str(out)]) == 0  # its own predictions are replaced
    assert "prediction" in pd.read_csv(out).columns and len(pd.read_csv(out)) == 25


# --- options that were ignored or half-read -----------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--where", "run=1", "--where", "run=2"], "--where gives run twice (run=1, run=2)"),
        (["--input", "N=N", "--input", "N=D"], "--input gives N twice"),
        (["--fix", "E=1.6,E=1.7"], "--fix gives E twice"),
        (["--group", "run"], "--group chooses what the bootstrap resamples: give --bootstrap"),
        (["--objective", "least_squares", "--delta", "0.1"], "objective least_squares has none"),
        (["--delta", "0"], "Huber delta must be a positive finite number, got 0.0"),
        (["--seed", "-1", "--bootstrap", "5"], "argument --seed: must be >= 0, got -1"),
    ],
)
def test_fit_options_that_were_silently_ignored_are_errors(runs_csv, capsys, extra, message):
    """Each of these fitted something other than asked: the last of two --where on one column
    won, --group without --bootstrap resampled nothing, --delta 0 and --delta of least squares
    were dropped, a negative seed failed in numpy after the fit."""
    argv = ["fit", str(runs_csv), "--form", "chinchilla", "--target", "loss", *extra]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and "objective" not in captured.out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--at", "N=1e9,D=1e10,N=2e9"], "--at gives N twice (N=1e9, N=2e9)"),
        (["--at", "N=1e9,D=1e10", "--input", "N=params"], "--input maps the columns of --csv"),
    ],
)
def test_predict_options_that_were_silently_ignored_are_errors(saved_law, capsys, extra, message):
    _fails(["predict", str(saved_law), *extra], capsys, message)


# --- reproduce and backtest ---------------------------------------------------------------------


def test_reproduce_and_backtest_out_onto_a_file_fail_first(tmp_path, capsys):
    """--out onto a file: a line saying so before any work (it was '[Errno 17] File exists')."""
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for entry, argv in (
        (reproduce_main, ["chinchilla", "--data", str(tmp_path / "none"), "--out", str(a_file)]),
        (backtest_main, ["--testbeds", "chinchilla", "--out", str(a_file)]),
    ):
        _fails(argv, capsys, f"--out {a_file} is a file; the results are written into a folder",
               entry=entry, code=1)  # fmt: skip
    assert a_file.read_text() == "mine"


def test_a_failed_backtest_leaves_no_empty_out_folder(tmp_path, capsys):
    """Bad arguments or missing data: the --out folder made for the run is gone again (each
    failed try left one behind); one that was there already stays."""
    out = ["--testbeds", "chinchilla", "--out", str(tmp_path / "bt")]
    for extra in (["--resamples", "3"], ["--level", "1.5"], ["--data-root", str(tmp_path / "x")]):
        assert backtest_main([*out, *extra]) == 1
        assert "error: " in capsys.readouterr().err
        assert not (tmp_path / "bt").exists()
    (tmp_path / "kept").mkdir()
    assert backtest_main(["--testbeds", "chinchilla", "--out", str(tmp_path / "kept"),
                          "--data-root", str(tmp_path / "x")]) == 1  # fmt: skip
    assert (tmp_path / "kept").is_dir()
