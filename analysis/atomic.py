"""Atomic file writes for everything analysis saves: tables, laws, downloaded testbeds.

The bytes go to a temporary file in the destination folder, which is then renamed over the
destination, so an interrupted write never leaves a truncated file and readers see either the old
file or the new one. The file gets the permissions that a plain ``open(path, "w")`` would give
(0o666 less the umask): ``tempfile`` creates private 0o600 files, which made every table that
``python -m analysis.reproduce`` wrote unreadable to the rest of a group sharing the results.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; create the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
