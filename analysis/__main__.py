"""Command line: fit a law to your own sweep from a table, and predict with a saved law.

    python -m analysis fit runs.csv --form chinchilla --target loss \\
        --input N=params --input D=tokens --bootstrap 200 --out my_law --plot fit.png \\
        --extrapolate-to 1e22
    python -m analysis predict my_law --at N=7e10,D=1.4e12 --level 0.9 --interval prediction
    python -m analysis predict my_law --csv planned.csv --input N=params --input D=tokens \\
        --out predictions.csv

Inputs are read from the table's columns named like the form's inputs (N, D, C, M, L) unless
mapped with ``--input NAME=COLUMN``. The table is a CSV, JSONL or Parquet file with one row per run,
or tidy (run, dataset, N, D, C, metric, value) rows, as ``python -m evaluation`` writes them,
which are pivoted to one column per metric (``--target val_loss``). Text in a numeric column, or a
missing value, is an error naming the column and the rows; ``--dropna`` leaves rows with missing
values out instead (and says how many). Predictions are a tidy CSV: the inputs, ``prediction``
and, when the law has bootstrap samples or a covariance, ``lower`` and ``upper``: the interval of
the law (``--interval confidence``, the default) or of a new run (``--interval prediction``).
``python -m analysis fit --help`` lists the forms with their inputs and parameters.
"""

from __future__ import annotations

import sys

from .paths import check_output, exit_if_shadowed

if __name__ == "__main__":  # before the imports below, which a folder ./analysis breaks
    exit_if_shadowed("analysis", code=2)

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import write_atomic
from .bootstrap import bootstrap
from .fit import FitWarning, fit_law
from .law import (
    CONFIG_NAME,
    INTERVAL_KINDS,
    MODEL_CARD_NAME,
    SAMPLES_NAME,
    check_save_directory,
    load_law,
)
from .laws import FORMS, get_form
from .objectives import NAMES, REDUCTIONS, Objective
from .results_table import check_results, is_results_file, read_results, wide

INTERVAL_HELP = (
    "confidence (default): the law's parameter uncertainty; prediction: also the run-to-run "
    "scatter, where a new run lands"
)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        for part in item.split(","):
            name, sep, value = part.partition("=")
            if not sep or not name or not value:
                raise ValueError(f"{what} must look like NAME=VALUE, got {part!r}")
            name, value = name.strip(), value.strip()
            if name in out:  # the last one silently won: --where c=a --where c=b kept only b
                raise ValueError(
                    f"{what} gives {name} twice ({name}={out[name]}, {name}={value}); give it once"
                )
            out[name] = value
    return out


def _floats(items: list[str], what: str) -> dict[str, float]:
    out = {}
    for name, value in _pairs(items, what).items():
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{what} {name}={value!r} is not a number") from None
    return out


def _input_columns(frame: pd.DataFrame, names, mapping: dict[str, str], where: str) -> dict:
    """The table column of each input of the law (``--input NAME=COLUMN``, else NAME itself)."""
    unknown = [k for k in mapping if k not in names]
    if unknown:
        raise ValueError(f"--input names {unknown} are not inputs of this law ({', '.join(names)})")
    columns = {}
    for name in names:
        column = mapping.get(name, name)
        if column not in frame.columns:
            raise ValueError(
                f"{where} has no column {column!r} for input {name!r}; map one with "
                f"--input {name}=COLUMN (columns: {', '.join(map(str, frame.columns))})"
            )
        columns[name] = column
    return columns


def _rows(frame: pd.DataFrame, mask: np.ndarray) -> str:
    """The rows of ``mask``, the first five named: by run where the table has a run column, else
    by 1-based data row of the file (the header not counted)."""
    if "run" in frame.columns:
        kind, labels = "run", frame["run"][mask].astype(str).tolist()
    else:
        kind, labels = "data row", [str(i + 1) for i in frame.index[mask]]
    more = f" and {len(labels) - 5} more" if len(labels) > 5 else ""
    return f"{kind}{'s' if len(labels) > 1 else ''} {', '.join(labels[:5])}{more}"


