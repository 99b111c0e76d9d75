"""analysis.results_table: the results table's one reader (torn lines, duplicates, non-finite
values) and widener, shared by evaluation's writer, l2l fit, python -m analysis and the testbeds."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from analysis.results_table import (
    COLUMNS,
    NotAResultsTable,
    check_results,
    is_results_file,
    read_results,
    read_rows,
    wide,
)

RUN = {"run": "L2L_c4_N1.0e05_D2.0e06_C1.2e12", "dataset": "c4", "N": 100000, "D": 2000000,
       "C": 1.2e12}  # fmt: skip


def _jsonl(path, rows, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_a_torn_last_line_is_left_out_with_a_warning_and_nothing_else_is(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    rows = [{**RUN, "metric": "a", "value": 1.5}, {**RUN, "metric": "b", "value": 2.5}]
    _jsonl(path, rows, tail='{"run": "L2L_c4_N1.0e05", "met')
    table = read_rows(path)
    assert table.torn and table.rows == rows
    assert table.data == path.read_bytes()[: table.complete]  # the whole rows, as written
    assert f"{path}:3: leaving out a torn last line" in caplog.text
    tidy = read_results(path)
    assert tidy[["metric", "value"]].values.tolist() == [["a", 1.5], ["b", 2.5]]
    # anything but the beginning of one of our rows is not a results table: refused, named
    _jsonl(path, rows, tail="my notes")
    with pytest.raises(NotAResultsTable, match=r"results.jsonl:3: its last line 'my notes'"):
        read_results(path)


def test_a_complete_last_row_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({**RUN, "metric": "a", "value": 1.0}))
    table = read_rows(path)
    assert not table.torn and table.missing_newline == "\n" and len(table.rows) == 1
    assert table.data == path.read_bytes() + b"\n"


def test_the_same_row_twice_is_kept_once_and_two_values_are_an_error(tmp_path):
    path = tmp_path / "results.jsonl"
    row = {**RUN, "metric": "val_loss", "value": 4.25}
    _jsonl(path, [row, {**RUN, "metric": "other", "value": 1.0}, row])
    tidy = read_results(path)
    assert tidy["metric"].tolist() == ["val_loss", "other"]
    assert tidy.index.tolist() == [0, 1]  # the file's row numbers: the first of the two is kept
    _jsonl(path, [row, {**row, "value": 4.5}])
    with pytest.raises(ValueError) as error:
        read_results(path)
    message = str(error.value)
    assert f"run {RUN['run']!r}, metric 'val_loss': 4.25 and 4.5" in message
    assert "delete the row that is wrong" in message


def test_non_finite_values_are_kept_and_reported_by_run_and_metric(tmp_path, caplog):
    """A diverged run's NaN loss is a result (evaluation writes it): kept in the tidy table,
    named in a warning, and never a reason to refuse the table."""
    path = tmp_path / "results.jsonl"
    rows = [{**RUN, "metric": "val_loss", "value": float("nan")},
            {**RUN, "metric": "acc", "value": None}, {**RUN, "metric": "ok", "value": 0.5}]  # fmt: skip
    path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    tidy = read_results(path)
    assert len(tidy) == 3 and math.isnan(tidy["value"].iloc[0]) and math.isnan(tidy["value"].iloc[1])
    assert "2 value(s) are not finite numbers" in caplog.text
    assert f"{RUN['run']} (val_loss), {RUN['run']} (acc)" in caplog.text
    # evaluated twice, NaN both times: the same value
    path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows + rows[:1]))
    assert len(read_results(path)) == 3


def test_a_value_that_is_not_a_number_is_an_error_naming_it():
    frame = pd.DataFrame([{**RUN, "metric": "a", "value": "n/a"}])
    with pytest.raises(ValueError, match=r"t.jsonl: 1 value\(s\) are not numbers.*'a': 'n/a'"):
        check_results(frame, origin="t.jsonl")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['value'\]"):
        check_results(frame.drop(columns="value"), origin="t.jsonl")


def test_wide_keeps_checkpoints_apart_and_sorts_them(tmp_path):
    """One row per checkpoint (run, D), in training order; columns the coordinates the table has,
    then the metrics; an absent metric is named."""
    tidy = pd.DataFrame(
        [{**RUN, "D": d, "metric": m, "value": v, "n": 10}
         for d, m, v in ((4e6, "loss", 3.0), (2e6, "loss", 3.5), (2e6, "acc", 0.3))]
    )  # fmt: skip
    frame = wide(check_results(tidy, origin="t"))
    assert frame.columns.tolist() == ["run", "dataset", "N", "D", "C", "acc", "loss"]
    assert frame["D"].tolist() == [2e6, 4e6] and frame["loss"].tolist() == [3.5, 3.0]
    assert math.isnan(frame["acc"].iloc[1])
    assert wide(tidy, ["loss"]).columns.tolist()[-1] == "loss"
    with pytest.raises(ValueError, match=r"metric\(s\) not in the table: \['bpb'\]"):
        wide(tidy, ["bpb"])


def test_a_results_file_is_told_by_its_first_line(tmp_path):
    """python -m analysis reads evaluation's tables with this reader, other tables with pandas."""
    ours = tmp_path / "r.jsonl"
    _jsonl(ours, [{**RUN, "metric": "a", "value": 1.0}])
    csv_ours = tmp_path / "r.csv"
    csv_ours.write_text(",".join(COLUMNS) + "\n")
    theirs = tmp_path / "runs.csv"
    theirs.write_text("run,metric,value,n\nr,m,1.0,1.5\n")  # tidy, but not evaluation's
    wide_table = tmp_path / "wide.jsonl"
    _jsonl(wide_table, [{"run": "r", "loss": 3.0}])
    assert is_results_file(ours) and is_results_file(csv_ours)
    assert not is_results_file(theirs) and not is_results_file(wide_table)
    assert not is_results_file(tmp_path / "absent.jsonl")
    assert not is_results_file(tmp_path / "notes.txt")
