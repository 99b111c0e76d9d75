"""The command lines answer `--help` and argument errors in a fraction of a second: they must not
import torch or transformers (seconds on a small machine) before they have work to do."""

from __future__ import annotations

import json
import os
import subprocess
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


def heavy_imports_of(argv: list[str]) -> tuple[subprocess.CompletedProcess, list[str], float]:
    """Run a real command line (``python -m`` sets ``sys.argv[0]`` to ``"-m"`` while it locates
    the module, which runpy in PROBE does not) and list the heavy modules ``-X importtime`` saw."""
    start = time.perf_counter()
    proc = run_subprocess(argv, check=False, timeout=120,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    elapsed = time.perf_counter() - start
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    return proc, sorted(imported & {"torch", "transformers"}), elapsed


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "modeling_l2l.convert_olmo", "--help"],
    [sys.executable, "-m", "l2l", "convert", "--help"],
])
def test_convert_olmo_help_is_fast_and_imports_no_model_code(argv):
    proc, heavy, elapsed = heavy_imports_of(argv)
    assert proc.returncode == 0 and "usage: python -m modeling_l2l.convert_olmo" in proc.stdout
    assert heavy == []
    assert elapsed < LIMIT_S, f"{' '.join(argv[1:])} took {elapsed:.1f} s"


def test_the_package_still_registers_its_model_when_imported_by_a_command():
    """The lazy path is only for the package's own `-m` modules: `python -m training` (or any
    program) importing modeling_l2l gets the Auto classes registered at import, as before."""
    script = ("import modeling_l2l, transformers; "
              "print(transformers.AutoConfig.for_model('l2l').__class__.__name__)")
    proc = run_subprocess([sys.executable, "-c", script], timeout=120)
    assert proc.stdout.strip() == "L2LConfig"


def test_a_lazily_located_package_registers_its_model_on_first_use():
    """Under `python -m modeling_l2l.X` (the state below is what Python sets while it locates X)
    the package imports nothing heavy; its classes then come through the package's __getattr__,
    which registers them with the Auto classes and for save_pretrained's code files."""
    script = (
        "import sys\n"
        "sys.argv, sys.orig_argv = ['-m'], [sys.executable, '-m', 'modeling_l2l.convert_olmo']\n"
        "import modeling_l2l\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "from modeling_l2l import L2LConfig\n"
        "import transformers\n"
        "print(type(transformers.AutoConfig.for_model('l2l')).__name__, L2LConfig._auto_class)\n"
    )
    proc = run_subprocess([sys.executable, "-c", script], timeout=120)
    assert proc.stdout.split() == ["L2LConfig", "AutoConfig"]