def _numeric(frame: pd.DataFrame, columns: dict[str, str], where: str, dropna: bool):
    """Each role's column as floats ({role: array}) and the rows kept. Text in a numeric column
    is always an error; a missing (empty, NaN) value is an error unless ``dropna``, which leaves
    its row out."""
    values, missing = {}, np.zeros(len(frame), bool)
    for role, column in columns.items():
        raw = frame[column]
        number = pd.to_numeric(raw, errors="coerce")
        text = number.isna() & raw.notna()
        if text.any():
            first = raw[text].iloc[0]
            raise ValueError(
                f"{where}: column {column!r} ({role}) has {int(text.sum())} value(s) that are not "
                f"numbers, e.g. {first!r} ({_rows(frame, text.to_numpy())})"
            )
        number = number.to_numpy(float)
        gap = ~np.isfinite(number)
        if gap.any() and not dropna:
            raise ValueError(
                f"{where}: column {column!r} ({role}) has {int(gap.sum())} missing or infinite "
                f"value(s) ({_rows(frame, gap)}); pass --dropna to leave such rows out"
            )
        values[role], missing = number, missing | gap
    keep = ~missing
    if not keep.any():
        raise ValueError(f"{where}: no row has every needed column ({', '.join(columns.values())})")
    return {role: v[keep] for role, v in values.items()}, keep


def _read_table(path: str, where: dict[str, str]) -> pd.DataFrame:
    """A CSV, JSONL or Parquet table with one row per run, or tidy metric/value rows (evaluation's
    results table above all), checked and widened by ``analysis.results_table``."""
    if not Path(path).is_file():
        raise ValueError(
            f"no such table file: {path}; give a CSV, JSONL or Parquet table of your runs (one "
            "row per run, or the results.jsonl that `l2l eval` or `python -m evaluation --out` "
            "writes); the papers' tables come from `python -m analysis.reproduce NAME --data DIR`")
    if Path(path).suffix.lower() not in (".jsonl", ".json", ".parquet"):
        _check_header(path)
    suffix = Path(path).suffix.lower()
    kind = {".jsonl": "JSONL", ".json": "JSON", ".parquet": "Parquet"}.get(suffix, "CSV")
    if is_results_file(path):  # its own reader: a torn last line is left out, not an error
        frame = wide(read_results(path))
    else:
        try:
            if suffix in (".jsonl", ".json"):
                frame = pd.read_json(path, lines=suffix == ".jsonl")
            elif suffix == ".parquet":
                frame = pd.read_parquet(path)
            else:
                frame = pd.read_csv(path)
        except (ValueError, OSError, ImportError) as error:  # pandas' messages name no file
            raise ValueError(f"could not read {path} as a {kind} table: {error}") from None
        if {"metric", "value"} <= set(frame.columns):
            frame = wide(check_results(frame, origin=path))
    for column, value in where.items():
        if column not in frame.columns:
            raise ValueError(f"--where: {path} has no column {column!r}")
        kept = frame[_matches(frame[column], value)]
        if kept.empty:
            seen = [str(v) for v in pd.unique(frame[column])[:10]]
            raise ValueError(
                f"no rows of {path} left after --where {column}={value}; {column} holds "
                f"{', '.join(seen)}{' ...' if frame[column].nunique() > 10 else ''}"
            )
        frame = kept
    return frame


