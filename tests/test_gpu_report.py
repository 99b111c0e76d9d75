"""benchmarks/gpu_report.py on synthetic inputs of gpu_check.sh (all there; some missing, cut off
or failed), and the CPU side of the GPU options of bench_eval.py and bench_model.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from modeling_l2l import L2LForCausalLM
from tests.modeling.conftest import tiny_config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CONTRACT = {"device", "date", "versions", "mfu", "olmo2_mfu", "scorer_speedup"}  # issue 13


def load(name: str):
    """A benchmark script as a module (benchmarks/ is no package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


gpu_report = load("gpu_report")

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
 <testcase classname="tests.modeling.test_gpu" name="test_sdpa"/>
 <testcase classname="tests.modeling.test_gpu" name="test_mfu"/>
 <testcase classname="tests.modeling.test_gpu" name="test_flash"><skipped message="no flash"/></testcase>
 <testcase classname="tests.training.test_gpu" name="test_bf16"><failure message="boom"/></testcase>
</testsuite></testsuites>
"""


def model_json(mfu: dict[str, dict[str, float]]) -> dict:
    """bench_model.py --json's layout: models -> label -> n -> measurements."""
    return {
        "device": "NVIDIA H200",
        "peak_flops": 989e12,
        "date": "2027-01-02T03:04:05+00:00",
        "models": {
            label: {
                n: {"mfu": value, "tokens_per_s": 1e5 * value, "batch_size": 8}
                for n, value in by_n.items()
            }
            for label, by_n in mfu.items()
        },
    }


def eval_row(workload: str, speedup: float) -> dict:
    return {
        "workload": workload,
        "source": "synthetic",
        "requests": 800,
        "ours_requests_per_s": 4000.0,
        "hflm_requests_per_s": 4000.0 / speedup,
        "hflm_best": "hflm_bs32",
        "speedup": speedup,
        "bare_over_ours": 0.8,
        "max_abs_logprob_diff": 3e-5,
        "greedy_agreement": 1.0,
    }


def write_inputs(folder: Path) -> Path:
    """Every input of a complete gpu_check.sh run."""
    folder.mkdir()
    (folder / "versions.json").write_text(
        json.dumps({
            "date": "2027-01-02T03:00:00+00:00",
            "versions": {"python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0",
                         "transformers": "5.24.0", "accelerate": "1.15.0", "lm_eval": "0.4.13"},
            "below_declared_floor": {"torch": "2.11.0+cu130 < 2.13"},
            "device": "NVIDIA H200",
            "device_count": 1,
            "peak_flops": 989e12,
        })
    )  # fmt: skip
    (folder / "nvidia_smi.csv").write_text("NVIDIA H200, 580.159.04, 143771 MiB\n")
    steps = ["install", "nvidia_smi", "versions", "bench_model", "gpu_tests", "bench_eval"]
    steps += [f"bench_train_n{n}" for n in (32, 16, 8)] + ["data", "multi_gpu"]
    (folder / "steps.tsv").write_text("".join(f"{name}\t0\t12\t100\n" for name in steps))
    (folder / "gpu_tests.xml").write_text(JUNIT)
    mfu = {"L2L": {"8": 0.30, "16": 0.40, "32": 0.46}, "Olmo2": {"8": 0.25, "16": 0.35, "32": 0.40}}
    (folder / "bench_model.json").write_text(json.dumps(model_json(mfu)))
    for n, value in (("8", 0.28), ("16", 0.38), ("32", 0.44)):
        row = {"n": int(n), "micro_batch": 16, "tokens_per_s": 1e5, "mfu": value}
        (folder / f"bench_train_n{n}.json").write_text(json.dumps({"gpu": [row]}))
    rows = [eval_row("arc_easy", 9.0), eval_row("arc_easy_rc", 20.0), eval_row("hellaswag", 4.5)]
    (folder / "bench_eval.json").write_text(
        json.dumps({"meta": {"model": "depth 4", "device": "cuda"}, "results": rows})
    )
    data = {"pipeline_tokens_written_per_s": 2.5e6, "ratio_pipeline_vs_tokenizer": 0.97}
    (folder / "data.json").write_text(json.dumps({"data": data}))
    (folder / "multi_gpu.txt").write_text("single GPU: skipped\n")
    return folder


def report(folder: Path, tmp_path: Path) -> tuple[dict, str]:
    out, md = tmp_path / "gpu_results.json", tmp_path / "gpu_report.md"
    gpu_report.main(["report", str(folder), "--json", str(out), "--markdown", str(md)])
    return json.loads(out.read_text()), md.read_text()


def test_complete_inputs_fill_every_key(tmp_path):
    results, text = report(write_inputs(tmp_path / "in"), tmp_path)
    assert CONTRACT <= set(results)
    assert results["device"] == "NVIDIA H200"
    assert results["date"] == "2027-01-02T03:00:00+00:00"  # the run's, not the report's
    assert results["versions"]["torch"] == "2.11.0+cu130"
    assert results["versions"]["driver"] == "580.159.04"
    assert results["mfu"] == {"8": 0.30, "16": 0.40, "32": 0.46}
    assert results["olmo2_mfu"] == {"8": 0.25, "16": 0.35, "32": 0.40}
    assert results["trainer_mfu"] == {"8": 0.28, "16": 0.38, "32": 0.44}
    assert results["scorer_speedup"] == {"arc_easy": 9.0, "arc_easy_rc": 20.0, "hellaswag": 4.5}
    assert (results["data_tokens_per_s"], results["data_vs_tokenizer"]) == (2.5e6, 0.97)
    assert "Data pipeline (tokenise + pack + write): 2,500,000 tokens/s, 0.97x" in text
    assert results["mfu_target"] == {"n": 32, "mfu": 0.45, "peak_flops": 989e12, "met": True}
    tests = results["gpu_tests"]
    assert (tests["passed"], tests["failed"], tests["errors"], tests["skipped"]) == (2, 1, 0, 1)
    assert tests["not_passed"] == ["tests.training.test_gpu::test_bf16"]
    assert all(step["status"] == "ok" and "input" not in step for step in results["steps"].values())
    assert "| 32 | 46.0% | 40.0% | 1.15x | 44.0% | >= 45% |" in text
    assert "n = 32: **met**" in text
    assert "below the declared floor: 2.11.0+cu130 < 2.13" in text
    assert "(`bench_eval.py --device cuda`)" in text
    assert "| hellaswag | synthetic | 4,000 | 889 (hflm_bs32) | 4.5x | 0.80 | 3.0e-05 |" in text
    assert (
        "2 passed, 1 failed, 0 errors, 1 skipped; not passed: tests.training.test_gpu::test_bf16"
        in text
    )
    assert "Steps without a full result" not in text


def test_failed_and_cut_off_steps_give_nulls_and_say_why(tmp_path):
    folder = write_inputs(tmp_path / "in")
    # bench_model cut off by its timeout after n = 32 of L2L (it rewrites its JSON as it goes)
    (folder / "bench_model.json").write_text(json.dumps(model_json({"L2L": {"32": 0.41}})))
    (folder / "bench_eval.json").unlink()
    (folder / "bench_train_n16.json").write_text('{"gpu": [{"n": 16, "mf')  # half-written
    (folder / "bench_train_n8.json").unlink()
    (folder / "gpu_tests.xml").write_text("<testsuites><testsuite")  # killed while writing
    (folder / "steps.tsv").write_text(
        "bench_model\t124\t200\t200\nbench_eval\t1\t30\t90\n"
        "bench_train_n8\tskipped: 9 s left\t0\t9\n"
    )
    results, text = report(folder, tmp_path)
    assert CONTRACT <= set(results)
    assert results["mfu"] == {"8": None, "16": None, "32": 0.41}
    assert results["olmo2_mfu"] == {"8": None, "16": None, "32": None}
    assert results["scorer_speedup"] == {"arc_easy": None, "arc_easy_rc": None, "hellaswag": None}
    assert results["trainer_mfu"] == {"8": None, "16": None, "32": 0.44}
    assert results["mfu_target"]["met"] is False
    assert results["gpu_tests"] is None
    steps = results["steps"]
    assert steps["bench_model"] == {"exit_status": 124, "status": "timed out after 200 s",
                                    "seconds": 200.0, "limit_s": 200}  # fmt: skip
    assert steps["bench_eval"]["status"] == "failed: exit 1"
    assert steps["bench_eval"]["input"] == "bench_eval.json missing"
    assert steps["bench_train_n8"]["exit_status"] is None
    assert steps["bench_train_n8"]["status"] == "skipped: 9 s left"
    assert "unreadable" in steps["bench_train_n16"]["input"]
    assert "unreadable" in steps["gpu_tests"]["input"]
    assert "| 8 | not measured | not measured | - | not measured |  |" in text
    assert "n = 32: **missed**" in text
    assert "Scorer against lm-eval's HFLM: not measured." in text
    assert "GPU tests (`pytest -m gpu`): no result." in text
    assert "bench_model (timed out after 200 s)" in text


def test_an_empty_folder_gives_a_report_of_nulls(tmp_path):
    (tmp_path / "in").mkdir()
    results, text = report(tmp_path / "in", tmp_path)
    assert CONTRACT <= set(results)
    assert results["device"] is None and results["versions"] == {"driver": None}
    assert set(results["mfu"].values()) == {None}
    assert results["mfu_target"]["met"] is None
    assert results["data_tokens_per_s"] is None
    for step in ("versions", "bench_model", "bench_eval", "gpu_tests", "bench_train_n32", "data"):
        assert results["steps"][step]["status"] == "not run", step
    assert "unknown device" in text and "not measured" in text


def test_versions_below_the_declared_floors_are_named():
    floors = gpu_report.declared_floors()
    assert floors["torch"] == "2.13" and floors["transformers"] == "5.24"
    installed = {"torch": "2.11.0+cu130", "transformers": "5.24.0", "numpy": None}
    assert gpu_report.below_floor(installed, floors) == {"torch": "2.11.0+cu130 < 2.13"}


def test_bench_eval_runs_on_the_device_it_is_given():
    bench_eval = load("bench_eval")
    assert bench_eval.parse_args([]).device == torch.device("cpu")
    assert bench_eval.parse_args(["--device", "cpu"]).device == torch.device("cpu")
    with pytest.raises(SystemExit):
        bench_eval.parse_args(["--device", "gpu"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench_eval.parse_args(["--device", "cuda"])
    # the trie of [1, 2] + [3] and [1, 2] + [4]: inputs [1, 2] twice, one scored position
    assert bench_eval.distinct_tokens([([1, 2], [3]), ([1, 2], [4])], max_length=32) == (2, 1)
    torch.manual_seed(0)
    model = L2LForCausalLM(tiny_config()).eval()
    seconds, result = bench_eval.seconds(
        model.device, bench_eval.bare_forward, model, 40, 10, 16, 64
    )
    assert result is None and seconds > 0


def test_bench_model_json_is_a_gpu_option(monkeypatch):
    bench_model = load("bench_model")
    monkeypatch.setattr(sys, "argv", ["bench_model.py", "--json", "out.json"])
    with pytest.raises(SystemExit) as exit_info:
        bench_model.main()
    assert exit_info.value.code == 2
