"""Run names of the released sweep: L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}."""

from __future__ import annotations

import subprocess
import sys

import pytest

from analysis.run_names import RunName, format_run_name, parse_run_name

DATASETS = [
    "fineweb-100b",
    "fineweb-edu-100b",
    "proof-pile-2",
    "slimpajama-chunk1",
    "smollm-corpus",
    "starcoder",
    "my_corpus_v2",
]


def test_issue_example():
    assert (
        format_run_name("starcoder", 1.1e8, 3.0e8, 2.0e17)
        == "L2L_starcoder_N1.1e08_D3.0e08_C2.0e17"
    )
    assert parse_run_name("L2L_starcoder_N1.1e08_D3.0e08_C2.0e17") == RunName(
        "starcoder", 1.1e8, 3.0e8, 2.0e17
    )


@pytest.mark.parametrize("dataset", DATASETS)
def test_round_trip(dataset):
    # the n = 8 model at the smallest budget: N = 57,950,720, C = 2e17, D = C / 6N
    N, C = 57_950_720, 2e17
    D = C / (6 * N)
    name = format_run_name(dataset, N, D, C)
    assert name == f"L2L_{dataset}_N5.8e07_D5.8e08_C2.0e17"
    parsed = parse_run_name(name)
    assert parsed.dataset == dataset
    assert (parsed.N, parsed.D, parsed.C) == (5.8e7, 5.8e8, 2e17)
    assert str(parsed) == name
    assert parse_run_name(str(parsed)) == parsed


def test_large_exponents_and_plus_sign():
    name = format_run_name("fineweb-edu-100b", 1.74e9, 9.6e10, 1e21)
    assert name == "L2L_fineweb-edu-100b_N1.7e09_D9.6e10_C1.0e21"
    # a name written with Python's default "e+" also parses
    assert parse_run_name("L2L_x_N1.7e+09_D9.6e+10_C1.0e+21").N == 1.7e9


def test_run_name_is_frozen():
    parsed = parse_run_name("L2L_starcoder_N1.1e08_D3.0e08_C2.0e17")
    with pytest.raises(AttributeError):
        parsed.N = 1.0


@pytest.mark.parametrize(
    "bad",
    [
        "starcoder_N1.1e08_D3.0e08_C2.0e17",
        "L2L_N1.1e08_D3.0e08_C2.0e17",
        "L2L_x_N1.1_D3.0e08_C2e17",
        "",
    ],
)
def test_bad_names_raise(bad):
    with pytest.raises(ValueError, match="not a loss-to-loss run name"):
        parse_run_name(bad)


def test_bad_values_raise():
    with pytest.raises(ValueError, match="dataset"):
        format_run_name("a/b", 1, 1, 1)
    with pytest.raises(ValueError, match="N must be positive"):
        format_run_name("x", -1, 1, 1)
    with pytest.raises(TypeError, match="C must be a number"):
        format_run_name("x", 1, 1, "2e17")


def test_module_needs_no_torch():
    # The file alone (without the package __init__, which registers the torch model) must load in
    # an interpreter where torch cannot be imported.
    import analysis.run_names as run_names

    code = (
        "import importlib.util, sys\n"
        "sys.modules['torch'] = None\n"
        f"spec = importlib.util.spec_from_file_location('run_names', {run_names.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['run_names'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(module.parse_run_name('L2L_a-b_N1.0e08_D1.0e09_C6.0e17').dataset)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "a-b"
