"""File locks that die with their process: one trainer per run folder, one builder per folder.

Two trainers in one run folder both ran (``metrics.jsonl`` held every step twice) or one
crashed on the other's temporary checkpoint. ``FileLock`` takes an exclusive ``flock`` on a file
for as long as its holder runs. The kernel releases it when the process ends however it ends,
SIGKILL included, so a killed process never blocks its own resume; the file's text (pid, host,
start time) only serves the message that names the holder. Its users:

- ``RunLock``: ``<run>/.lock``, held by the trainer of the run (and by ``l2l study`` on the
  study folder); a second one is refused (``RunLockedError``);
- ``training.data``: the shards of one corpus are built by one process while the others wait;
- ``l2l.release``: one build of a release folder at a time.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"


class LockHeldError(RuntimeError):
    """Another live process holds the lock."""


class FileLock:
    """``with FileLock(path):`` holds an exclusive lock on ``path`` (created if needed), or raises
    ``refusal(holder)`` at once when another process holds it; ``wait=True`` waits for it instead.
    """

    def __init__(self, path: str | os.PathLike, *, wait: bool = False):
        self.path = Path(path)
        self.wait = wait
        self._handle = None

    def refusal(self, holder: str) -> Exception:
        """The error raised when another process holds the lock; ``holder`` names it."""
        return LockHeldError(f"{self.path} is held by another process ({holder})")

    def acquire(self) -> FileLock:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise self.refusal(holder) from None
        except BaseException:  # Ctrl-C while waiting
            handle.close()
            raise
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

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunLockedError(LockHeldError):
    """Another live process trains this run folder."""


class RunLock(FileLock):
    """``with RunLock(run_dir):`` holds the folder's lock, or raises ``RunLockedError``, whose
    message ends with ``then``: what the refused caller does once the holder is gone (the
    trainer's ``--resume``; ``l2l study`` has none and is run again)."""

    def __init__(self, run_dir: str | os.PathLike, then: str = "resume with --resume"):
        super().__init__(Path(run_dir) / LOCK_NAME)
        self.then = then

    def refusal(self, holder: str) -> RunLockedError:
        return RunLockedError(
            f"{self.path.parent} is being trained by another process ({holder}); wait for "
            f"it to finish or stop it, then {self.then}"
        )


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "its pid is unknown"