def _check_header(path: str) -> None:
    """A CSV header naming a column twice (pandas would read the second as ``name.1``, and the
    fit would silently use the first) is refused, naming it."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return  # pandas says what is wrong with the file
    twice = sorted({c.strip() for c in header if [h.strip() for h in header].count(c.strip()) > 1})
    if twice:
        raise ValueError(f"{path}: column(s) {', '.join(map(repr, twice))} appear more than once "
                         "in the header; rename or remove the duplicates")


def _matches(column: pd.Series, value: str) -> pd.Series:
    """Rows whose value is ``value``: as text, or as a number for a numeric column (so that
    iso_flop=2e17 finds 2e+17 and n_layers=12.0 finds 12)."""
    if pd.api.types.is_numeric_dtype(column):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return pd.Series(np.isclose(column.to_numpy(float), number, rtol=1e-9, atol=0.0),
                             index=column.index)  # fmt: skip
    return column.astype(str) == value


def _check_plot(path: str) -> None:
    """--plot must name a new or image file in an existing folder: the figure replaces it (a
    --plot runs.csv wrote a PNG over the table, a name without a suffix a PNG by that name)."""
    from matplotlib.backend_bases import FigureCanvasBase  # matplotlib only for a figure

    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in kinds:
        raise ValueError(
            f"--plot {path}: not an image file name; end it in .png or another format of "
            f"matplotlib ({', '.join(sorted(kinds))})"
        )
    check_output(path, "--plot", folder=False)
    if not Path(path).resolve().parent.is_dir():
        raise ValueError(f"--plot {path}: its folder does not exist")


def cmd_fit(args) -> int:
    form = get_form(args.form)
    # Options are checked before a possibly long fit and bootstrap.
    if args.extrapolate_to is not None:
        if not args.plot:
            raise ValueError("--extrapolate-to extends the figure: give --plot FILE.png too")
        if form.inputs[0] in ("N", "C") and not args.extrapolate_to > 0:
            raise ValueError("--extrapolate-to is a compute C in FLOPs here: it must be > 0")
    if args.group and not args.bootstrap:  # it was ignored: no resampling without --bootstrap
        raise ValueError("--group chooses what the bootstrap resamples: give --bootstrap N too")
    objective_name = args.objective or form.default_objective
    if args.delta is not None and objective_name != "huber_log":
        raise ValueError(
            f"--delta is the Huber delta of huber_log; objective {objective_name} has none"
        )
    if args.plot:
        _check_plot(args.plot)
    if args.out:
        check_output(args.out, "--out", folder=True)
        try:  # a folder holding something else than a law would lose its config.json
            check_save_directory(args.out)
        except ValueError as error:
            raise ValueError(f"--out {error}") from None
    frame = _read_table(args.csv, _pairs(args.where, "--where"))
    if args.target not in frame.columns:
        raise ValueError(
            f"{args.csv} has no target column {args.target!r} "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    columns = _input_columns(frame, form.inputs, _pairs(args.input, "--input"), args.csv)
    values, keep = _numeric(
        frame, {**{f"input {k}": c for k, c in columns.items()}, "target": args.target},
        args.csv, args.dropna,
    )  # fmt: skip
    if not keep.all():
        print(f"left out {int((~keep).sum())} row(s) with a missing value (--dropna)")
        frame = frame[keep]
    inputs = {name: values[f"input {name}"] for name in form.inputs}
    target = values["target"]
    objective = None
    if args.objective or args.reduction or args.delta is not None:  # --delta 0 is no default
        objective = Objective(
            objective_name,
            delta=1e-3 if args.delta is None else args.delta,
            reduction=args.reduction or "mean",
        )
    bounds = {}
    for name, value in _pairs(args.bound, "--bound").items():
        lo, sep, hi = value.partition(":")
        if not sep:
            raise ValueError(f"--bound must look like NAME=LOW:HIGH, got {name}={value}")
        try:
            bounds[name] = (float(lo) if lo else -np.inf, float(hi) if hi else np.inf)
        except ValueError:
            raise ValueError(f"--bound {name}={value}: LOW and HIGH must be numbers") from None
    if args.group and args.group not in frame.columns:
        raise ValueError(f"{args.csv} has no group column {args.group!r}")
    metadata = {"csv": Path(args.csv).name, "target": args.target, "where": args.where or []}
    with warnings.catch_warnings():
        # A FitWarning (a parameter at a bound, not identifiable) is printed once, with the
        # parameters it concerns, by law.summary() below.
        warnings.simplefilter("ignore", FitWarning)
        law = fit_law(
            form.name,
            inputs,
            target,
            objective=objective,
            fixed=_floats(args.fix, "--fix"),
            bounds=bounds or None,
            metadata=metadata,
        )
    if args.bootstrap:
        groups = frame[args.group].to_numpy() if args.group else None
        law = bootstrap(
            law,
            inputs,
            target,
            n_resamples=args.bootstrap,
            groups=groups,
            seed=args.seed,
            bounds=bounds or None,
            progress=True,
        )
    print(law.summary())
    if args.bootstrap:
        info = law.bootstrap_info
        print(
            f"bootstrap: {len(law.samples)} of {info['n_resamples']} resamples refitted "
            f"({info['n_failed']} could not be fitted, {info['n_unconverged']} did not converge)"
            + (f", resampling {info['n_groups']} groups of {args.group}" if args.group else "")
        )
        for name, (lo, hi) in law.param_intervals(args.level).items():
            print(f"  {name:>8s} {args.level:.0%} interval [{lo:.6g}, {hi:.6g}]")
    if args.out:
        law.save_pretrained(args.out)
        print(f"saved to {args.out}")
    if args.plot:
        from .plots import default_extrapolation, plot_law  # matplotlib only for a figure

        plot_law(
            law,
            inputs,
            target,
            args.plot,
            extrapolate_to=(
                default_extrapolation(law, inputs)
                if args.extrapolate_to is None
                else args.extrapolate_to
            ),
            level=args.level,
            interval=args.interval,
            ylabel=args.target,
            xlabel=" = ".join(dict.fromkeys((form.inputs[0], columns[form.inputs[0]]))),
        )
        print(f"figure written to {args.plot}")
    if args.push_to_hub:
        print(f"pushed: {law.push_to_hub(args.push_to_hub)}")
    return 0


def _check_predictions_out(args) -> None:
    """--out is replaced by the predictions: it must not be the --csv table, one of the law's
    own files, or any other file that holds something else than predictions."""
    out = Path(args.out)
    check_output(out, "--out", folder=False)
    if out.is_dir():
        raise ValueError(
            f"--out {out} is a folder; give the file to write, e.g. {out / 'predictions.csv'}"
        )
    if not out.exists():
        return
    if args.csv and Path(args.csv).exists() and out.samefile(args.csv):
        raise ValueError(f"--out {out} is the --csv table itself: the predictions would replace it")
    law = Path(args.law).expanduser()
    if out.name in (CONFIG_NAME, SAMPLES_NAME, MODEL_CARD_NAME) and law.is_dir():
        if out.resolve().parent == law.resolve():
            raise ValueError(f"--out {out} is a file of the law {args.law}: it would be replaced")
    with open(out, encoding="utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\r\n")
    if header and "prediction" not in [c.strip() for c in header.split(",")]:
        # what predict writes has a prediction column; anything else is someone's data
        raise ValueError(
            f"--out {out} exists and is not a predictions table (its first line: "
            f"{header[:60]!r}): writing would replace it; choose another file, or delete it first"
        )


def cmd_predict(args) -> int:
    if bool(args.csv) == bool(args.at):
        raise ValueError("give exactly one of --csv FILE or --at NAME=VALUE,...")
    if args.input and not args.csv:  # it was ignored: --at names the inputs itself
        raise ValueError("--input maps the columns of --csv; with --at, name the inputs there")
    if args.out:
        _check_predictions_out(args)
    law = load_law(args.law)
    names = law.form_spec.inputs
    if args.csv:
        frame = _read_table(args.csv, {})
        columns = _input_columns(frame, names, _pairs(args.input, "--input"), args.csv)
        roles = {f"input {k}": c for k, c in columns.items()}
        values, _ = _numeric(frame, roles, args.csv, dropna=False)
        inputs = {name: values[f"input {name}"] for name in names}
    else:
        points = [_floats([point], "--at") for point in args.at]
        for point in points:
            if set(point) != set(names):
                raise ValueError(f"--at needs exactly {', '.join(names)}; got {', '.join(point)}")
        inputs = {name: np.array([p[name] for p in points]) for name in names}
    for note in _extrapolation_notes(law, inputs) + [f"the law's fit: {w}" for w in law.warnings
                                                     if "exactly determined" in w]:
        print(f"note: {note}", file=sys.stderr)
    table = pd.DataFrame(inputs)
    table["prediction"] = law.predict(**inputs)
    if law.samples is not None or law.covariance:
        table["lower"], table["upper"] = law.predict_interval(
            args.level, kind=args.interval, **inputs
        )
    if args.out:
        write_atomic(args.out, table.to_csv(index=False))
        print(f"{len(table)} predictions written to {args.out}")
    else:
        table.to_csv(sys.stdout, index=False)
    return 0


FAR = 10.0  # beyond this factor (or a loss range beyond its own span), the data say little


def _extrapolation_notes(law, inputs: dict) -> list[str]:
    """Inputs far outside the range the law was fitted on (``metadata["input_ranges"]``, which
    laws fitted before it was recorded lack), in words."""
    ranges = law.metadata.get("input_ranges") or {}
    notes = []
    for name, values in inputs.items():
        if name not in ranges:
            continue
        lo, hi = (float(v) for v in ranges[name])
        values = np.asarray(values, float)
        if name == "L":  # a loss: further below the data than the data span
            far = values < lo - (hi - lo)
            what = f"below the smallest {name} the law was fitted on ({lo:.4g}) by more than its span"
        else:
            far = (values > hi * FAR) | (values < lo / FAR)
            factor = float(np.max(np.maximum(values / hi, lo / values)))
            what = (f"up to {factor:.3g} x beyond the {name} the law was fitted on "
                    f"({lo:.3g} to {hi:.3g})")
        if far.any():
            notes.append(f"{int(far.sum())} point(s) with {name} {what}: far outside its data, "
                         "the prediction rests on the form alone")
    return notes


def _level(text: str) -> float:
    try:
        level = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < level < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, e.g. 0.9; got {text}")
    return level


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {count}")
    return count


def _forms_table() -> str:
    rows = [
        f"  {name:<14s}{spec.formula:<53s}{', '.join(spec.inputs):<7s}{', '.join(spec.params)}"
        for name, spec in FORMS.items()
    ]
    return "\n".join([f"  {'form':<14s}{'law':<53s}{'inputs':<7s}parameters", *rows])


FIT_DESCRIPTION = f"""\
Fit a scaling law to a table of runs (one row per run), print its parameters with standard
errors, and optionally save it, bootstrap it, plot it and push it to the Hub.

