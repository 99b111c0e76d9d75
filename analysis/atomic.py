"""Atomic file writes, for every package: tables, laws, downloaded testbeds, a study's plan, a
run's ``final.json`` and its metrics log when a resume rewrites it.

The bytes go to a temporary file in the destination folder, are flushed to the disk (fsync), and
the file is then renamed over the destination, so an interrupted write (a crash, a kill, a power
cut) never leaves a truncated file and readers see either the old file or the new one. The file
gets the permissions that a plain ``open(path, "w")`` would give (0o666 less the umask):
``tempfile`` creates private 0o600 files, which made every table that ``python -m
analysis.reproduce`` wrote unreadable to the rest of a group sharing the results.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def plain_mode(*, directory: bool = False) -> int:
    """The permissions a plain ``open(path, "w")`` (or ``mkdir``) gives: 0o666 (0o777) less the
    umask; what ``tempfile``'s private files and folders are given before they are renamed into
    place."""
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically and durably; create the folder;
    return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, plain_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
