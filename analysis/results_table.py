"""The results table, the one hand-off between evaluation and analysis: read, checked, widened.

``evaluation.results.ResultsTable`` writes it, one tidy row per (run, metric), appended and
fsync'ed as each metric is computed; this module is its one reader, used by that writer (to resume
and to find a torn last line), by ``l2l fit`` and ``l2l release``, by ``python -m analysis fit``
and, for the widening, by the papers' testbeds. It imports without torch.

- ``read_rows(path)``: the rows of a ``.jsonl`` or ``.csv`` table, each a dict, and how the file
  ends. A last line without its newline is what a crash mid-write leaves: a complete row is kept;
  the beginning of one of our rows (a torn write) is left out, with a warning; anything else (a
  user's notes, another program's output) makes the file refused (``NotAResultsTable``).
- ``check_results(frame)``: a tidy frame checked: the same row twice is kept once; a (run, metric)
  given twice with different values is an error naming both; values that are not finite (a
  diverged run's NaN loss) are kept and reported, run by run.
- ``read_results(path)``: ``read_rows`` then ``check_results``, as a data frame.
- ``wide(tidy, metrics)``: one row per run (per checkpoint where a run has several), one column
  per metric, the coordinates kept.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

COLUMNS = (
    "run",
    "dataset",
    "N",
    "D",
    "C",
    "metric",
    "value",
    "n",
    "n_windowed",
    "limit",
    "source",
    "model",
    "evaluated_at",
)
"""The columns evaluation writes. ``n``: what the value is an average over: questions (tasks), or
predicted tokens (held-out losses: sequences x (seq_len - 1), the first token of each sequence
only conditions); ``n_windowed``: questions among ``n`` whose answer is longer than the model's
context and was scored in windows (``evaluation.scorer``; empty for losses); ``limit``: the
``--limit`` in force (empty: every question); ``source``: the file, folder or Hub id the data came
from; ``model``: the evaluated folder or Hub id; ``evaluated_at``: UTC time of the row."""

COORDINATES = ("run", "dataset", "N", "D", "C", "M")
"""What a value is the value of: the run, its corpus, parameters, tokens, FLOPs and tokens per
parameter (``M``: the papers' testbeds only). Rows are widened on those a table has."""

FORMATS = {".jsonl": "jsonl", ".csv": "csv"}
REQUIRED = ("run", "metric", "value")

# Every row evaluation writes starts so (json.dumps of a dict whose first key is "run", whose
# value is a string), and every version of it has: a torn JSONL line of ours starts so too.
_JSON_ROW_START = '{"run": "'
# ``evaluated_at`` (the last column of every CSV header written) with each digit shown as 0:
# datetime.isoformat(timespec="seconds") in UTC.
_STAMP = "0000-00-00T00:00:00+00:00"
_CSV_TYPES = {"N": float, "D": float, "C": float, "value": float, "n": int, "n_windowed": int,
              "limit": int}  # fmt: skip


class NotAResultsTable(ValueError):
    """The file is not a results table (or not one this module can tell complete), named with
    the line and the reason."""


@dataclass
class ResultsFile:
    """A results table file as read: its rows and how it ends."""

    path: Path
    format: str
    """``jsonl`` or ``csv``"""
    rows: list[dict]
    """Every complete row, in file order (a CSV's numeric cells as numbers, empty ones None)."""
    header: list[str] | None
    """A CSV file's columns (None for JSONL, or a CSV without a complete header)."""
    size: int
    """The file's size in bytes, as read."""
    complete: int
    """How many of those bytes hold complete rows; the rest (``torn``) is a torn last line."""
    missing_newline: str
    """The newline that the last, complete row lacks ("" when it has one): what a writer must
    write before appending."""
    data: bytes
    """The complete rows' bytes, each line ending in its newline."""

    @property
    def torn(self) -> bool:
        return self.complete < self.size


def table_format(path: str | Path) -> str:
    """``jsonl`` or ``csv`` by the file's suffix, whatever its case; ``ValueError`` for any other,
    so that no file of another kind is ever taken for (or written as) a results table."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: a results table is a .jsonl or .csv file, not "
            f"{path.suffix or 'a file without a suffix'}"
        )
    return fmt


def is_results_file(path: str | Path) -> bool:
    """Whether ``path`` is a results table that evaluation writes, by its suffix and first line (a
    JSON row with run and metric, or a CSV header of evaluation's columns), without reading it
    all. Other tidy tables (a user's CSV with metric and value columns) go to ``check_results``
    from whatever reads them."""
    try:
        fmt = table_format(path)
        with open(path, encoding="utf-8-sig", newline="") as handle:
            first = next((line for line in handle if line.strip()), "")
    except (ValueError, OSError):  # UnicodeDecodeError is a ValueError
        return False
    if fmt == "csv":
        return _written_here(next(csv.reader([first.rstrip("\r\n")]), []))
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return first.startswith(_JSON_ROW_START)  # a table of one torn row
    return isinstance(row, dict) and {"run", "metric"} <= row.keys()


def read_rows(path: str | Path) -> ResultsFile:
    """The rows of the results table at ``path`` (see the module's docstring for the rules).

    Raises ``NotAResultsTable`` naming the line and the reason for a file that is not one,
    ``ValueError`` for a suffix other than .jsonl and .csv."""
    path = Path(path)
    fmt = table_format(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise NotAResultsTable(f"cannot read {path}: {err.strerror or err}") from None
    complete = raw.rfind(b"\n") + 1
    try:
        text = raw[:complete].decode("utf-8-sig")  # -sig: a spreadsheet's byte order mark
    except UnicodeDecodeError as err:
        raise _refuse(str(path), f"not UTF-8 text (byte {err.start})") from None
    rows, header = _parse(path, fmt, text)
    if complete == len(raw):
        return ResultsFile(path, fmt, rows, header, len(raw), complete, "", raw)
    # The last line has no newline. It may be cut anywhere, even inside a UTF-8 character.
    last = raw[complete:].decode("utf-8", errors="replace")
    where = f"{path}:{text.count(chr(10)) + 1}"
    if _is_complete_row(fmt, header, last, where):
        newline = "\n" if fmt == "jsonl" or last.endswith("\r") else "\r\n"
        rows, header = _parse(path, fmt, text + last)
        return ResultsFile(path, fmt, rows, header, len(raw), len(raw), newline,
                           raw + newline.encode())  # fmt: skip
    logger.warning("%s: leaving out a torn last line (interrupted write): %r", where, last[:80])
    return ResultsFile(path, fmt, rows, header, len(raw), complete, "", raw[:complete])


def _refuse(where: str, why: str) -> NotAResultsTable:
    return NotAResultsTable(f"{where}: {why}: not a results table")


def _parse(path: Path, fmt: str, text: str) -> tuple[list[dict], list[str] | None]:
    return _parse_csv(path, text) if fmt == "csv" else (_parse_jsonl(path, text), None)


def _parse_jsonl(path: Path, text: str) -> list[dict]:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise _refuse(f"{path}:{n}", "not a JSON row") from None
        if not isinstance(row, dict) or "run" not in row or "metric" not in row:
            raise _refuse(f"{path}:{n}", "a row needs 'run' and 'metric'")
        rows.append(row)
    return rows


def _parse_csv(path: Path, text: str) -> tuple[list[dict], list[str] | None]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next((cells for cells in reader if cells), None)
    if header is None:  # an empty file
        return [], None
    missing = set(REQUIRED) - set(header)
    if missing:
        raise _refuse(str(path), f"the header lacks {sorted(missing)}")
    rows = []
    for cells in reader:
        if not cells:
            continue
        where = f"{path}:{reader.line_num}"
        if len(cells) != len(header):
            raise _refuse(where, f"{len(cells)} cells under a header of {len(header)}")
        row = dict(zip(header, cells, strict=True))
        try:
            for key, kind in _CSV_TYPES.items():
                if key in row:
                    row[key] = kind(row[key]) if row[key] != "" else None
        except ValueError as err:
            raise _refuse(where, str(err)) from None
        rows.append(row)
    return rows, header


def _stamp_prefix(text: str) -> bool:
    """Whether ``text`` is the beginning (or the whole) of an ``evaluated_at`` stamp we write."""
    return len(text) <= len(_STAMP) and all(
        c.isdigit() if t == "0" else (c in "+-" if t == "+" else c == t)
        for c, t in zip(text, _STAMP[: len(text)], strict=True)
    )


def _written_here(header: list[str]) -> bool:
    """Whether a CSV header is one evaluation writes: COLUMNS, or those of an older version (a
    subsequence of them: columns were only ever added), from run to evaluated_at."""
    rest = iter(COLUMNS)
    return (
        header[:1] == ["run"]
        and header[-1:] == ["evaluated_at"]
        and all(column in rest for column in header)
    )


def _is_complete_row(fmt: str, header: list[str] | None, last: str, where: str) -> bool:
    """Judge a last line without newline: True for a complete row, False for the beginning of one
    of ours (torn by a crash mid-write); anything else refuses the file."""
    if not last.strip():
        return False  # trailing blanks: nothing to keep
    if fmt == "jsonl":
        try:
            row = json.loads(last)
        except json.JSONDecodeError:
            if last.startswith(_JSON_ROW_START) or _JSON_ROW_START.startswith(last):
                return False
            raise _refuse(
                where,
                f"its last line {last[:60]!r} is neither a JSON row nor the beginning "
                "of one cut short by an interrupted write",
            ) from None
        if not isinstance(row, dict) or "run" not in row or "metric" not in row:
            raise _refuse(where, "a row needs 'run' and 'metric'")
        return True
    if header is None:  # the file's only line: our header, torn or whole
        if ",".join(COLUMNS).startswith(last.rstrip("\r")):
            return False
        raise _refuse(where, f"its only line {last[:60]!r} is not a results table's header")
    shape = f"its last line {last[:60]!r} (no final newline)"
    if not _written_here(header):
        # Not a header evaluation wrote: whether that line is a row of the file's owner, or one
        # of ours cut short, cannot be told; it is neither dropped nor taken.
        raise NotAResultsTable(
            f"{where}: {shape} may be a complete row or one cut short: end it with a newline "
            "if it is complete, or delete it"
        )
    cells = next(csv.reader([last]), [])
    if len(cells) > len(header):
        raise _refuse(where, f"{shape} has {len(cells)} cells, the header {len(header)}")
    # Every cell but the last is whole; the last may have been cut mid-value.
    for column, cell in zip(header[: len(cells) - 1], cells[:-1], strict=True):
        try:
            if column in _CSV_TYPES and cell != "":
                _CSV_TYPES[column](cell)
        except ValueError:
            raise _refuse(where, f"{shape} has {column}={cell!r}") from None
    if len(cells) < len(header):
        return False
    if not _stamp_prefix(cells[-1]):
        raise _refuse(where, f"{shape} has evaluated_at={cells[-1]!r}")
    return len(cells[-1]) == len(_STAMP)  # the stamp whole: the row is complete


# ---------------------------------------------------------------------------- checking


def collapse_duplicates(frame: pd.DataFrame, *, origin: str) -> pd.DataFrame:
    """``frame`` with each (coordinates, metric) cell once: the same value given twice is kept
    once (the first row); two different values are a ``ValueError`` naming the run, the metric
    and both values. The coordinates are those of ``COORDINATES`` the frame has, so that a run's
    checkpoints (one ``D`` each) are cells of their own."""
    key = [c for c in COORDINATES if c in frame.columns] + ["metric"]
    repeated = frame.duplicated(subset=key, keep=False)
    if not repeated.any():
        return frame
    rows = frame[repeated]
    # repr: two NaN are the same value (a diverged run evaluated twice), 1 and 1.0 too.
    same = rows["value"].astype(float).map(repr)
    distinct = same.groupby([rows[c] for c in key], sort=False, dropna=False).transform("nunique")
    clashing = rows[distinct.to_numpy() > 1]
    if len(clashing):
        run, metric = clashing.iloc[0]["run"], clashing.iloc[0]["metric"]
        values = clashing.loc[(clashing["run"] == run) & (clashing["metric"] == metric), "value"]
        n_cells = len(clashing.drop_duplicates(subset=key))
        raise ValueError(
            f"{origin}: {n_cells} (run, metric) rows appear twice with different values, e.g. "
            f"run {run!r}, metric {metric!r}: {_values(values.tolist())}; a table holds one "
            "value per run and metric: delete the row that is wrong (or evaluate into a new "
            "table)"
        )
    return frame[~frame.duplicated(subset=key, keep="first")]


def _values(values: list) -> str:
    shown = [repr(v) for v in values[:3]]
    return " and ".join(shown) + (f" and {len(values) - 3} more" if len(values) > 3 else "")


def check_results(frame: pd.DataFrame, *, origin: str) -> pd.DataFrame:
    """A tidy results frame checked: run, metric and value present, values numbers (floats;
    JSON null is NaN), duplicates collapsed (``collapse_duplicates``), values that are not finite
    reported (a warning naming the runs and metrics: they stay in the table, so that what was
    measured is not hidden, and fitting code must leave them out). The index is kept: row i of
    a frame made from ``ResultsFile.rows`` is its row i."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{origin}: not a results table, missing column(s) {missing}")
    value = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    text = value.isna() & frame["value"].notna()
    if text.any():
        first = frame.loc[text].iloc[0]
        raise ValueError(
            f"{origin}: {int(text.sum())} value(s) are not numbers, e.g. run {first['run']!r}, "
            f"metric {first['metric']!r}: {first['value']!r}"
        )
    frame = collapse_duplicates(frame.assign(value=value), origin=origin)
    bad = ~np.isfinite(frame["value"].to_numpy())
    if bad.any():
        named = [f"{r} ({m})" for r, m in frame.loc[bad, ["run", "metric"]].itertuples(index=False)]
        more = f" and {len(named) - 5} more" if len(named) > 5 else ""
        logger.warning(
            "%s: %d value(s) are not finite numbers (a diverged run, a failed evaluation): %s%s",
            origin, len(named), ", ".join(named[:5]), more,
        )  # fmt: skip
    return frame


def read_results(path: str | Path) -> pd.DataFrame:
    """The results table at ``path`` as a checked tidy frame (``read_rows``, ``check_results``);
    a ``ValueError`` when it holds no row."""
    table = read_rows(path)
    if not table.rows:
        raise ValueError(f"{path} holds no results")
    return check_results(pd.DataFrame(table.rows), origin=str(path))


# ---------------------------------------------------------------------------- widening


def wide(table: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per evaluated checkpoint, one column per metric, the coordinates kept (those of
    ``COORDINATES`` the table has; other columns, such as ``n`` or ``source``, are dropped).

    Rows are sorted by dataset, run and D, so a run's checkpoints come in training order.
    ``metrics`` restricts (and orders) the metric columns; an absent one is a ``ValueError``
    naming it (as every other bad input: the command lines report it as an error, not a trace).
    Duplicated cells are ``check_results``' to resolve first: here they are an error."""
    index = [c for c in COORDINATES if c in table.columns]
    if "run" not in index:
        raise ValueError("a tidy table (metric, value columns) needs a 'run' column")
    if metrics is not None:
        metrics = list(metrics)
        absent = sorted(set(metrics) - set(table["metric"].unique()))
        if absent:
            raise ValueError(f"metric(s) not in the table: {absent}")
        table = table[table["metric"].isin(metrics)]
    frame = table.pivot(index=index, columns="metric", values="value")
    frame.columns.name = None
    order = [c for c in ("dataset", "run", "D") if c in index]
    frame = frame.reset_index().sort_values(order, kind="stable")
    if metrics is not None:
        frame = frame[[*index, *metrics]]
    return frame.reset_index(drop=True)
