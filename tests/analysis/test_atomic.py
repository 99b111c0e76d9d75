"""analysis.atomic.write_atomic: whole files or none, with a plain file's permissions."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from analysis.atomic import write_atomic
from analysis.reproduce.report import write_csv


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_permissions_of_a_plain_write(tmp_path):
    """tempfile's files are 0o600: the reproduction tables were unreadable to anyone else."""
    old = os.umask(0o022)
    try:
        written = write_atomic(tmp_path / "sub" / "a.txt", "text")
        table = write_csv(pd.DataFrame({"x": [1, 2]}), tmp_path, "t.csv", ["x"])
    finally:
        os.umask(old)
    assert written.read_text() == "text" and _mode(written) == 0o644
    assert _mode(tmp_path / "t.csv") == 0o644 and list(table["x"]) == [1, 2]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "law.json", b"old")

    class Boom(str):
        def encode(self, *args, **kwargs):
            raise KeyboardInterrupt  # an interruption in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, Boom("new"))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["law.json"]


def test_the_bytes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    """A power cut after the rename must not leave an empty final.json (the trainer's finished
    test): the temporary file is fsync'ed first."""
    synced = []
    fsync = os.fsync

    def recording(fd):
        synced.append((tmp_path / "final.json").exists())
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    write_atomic(tmp_path / "final.json", "{}")
    assert synced == [False] and (tmp_path / "final.json").read_text() == "{}"
