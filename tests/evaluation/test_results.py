"""The results table: durable appends, torn last lines, CSV files written by older versions, and
files that are not results tables (refused, untouched)."""

from __future__ import annotations

import csv
import json

import pytest

from evaluation.results import COLUMNS, ResultsTable

ROW = {"run": "L2L_c4_N1.0e05_D2.0e06_C1.2e12", "dataset": "c4", "N": 1e5, "D": 2e6, "C": 1.2e12}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_rows_round_trip_and_a_torn_line_is_dropped(tmp_path, suffix):
    path = tmp_path / f"r{suffix}"
    table = ResultsTable(path)
    table.append([{**ROW, "metric": "a", "value": 1.5, "n": 10, "n_windowed": 2, "source": "x"}])
    with open(path, "a") as f:  # a crash mid-write leaves half a row
        f.write('{"run": "L2L_c4' if suffix == ".jsonl" else "L2L_c4_N1.0e05,c4,1e5")
    table = ResultsTable(path)
    assert [(r["metric"], r["value"], r["n"], r["n_windowed"]) for r in table.rows] == [
        ("a", 1.5, 10, 2)
    ]
    table.append([{**ROW, "metric": "b", "value": 2.0, "n": 10, "source": "x"}])
    again = ResultsTable(path)
    assert [r["metric"] for r in again.rows] == ["a", "b"]
    assert again.rows[0]["N"] == 1e5 and again.has(ROW["run"], "b")


def test_appending_to_a_csv_with_older_columns_keeps_it_aligned(tmp_path, caplog):
    """A CSV written before a column existed gets rows in its own columns, not shifted ones."""
    path = tmp_path / "old.csv"
    old_columns = [c for c in COLUMNS if c != "n_windowed"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns)
        writer.writeheader()
        writer.writerow({**ROW, "metric": "a", "value": 1.0, "n": 5, "source": "x"})
    table = ResultsTable(path)
    table.append([{**ROW, "metric": "b", "value": 2.0, "n": 6, "n_windowed": 1, "source": "y"}])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(None not in r for r in rows)  # no cells beyond the header
    assert (rows[1]["metric"], rows[1]["value"], rows[1]["n"], rows[1]["source"]) == (
        "b", "2.0", "6", "y"
    )  # fmt: skip
    assert "no column ['n_windowed']" in caplog.text


def test_a_table_that_is_not_ours_is_never_appended_to(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"run": "a", "metric": "m", "value": 1}\nnot json\n')
    with pytest.raises(ValueError, match="r.jsonl:2: not a JSON row: not a results table; refus"):
        ResultsTable(path)
    path = tmp_path / "r.csv"
    path.write_text("name,score\na,1\n")
    with pytest.raises(ValueError, match=r"lacks \['metric', 'run', 'value'\]: not a results t"):
        ResultsTable(path)
    path.write_text("run,metric,value\na,m,not-a-number\n")
    with pytest.raises(ValueError, match="r.csv:2: .*refusing to append"):
        ResultsTable(path)
    assert path.read_text() == "run,metric,value\na,m,not-a-number\n"


def test_non_finite_values_are_kept_and_reported(tmp_path, caplog):
    """A diverged run's NaN loss is a result: written (JSON NaN), warned about, read back."""
    path = tmp_path / "r.jsonl"
    ResultsTable(path).append([{**ROW, "metric": "val_loss", "value": float("nan")}])
    assert "non-finite value nan" in caplog.text
    value = ResultsTable(path).rows[0]["value"]
    assert value != value and json.loads(path.read_text())["metric"] == "val_loss"


