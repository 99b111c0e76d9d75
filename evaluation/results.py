"""The results table: tidy rows (run, dataset, N, D, C, metric, value, ...) appended as computed.

JSONL (one object per line) or CSV, chosen by the file's suffix (``.jsonl`` or ``.csv``; any other
is refused, so that no file of another kind is ever written into). Every batch of rows is appended,
flushed and fsync'ed before the next computation starts, so a crash loses at most the metric
being computed. ``ResultsTable.done`` lists the (run, metric) pairs already present, which is how
evaluation resumes.

This is the table's one writer; ``analysis.results_table`` is its one reader, which this writer
uses too. An existing file is appended to only if that reader takes it for a results table (every
line a row, or a header naming run, metric and value with rows of its shape). A last line without
its newline is the one thing a crash mid-write leaves: a complete row is kept (the newline is
added before the next append); the beginning of one of our rows (a torn write) is reported and
removed before the next append; anything else (a user's notes, another program's output) makes
the whole file refused, untouched.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from analysis.results_table import COLUMNS, NotAResultsTable, read_rows, table_format

logger = logging.getLogger(__name__)

__all__ = ["COLUMNS", "ResultsTable"]  # COLUMNS: the reader's, the one schema


def writing(path: str | Path):
    """``with writing(path):`` one evaluation at a time appends to a results table: a second one
    would compute the same missing metrics and append them again (duplicate rows). The lock is
    a hidden sibling of the table, held until the evaluation ends (or its process dies)."""
    from training.run_lock import FileLock, LockHeldError

    path = Path(path)

    class TableLock(FileLock):
        def refusal(self, holder: str) -> LockHeldError:
            return LockHeldError(f"another evaluation is writing {path} ({holder}); wait for it "
                                 "to finish, or write to another --out")

    return TableLock(path.with_name(f".{path.name}.lock"))


class ResultsTable:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.format = table_format(self.path)
        except ValueError as err:
            raise ValueError(f"{err}; refusing to write into it") from None
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

    def _read(self) -> list[dict]:
        try:
            table = read_rows(self.path)
        except NotAResultsTable as err:
            raise ValueError(f"{err}; refusing to append to it") from None
        if table.torn:
            self._complete_bytes = table.complete
        self._missing_newline = table.missing_newline
        self._csv_header = table.header
        return table.rows

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
