"""``python -m training.worker``: one process that trains runs one after another, each as
``python -m training --config CONFIG --resume`` would, without paying for a new interpreter,
torch and transformers every time (seconds per run, most of a small run's wall time).

The launcher (``training.launch``'s local pool) writes one request per line on the worker's
standard input, ``CONFIG<TAB>LOG``, and reads one answer per line on its standard output,
``done<TAB>EXIT_STATUS``. While a run trains, everything it prints (both streams, Python's and
the libraries' own) goes to its log file, appended, as a run process' output would. A run that
raises is a failed run with the exit status ``python -m training`` gives it, and the worker goes
on with the next; a run that kills the process (a segfault, the kernel's OOM killer) ends the
worker, which the launcher sees as end of file: it reports that run from its log and starts a
new worker for the rest. Each run seeds its own random state, as in a process of its own (the
tests check that the weights are the same).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

PROTOCOL_DONE = "done"


@contextlib.contextmanager
def _output_to(log_path: str):
    """File descriptors 1 and 2 (Python's streams and the C libraries' writes) to the log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def train_one(config: str, log: str) -> int:
    """``python -m training --config CONFIG --resume``, its output appended to ``log``; the exit
    status that command would have."""
    from training.__main__ import main as train_main

    with _output_to(log):
        try:
            return train_main(["--config", config, "--resume"])
        except SystemExit as exit:  # argparse and the command's own exits
            return exit.code if isinstance(exit.code, int) else 1
        except Exception:  # a run's crash is its own: the next run still trains
            traceback.print_exc()
            return 1


def main() -> int:
    # Answers go to the original standard output; a run's output never reaches it.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        if not line.strip():
            continue
        config, _, log = line.rstrip("\n").partition("\t")
        code = train_one(config, log)
        answers.write(f"{PROTOCOL_DONE}\t{code}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
