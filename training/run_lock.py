"""One trainer per run folder: an OS lock that dies with its process.

Two trainers in one run folder both ran (``metrics.jsonl`` held every step twice) or one
crashed on the other's temporary checkpoint. ``RunLock`` takes an exclusive ``flock`` on
``<run>/.lock`` for as long as the trainer runs. The kernel releases it when the process ends
however it ends, SIGKILL included, so a killed run never blocks its own resume; the file's
text (pid, host, start time) only serves the message that names the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another live process trains this run folder."""


class RunLock:
    """``with RunLock(run_dir):`` holds the folder's lock, or raises ``RunLockedError``, whose
    message ends with ``then``: what the refused caller does once the holder is gone (the
    trainer's ``--resume``; ``l2l study`` has none and is run again)."""

    def __init__(self, run_dir: str | os.PathLike, then: str = "resume with --resume"):
        self.path = Path(run_dir) / LOCK_NAME
        self.then = then
        self._handle = None

    def acquire(self) -> RunLock:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise RunLockedError(
                f"{self.path.parent} is being trained by another process ({holder}); wait for "
                f"it to finish or stop it, then {self.then}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "its pid is unknown"
