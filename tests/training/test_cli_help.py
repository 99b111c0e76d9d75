"""The command lines answer `--help` and argument errors in a fraction of a second: they must not
import torch or transformers (seconds on a small machine) before they have work to do."""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.training.conftest import run_subprocess

# Runs a module as `python -m` does and reports its exit status and the heavy modules it loaded.
PROBE = """
import json, runpy, sys
module, argv = sys.argv[1], sys.argv[2:]
sys.argv = [module, *argv]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exit:
    code = exit.code
heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""
# Generous: about 1 s here (2 cores); the import check below is the robust part.
LIMIT_S = 5.0


def probe(module: str, *argv: str) -> tuple[dict, float]:
    start = time.perf_counter()
    proc = run_subprocess([sys.executable, "-c", PROBE, module, *argv], check=False, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), elapsed


@pytest.mark.parametrize("module", ["training.sweep", "training.launch"])
def test_help_is_fast_and_imports_no_model_code(module):
    result, elapsed = probe(module, "--help")
    assert result == {"code": 0, "heavy": []}
    assert elapsed < LIMIT_S, f"{module} --help took {elapsed:.1f} s"


@pytest.mark.parametrize("module, argv", [
    ("training.sweep", ["--corpora", "pyhton-stdlib"]),
    ("training.sweep", ["--round-steps", "0"]),
    ("training.launch", ["missing_study", "--local"]),
])
def test_argument_errors_are_fast_and_import_no_model_code(module, argv):
    result, elapsed = probe(module, *argv)
    assert result == {"code": 2, "heavy": []}
    assert elapsed < LIMIT_S, f"{module} {' '.join(argv)} took {elapsed:.1f} s"


@pytest.mark.xfail(strict=True, reason="`python -m modeling_l2l.convert_olmo` imports the package "
                   "first, and modeling_l2l/__init__.py imports transformers and torch to register "
                   "the Auto classes (the module alone needs neither: test_convert_olmo); remove "
                   "this mark when the package imports them lazily")
def test_convert_olmo_help_is_fast_and_imports_no_model_code():
    result, elapsed = probe("modeling_l2l.convert_olmo", "--help")
    assert result == {"code": 0, "heavy": []}
    assert elapsed < LIMIT_S, f"convert_olmo --help took {elapsed:.1f} s"