Forms (each input is a column of the table, named like the input or mapped with --input):
{_forms_table()}

N: parameters, D: training tokens, C: training FLOPs, M: tokens per parameter D/N,
L: a loss (of the same models) that predicts the target. The loss laws are fitted in log space by
default (objective huber_log: Huber loss, delta 1e-3, on log(target) - log(law), the mean over
points); loss_to_error and sigmoid by least squares.
"""

FIT_EXAMPLES = """\
examples:
  # Chinchilla law of val_loss, columns params and tokens, runs of one corpus, 200 bootstrap
  # resamples, saved, plotted up to 1e22 FLOPs with the 90% interval of a new run:
  python -m analysis fit sweep.csv --form chinchilla --target val_loss \\
      --input N=params --input D=tokens --where data=fineweb-100b \\
      --bootstrap 200 --out my_law --plot my_law.png --extrapolate-to 1e22 --interval prediction
  # Epoch AI's objective (sum over points) with the irreducible loss pinned:
  python -m analysis fit runs.csv --form chinchilla --target loss --reduction sum --fix E=1.69
  # loss-to-loss: val loss of corpus B's models (target) from corpus A's (column loss_a):
  python -m analysis fit pairs.csv --form loss_to_loss --target loss_b --input L=loss_a
then: python -m analysis predict my_law --at N=7e10,D=1.4e12
"""

PREDICT_EXAMPLES = """\
examples:
  python -m analysis predict my_law --at N=7e10,D=1.4e12 --at N=1e9,D=2e10
  python -m analysis predict my_law --csv planned.csv --input N=params --input D=tokens \\
      --interval prediction --level 0.95 --out predictions.csv
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Fit scaling laws to your own runs, and predict with a saved law. "
        "'python -m analysis fit --help' lists the forms and their inputs.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{fit,predict}")
    formatter = argparse.RawDescriptionHelpFormatter

    fit = commands.add_parser(
        "fit",
        help="fit a law to a table of runs (CSV, JSONL or Parquet)",
        description=FIT_DESCRIPTION,
        epilog=FIT_EXAMPLES,
        formatter_class=formatter,
    )
    fit.add_argument(
        "csv",
        metavar="TABLE",
        help="CSV, JSONL or Parquet file: one row per run, or tidy run/metric/value rows as "
        "python -m evaluation writes them (pivoted to one column per metric)",
    )
    what = fit.add_argument_group("what to fit")
    what.add_argument("--form", required=True, choices=list(FORMS), help="the law (table above)")
    what.add_argument(
        "--target",
        required=True,
        metavar="COLUMN",
        help="column to predict (a loss, an error, ...)",
    )
    what.add_argument(
        "--input",
        action="append",
        metavar="NAME=COLUMN",
        help="the column holding an input of the law, e.g. N=params (repeatable; default: the "
        "column named like the input)",
    )
    what.add_argument(
        "--where",
        action="append",
        metavar="COLUMN=VALUE",
        help="fit only the rows where COLUMN equals VALUE, e.g. data=c4 (repeatable: all must hold)",
    )
    what.add_argument(
        "--dropna",
        action="store_true",
        help="leave out rows whose target or inputs are missing (unfinished runs); without it "
        "they are an error naming the rows",
    )
    how = fit.add_argument_group("how to fit")
    how.add_argument(
        "--objective",
        choices=NAMES,
        help="huber_log: Huber loss on log residuals (default of the loss laws); least_squares: "
        "squared residuals (default of loss_to_error, sigmoid); log_ols: loss_to_loss with E_x "
        "and E_y fixed, a straight line in log-log space",
    )
    how.add_argument(
        "--reduction",
        choices=REDUCTIONS,
        help="mean (default, as the loss-to-loss notebooks) or sum (Epoch AI, OLMo-ladder) of the "
        "objective over points; the fit is the same, only the reported value differs",
    )
    how.add_argument("--delta", type=float, help="Huber delta of huber_log (default 1e-3)")
    how.add_argument(
        "--fix",
        action="append",
        metavar="PARAM=VALUE",
        help="pin a parameter instead of fitting it, e.g. E=1.69 (repeatable)",
    )
    how.add_argument(
        "--bound",
        action="append",
        metavar="PARAM=LOW:HIGH",
        help="keep a parameter within bounds, e.g. alpha=0:1 or E=1.5: (an empty side is "
        "unbounded; repeatable)",
    )
    unc = fit.add_argument_group("uncertainty")
    unc.add_argument(
        "--bootstrap",
        type=_count,
        default=0,
        metavar="N",
        help="refit N resamples of the runs for parameter and prediction intervals (e.g. 200); "
        "default 0: delta-method (sandwich) intervals only",
    )
    unc.add_argument(
        "--group",
        metavar="COLUMN",
        help="with --bootstrap, resample whole groups of rows sharing this column's value (e.g. "
        "all checkpoints of a run) instead of single rows",
    )
    unc.add_argument("--seed", type=_count, default=0, help="bootstrap seed (default 0)")
    unc.add_argument(
        "--level", type=_level, default=0.9, help="level of the intervals (default 0.9)"
    )
    unc.add_argument("--interval", choices=INTERVAL_KINDS, default="confidence", help=INTERVAL_HELP)
    out = fit.add_argument_group("output")
    out.add_argument(
        "--out", metavar="FOLDER", help="save the law here (save_pretrained; read by predict)"
    )
    out.add_argument(
        "--plot",
        metavar="PNG",
        help="figure of the data, the fit, its extrapolation and the --level --interval band",
    )
    out.add_argument(
        "--extrapolate-to",
        type=float,
        metavar="X",
        help="draw the law on to this value of the plot's x axis: compute C = 6 N D for laws of "
        "N and D (along the compute-optimal frontier), C for compute and overtrain, L for the "
        "laws of a loss (default: 10x the data's largest compute; for a law of L, a quarter of "
        "the data's range below its smallest L)",
    )
    out.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the law to the Hub")
    fit.set_defaults(run=cmd_fit)

    predict = commands.add_parser(
        "predict",
        help="predict with a saved law, with intervals",
        description="Predict with a law saved by 'fit --out' (or save_pretrained), at points\n"
        "given with --at or read from a table with --csv. Writes a CSV: the inputs, prediction\n"
        "and, when the law has bootstrap samples or a covariance, lower and upper.",
        epilog=PREDICT_EXAMPLES,
        formatter_class=formatter,
    )
    predict.add_argument("law", help="folder written by fit --out, or a Hub repository id")
    predict.add_argument(
        "--csv", metavar="TABLE", help="CSV, JSONL or Parquet file of points to predict"
    )
    predict.add_argument(
        "--at",
        action="append",
        metavar="NAME=VALUE,...",
        help="one point, every input of the law, e.g. N=7e10,D=1.4e12 (repeatable)",
    )
    predict.add_argument(
        "--input",
        action="append",
        metavar="NAME=COLUMN",
        help="with --csv: the column holding an input, e.g. N=params (repeatable)",
    )
    predict.add_argument(
        "--level", type=_level, default=0.9, help="level of the interval (default 0.9)"
    )
    predict.add_argument(
        "--interval", choices=INTERVAL_KINDS, default="confidence", help=INTERVAL_HELP
    )
    predict.add_argument("--out", metavar="CSV", help="file to write (default: standard output)")
    predict.set_defaults(run=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:  # bad input, or an output path that cannot be written
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