HEADER = ",".join(COLUMNS)
OUR_CSV_ROW = (
    "L2L_c4,c4,100000.0,2000000.0,1.2e12,a,1.5,10,0,,x,ckpt,2024-05-01T12:00:00+00:00"
)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        # The fault probe's case: a user's one-line notes without a final newline.
        ("notes.jsonl", b"my notes", r"notes.jsonl:1: its last line 'my notes' is neither a JSON row"),
        ("r.jsonl", b'{"run": "a", "metric": "m", "value": 1}\nmy notes', r"r.jsonl:2: its last line"),
        ("r.jsonl", b'{"run": "a", "metric": "m"}\n[1, 2]', r"r.jsonl:2: a row needs 'run'"),
        ("r.jsonl", b'{"run": "caf\xe9"}\n', r"r.jsonl: not UTF-8 text \(byte 12\)"),
        ("r.csv", b"my notes", r"r.csv:1: its only line 'my notes' is not a results table's header"),
        ("r.csv", b"run,metric,value\na,m\n", r"r.csv:2: 2 cells under a header of 3"),
        ("r.csv", f"{HEADER}\n{OUR_CSV_ROW},extra".encode(), r"r.csv:2: .* has 14 cells, the header 13"),
        ("r.csv", f"{HEADER}\nL2L_c4,c4,lots,".encode(), r"r.csv:2: .* has N='lots'"),
        # A header of the user's own: a last line without newline may be theirs, whole.
        ("r.csv", b"run,metric,value\na,m,1\nb,m,2", r"r.csv:3: .* may be a complete row or one cut"),
        ("notes.txt", b"my notes", r"notes.txt: a results table is a .jsonl or .csv file, not .txt"),
        ("results.json", b"[]", r"a results table is a .jsonl or .csv file, not .json"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_a_table_is_refused_untouched(tmp_path, name, content, why):
    """Only a torn line that begins one of our rows is ever dropped; anything else, a user's notes
    above all, makes the file refused, named, with the reason, and left as it was."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=why):
        ResultsTable(path)
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    ("suffix", "torn"),
    [(".jsonl", "{"), (".jsonl", '{"run": "L2L_c4", "datas'), (".csv", "L2L_c4"),
     (".csv", OUR_CSV_ROW[:-6]), (".csv", OUR_CSV_ROW.rsplit(",", 1)[0] + ",")],
)  # fmt: skip
def test_only_the_beginning_of_our_own_row_counts_as_torn(tmp_path, suffix, torn):
    path = tmp_path / f"r{suffix}"
    ResultsTable(path).append([{**ROW, "metric": "a", "value": 1.0}])
    whole = path.read_bytes()
    path.write_bytes(whole + torn.encode())
    table = ResultsTable(path)
    assert [r["metric"] for r in table.rows] == ["a"]
    assert path.read_bytes() == whole + torn.encode()  # reading changes nothing
    table.append([{**ROW, "metric": "b", "value": 2.0}])
    assert [r["metric"] for r in ResultsTable(path).rows] == ["a", "b"]


@pytest.mark.parametrize(("suffix", "cut"), [(".jsonl", 1), (".csv", 2), (".csv", 1)])
def test_a_last_row_without_its_newline_is_kept(tmp_path, suffix, cut):
    """A complete row missing its newline (cut just before it, or between CSV's \\r and \\n, or
    saved so by an editor) is a row: kept, and the next row goes on a line of its own."""
    path = tmp_path / f"r{suffix}"
    ResultsTable(path).append([{**ROW, "metric": "a", "value": 1.0}])
    path.write_bytes(path.read_bytes()[:-cut])
    table = ResultsTable(path)
    assert [r["metric"] for r in table.rows] == ["a"]
    table.append([{**ROW, "metric": "b", "value": 2.0}])
    again = ResultsTable(path)
    assert [(r["metric"], r["value"]) for r in again.rows] == [("a", 1.0), ("b", 2.0)]
    assert path.read_bytes().endswith(b"\n") and b"\n\n" not in path.read_bytes()


def test_a_torn_csv_header_is_written_again(tmp_path):
    """A crash during the very first write can leave part of our header and nothing else."""
    path = tmp_path / "r.csv"
    path.write_text("run,dataset,N")
    table = ResultsTable(path)
    assert table.rows == []
    table.append([{**ROW, "metric": "a", "value": 1.0}])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(COLUMNS) and len(rows) == 2 and rows[1][COLUMNS.index("metric")] == "a"


def test_the_suffix_chooses_the_format_whatever_its_case(tmp_path):
    path = tmp_path / "R.CSV"
    ResultsTable(path).append([{**ROW, "metric": "a", "value": 1.0}])
    assert path.read_text().splitlines()[0] == HEADER  # CSV, not JSON lines in a .CSV file
    assert ResultsTable(path).rows[0]["value"] == 1.0


def test_a_table_that_cannot_be_written_is_refused_at_once(tmp_path):
    """Before any model is loaded, not at the first row minutes later."""
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(ValueError, match="folder.jsonl is not a file"):
        ResultsTable(tmp_path / "folder.jsonl")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"cannot be created, .*afile is not a folder"):
        ResultsTable(tmp_path / "afile" / "sub" / "r.jsonl")
    assert ResultsTable(tmp_path / "new" / "sub" / "r.jsonl").rows == []  # folders made on append


def test_a_csv_saved_by_a_spreadsheet_keeps_its_byte_order_mark(tmp_path):
    """Excel writes UTF-8 CSV with a byte order mark: its header still names run, metric, value."""
    path = tmp_path / "r.csv"
    ResultsTable(path).append([{**ROW, "metric": "a", "value": 1.0}])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    table = ResultsTable(path)
    assert table.has(ROW["run"], "a")
    table.append([{**ROW, "metric": "b", "value": 2.0}])
    assert [r["metric"] for r in ResultsTable(path).rows] == ["a", "b"]
