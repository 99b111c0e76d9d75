"""The smoke study trained here, once per session: the end-to-end test checks every stage of it
(tests/l2l/test_study.py) and the slurm test compares the same study trained under slurm with it
(tests/l2l/test_slurm_study.py), so that the suite trains it locally only once."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class SmokeStudy:
    study: Path
    cmd: list[str]
    """the ``l2l study`` command that made it (run from ``cwd`` with ``env``)"""
    cwd: Path
    env: dict
    done: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> SmokeStudy:
    """``l2l study --preset smoke`` with the local launcher, in a folder of the session."""
    cwd = tmp_path_factory.mktemp("smoke-local")
    study = cwd / "smoke"
    cmd = [sys.executable, "-m", "l2l", "study", "--preset", "smoke", "--out", str(study)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return SmokeStudy(study=study, cmd=cmd, cwd=cwd, env=env, done=done)
