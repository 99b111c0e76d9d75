"""The results table: tidy rows (run, dataset, N, D, C, metric, value, ...) appended as computed.

JSONL (one object per line) or CSV, chosen by the file's suffix (``.jsonl`` or ``.csv``; any other
is refused, so that no file of another kind is ever written into). Every batch of rows is appended,
flushed and fsync'ed before the next computation starts, so a crash loses at most the metric
being computed. ``ResultsTable.done`` lists the (run, metric) pairs already present, which is how
evaluation resumes.

An existing file is appended to only if it is a results table: every line a row (JSONL), or a
header naming run, metric and value with rows of its shape (CSV). A last line without its newline
is the one thing a crash mid-write leaves: if it is a complete row it is kept (the newline is
added before the next append); if it is the beginning of one of our rows (a torn write) it is
reported and removed before the next append; anything else (a user's notes, another program's
output) makes the whole file refused, untouched.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

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
"""``n``: what the value is an average over: questions (tasks), or predicted tokens (held-out
losses: sequences x (seq_len - 1), the first token of each sequence only conditions);
``n_windowed``: questions among ``n`` whose answer is longer than the model's context and was
scored in windows (``evaluation.scorer``; empty for losses); ``limit``: the ``--limit`` in force
(empty: every question); ``source``: the file, folder or Hub id the data came from; ``model``: the
evaluated folder or Hub id; ``evaluated_at``: UTC time of the row."""

FORMATS = {".jsonl": "jsonl", ".csv": "csv"}

# Every row this module writes starts so (json.dumps of a dict whose first key is "run", whose
# value is a string), and every version of it has: a torn JSONL line of ours starts so too.
_JSON_ROW_START = '{"run": "'
# ``evaluated_at`` (the last column of every CSV header written) with each digit shown as 0:
# datetime.isoformat(timespec="seconds") in UTC.
_STAMP = "0000-00-00T00:00:00+00:00"
_CSV_TYPES = {"N": float, "D": float, "C": float, "value": float, "n": int, "n_windowed": int,
              "limit": int}  # fmt: skip


def _stamp_prefix(text: str) -> bool:
    """Whether ``text`` is the beginning (or the whole) of an ``evaluated_at`` stamp we write."""
    return len(text) <= len(_STAMP) and all(
        c.isdigit() if t == "0" else (c in "+-" if t == "+" else c == t)
        for c, t in zip(text, _STAMP[: len(text)], strict=True)
    )


def _written_here(header: list[str]) -> bool:
    """Whether a CSV header is one this module writes: COLUMNS, or those of an older version (a
    subsequence of them: columns were only ever added), from run to evaluated_at."""
    rest = iter(COLUMNS)
    return (
        header[:1] == ["run"]
        and header[-1:] == ["evaluated_at"]
        and all(column in rest for column in header)
    )


class ResultsTable:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        fmt = FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"{self.path}: a results table is a .jsonl or .csv file, not "
                f"{self.path.suffix or 'a file without a suffix'}; refusing to write into it"
            )
        self.format = fmt
        self._check_writable()
        self._complete_bytes: int | None = None  # set when the file ends in a torn line
        self._missing_newline = ""  # written before the next row: the last row lacks its newline
        self._csv_header: list[str] | None = None  # an existing CSV file's columns, kept on append
        self._warned: set[str] = set()  # columns already reported missing from that header
        self.rows: list[dict] = self._read() if self.path.exists() else []
        self.done: set[tuple[str, str]] = {(r["run"], r["metric"]) for r in self.rows}

    def _check_writable(self) -> None:
        """Fail now, before any model is loaded, rather than at the first row minutes later."""
        if self.path.exists():
            if not self.path.is_file():
                raise ValueError(
                    f"{self.path} is not a file: a results table is a .jsonl or .csv file"
                )
            if not os.access(self.path, os.R_OK | os.W_OK):
                raise ValueError(f"{self.path}: no permission to read and append to it")
            return
        folder = self.path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"{self.path}: cannot be created, {folder} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{self.path}: cannot be created, no permission to write in {folder}")

    def _refuse(self, where: str, why: str) -> ValueError:
        return ValueError(f"{where}: {why}: not a results table; refusing to append to it")

    # ------------------------------------------------------------------------------ reading
    def _read(self) -> list[dict]:
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read {self.path}: {err.strerror or err}") from None
        complete = raw.rfind(b"\n") + 1
        try:
            text = raw[:complete].decode("utf-8-sig")  # -sig: a spreadsheet's byte order mark
        except UnicodeDecodeError as err:
            raise self._refuse(str(self.path), f"not UTF-8 text (byte {err.start})") from None
        rows = self._parse(text)
        if complete == len(raw):
            return rows
        # The last line has no newline. It may be cut anywhere, even inside a UTF-8 character.
        last = raw[complete:].decode("utf-8", errors="replace")
        where = f"{self.path}:{text.count(chr(10)) + 1}"
        if self._is_complete_row(last, where):
            self._missing_newline = (
                "\n" if self.format == "jsonl" or last.endswith("\r") else "\r\n"
            )
            return self._parse(text + last)
        self._complete_bytes = complete
        logger.warning("%s: ignoring a torn last line (interrupted write): %r", where, last[:80])
        return rows

    def _parse(self, text: str) -> list[dict]:
        return self._read_csv(text) if self.format == "csv" else self._read_jsonl(text)

    def _read_jsonl(self, text: str) -> list[dict]:
        rows = []
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise self._refuse(f"{self.path}:{n}", "not a JSON row") from None
            if not isinstance(row, dict) or "run" not in row or "metric" not in row:
                raise self._refuse(f"{self.path}:{n}", "a row needs 'run' and 'metric'")
            rows.append(row)
        return rows

    def _read_csv(self, text: str) -> list[dict]:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next((cells for cells in reader if cells), None)
        if header is None:  # an empty file: written afresh
            return []
        self._csv_header = header
        missing = {"run", "metric", "value"} - set(header)
        if missing:
            raise self._refuse(str(self.path), f"the header lacks {sorted(missing)}")
        rows = []
        for cells in reader:
            if not cells:
                continue
            where = f"{self.path}:{reader.line_num}"
            if len(cells) != len(header):
                raise self._refuse(where, f"{len(cells)} cells under a header of {len(header)}")
            row = dict(zip(header, cells, strict=True))
            try:
                for key, kind in _CSV_TYPES.items():
                    if key in row:
                        row[key] = kind(row[key]) if row[key] != "" else None
            except ValueError as err:
                raise self._refuse(where, str(err)) from None
            rows.append(row)
        return rows

    def _is_complete_row(self, last: str, where: str) -> bool:
        """Judge a last line without newline: True for a complete row, False for the beginning of
        one of ours (torn by a crash mid-write); anything else refuses the file."""
        if not last.strip():
            return False  # trailing blanks: nothing to keep
        if self.format == "jsonl":
            try:
                row = json.loads(last)
            except json.JSONDecodeError:
                if last.startswith(_JSON_ROW_START) or _JSON_ROW_START.startswith(last):
                    return False
                raise self._refuse(
                    where,
                    f"its last line {last[:60]!r} is neither a JSON row nor the beginning "
                    "of one cut short by an interrupted write",
                ) from None
            if not isinstance(row, dict) or "run" not in row or "metric" not in row:
                raise self._refuse(where, "a row needs 'run' and 'metric'")
            return True
        header = ",".join(COLUMNS)
        if self._csv_header is None:  # the file's only line: our header, torn or whole
            if header.startswith(last.rstrip("\r")):
                return False
            raise self._refuse(
                where, f"its only line {last[:60]!r} is not a results table's header"
            )
        columns = self._csv_header
        shape = f"its last line {last[:60]!r} (no final newline)"
        if not _written_here(columns):
            # Not a header this module wrote: whether that line is a row of the file's owner, or
            # one of ours cut short, cannot be told; it is neither dropped nor taken.
            raise ValueError(
                f"{where}: {shape} may be a complete row or one cut short: end it with a newline "
                "if it is complete, or delete it; refusing to append to it until then"
            )
        cells = next(csv.reader([last]), [])
        if len(cells) > len(columns):
            raise self._refuse(where, f"{shape} has {len(cells)} cells, the header {len(columns)}")
        # Every cell but the last is whole; the last may have been cut mid-value.
        for column, cell in zip(columns[: len(cells) - 1], cells[:-1], strict=True):
            try:
                if column in _CSV_TYPES and cell != "":
                    _CSV_TYPES[column](cell)
            except ValueError:
                raise self._refuse(where, f"{shape} has {column}={cell!r}") from None
        if len(cells) < len(columns):
            return False
        if not _stamp_prefix(cells[-1]):
            raise self._refuse(where, f"{shape} has evaluated_at={cells[-1]!r}")
        return len(cells[-1]) == len(_STAMP)  # the stamp whole: the row is complete

    # ------------------------------------------------------------------------------ writing
    def has(self, run: str, metric: str) -> bool:
        return (run, metric) in self.done

    def append(self, rows: Iterable[dict]) -> None:
        """Append rows durably: written, flushed and fsync'ed when this returns."""
        rows = [self._complete(r) for r in rows]
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if self._complete_bytes is not None:  # drop the torn last line before appending
            with open(self.path, "r+b") as f:
                f.truncate(self._complete_bytes)
            self._complete_bytes = None
            fresh = self.path.stat().st_size == 0
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            if self._missing_newline:
                f.write(self._missing_newline)
                self._missing_newline = ""
            if self.format == "csv":
                # Appending to a file written with other columns keeps its header (a newer column
                # it lacks is left out, with a warning), so the rows stay aligned with it.
                header = list(COLUMNS) if fresh or not self._csv_header else self._csv_header
                dropped = {
                    k for r in rows for k, v in r.items() if k not in header and v is not None
                }
                if dropped - self._warned:
                    self._warned |= dropped
                    logger.warning("%s has no column %s; not written", self.path, sorted(dropped))
                writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
                if fresh:
                    writer.writeheader()
                    self._csv_header = header
                writer.writerows(rows)
            else:
                for row in rows:
                    f.write(json.dumps(row, allow_nan=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(rows)
        self.done.update((r["run"], r["metric"]) for r in rows)

    @staticmethod
    def _complete(row: dict) -> dict:
        missing = {"run", "metric", "value"} - set(row)
        if missing:
            raise ValueError(f"result row lacks {sorted(missing)}: {row}")
        value = row["value"]
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            logger.warning("non-finite value %r for %s / %s", value, row["run"], row["metric"])
        out = {c: row.get(c) for c in COLUMNS}
        out["evaluated_at"] = out["evaluated_at"] or datetime.now(timezone.utc).isoformat(
            timespec="seconds"
        )
        return out
