"""The GPU checks' results in one file: ``gpu_results.json``, and a Markdown block for RESULTS.md.

    python benchmarks/gpu_report.py versions DIR/versions.json      # on the GPU machine
    python benchmarks/gpu_report.py report DIR --json OUT/gpu_results.json --markdown OUT/gpu_report.md

``benchmarks/gpu_check.sh`` runs both. ``versions`` records the date, the device and the versions
of what the checks ran on (it imports torch). ``report`` needs the standard library alone, so it
runs again on this side on the folder that comes back, e.g. over the merged inputs of two calls.
Its inputs in DIR, each optional (a step that failed or ran out of time leaves its file out, or
half-written: those values are null and ``steps`` says why, never an exception):

    versions.json           this script's ``versions``
    nvidia_smi.csv          nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    steps.tsv               one line per step: name, exit status (or "skipped"), seconds, limit
    gpu_tests.xml           pytest -m gpu --junitxml
    bench_model.json        bench_model.py --gpu --compare-olmo2 --json
    bench_train_n*.json     bench_train.py --gpu --out (one depth per file, or several in one)
    bench_eval.json         bench_eval.py --device cuda --json
    data.json               bench_train.py --data-only --out
    multi_gpu.txt           one line: what the multi-GPU step did

``gpu_results.json``'s keys ``device``, ``date``, ``versions``, ``mfu`` (L2L, by depth n),
``olmo2_mfu`` (by n) and ``scorer_speedup`` (by bench_eval workload) are issue 13's contract; the
others add what the reader of those needs: the trainer's MFU, tokens/s, the scorer's detail, the
GPU tests' counts, the target and each step's exit status.
"""

from __future__ import annotations

import argparse
import configparser
import csv
import glob
import json
import platform
import re
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEPTHS = ("8", "16", "32")
MODELS = ("L2L", "Olmo2")  # bench_model.py --compare-olmo2
WORKLOADS = ("arc_easy", "arc_easy_rc", "hellaswag")  # bench_eval.py's default --workloads
# Issue 13: a training step of the paper's largest benchmark depth at >= 45% MFU on an H100/H200.
TARGET_DEPTH, TARGET_MFU = "32", 0.45
INPUTS = {  # step name in steps.tsv -> the file it writes
    "versions": "versions.json",
    "nvidia_smi": "nvidia_smi.csv",
    "gpu_tests": "gpu_tests.xml",
    "bench_model": "bench_model.json",
    "bench_eval": "bench_eval.json",
    "data": "data.json",
    "multi_gpu": "multi_gpu.txt",
    **{f"bench_train_n{n}": f"bench_train_n{n}.json" for n in DEPTHS},
}
# Distributions whose versions the results carry, besides python and torch.
VERSIONED = (
    "transformers",
    "accelerate",
    "lm_eval",
    "datasets",
    "huggingface_hub",
    "tokenizers",
    "safetensors",
    "numpy",
    "pyarrow",
    "fsspec",
    "dill",
    "multiprocess",
    "triton",
    "pytest",
)


# ------------------------------------------------------------------------------------ versions
def declared_floors() -> dict[str, str]:
    """``name -> lowest version`` of setup.cfg's install_requires (``name>=X``)."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    floors = {}
    for line in parser.get("options", "install_requires", fallback="").splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", line)
        if match:
            floors[match[1].lower().replace("-", "_")] = match[2]
    return floors


def below_floor(installed: dict[str, str | None], floors: dict[str, str]) -> dict[str, str]:
    """``name -> "installed < floor"`` for each installed version under the declared floor."""
    from packaging.version import InvalidVersion, Version

    below = {}
    for name, floor in floors.items():
        version = installed.get(name)
        try:
            if version and Version(version.split("+")[0]) < Version(floor):
                below[name] = f"{version} < {floor}"
        except InvalidVersion:
            continue
    return below


def collect_versions(path: Path) -> None:
    """Write ``path``: date, device, versions, and which of them are below setup.cfg's floors."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    versions |= {name: installed(name) for name in VERSIONED}
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "below_declared_floor": below_floor(versions, declared_floors()),
        "device": None,
        "device_count": torch.cuda.device_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        result |= {
            "device": torch.cuda.get_device_name(0),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
            "memory_gib": round(props.total_memory / 2**30, 1),
        }
        try:  # the MFU denominator, from the same table as the model's estimate_mfu
            sys.path.insert(0, str(REPO))
            from modeling_l2l import peak_flops_for_device

            result["peak_flops"] = peak_flops_for_device(result["device"])
        except Exception as err:  # recorded: the benchmarks will fail on the same import
            result["peak_flops_error"] = f"{type(err).__name__}: {err}"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


# -------------------------------------------------------------------------------------- report
def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(content, None), or (None, why not)."""
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except (OSError, ValueError) as err:
        return None, f"{path.name} unreadable ({type(err).__name__}: {err})"
    if not isinstance(content, dict):
        return None, f"{path.name} holds no JSON object"
    return content, None


def read_steps(folder: Path) -> dict[str, dict]:
    """steps.tsv as ``name -> {exit_status, status, seconds, limit_s}``; a rerun's line wins."""
    steps = {}
    try:
        lines = (folder / "steps.tsv").read_text().splitlines()
    except OSError:
        return steps
    for line in lines:
        fields = line.split("\t")
        if len(fields) < 4 or not fields[0]:
            continue
        name, code, seconds, limit = fields[:4]
        exit_status = int(code) if code.lstrip("-").isdigit() else None
        if exit_status is None:
            status = code or "unknown"
        elif exit_status == 0:
            status = "ok"
        elif exit_status in (124, 137):  # timeout's TERM, then its KILL
            status = f"timed out after {limit} s"
        else:
            status = f"failed: exit {exit_status}"
        steps[name] = {
            "exit_status": exit_status,
            "status": status,
            "seconds": float(seconds) if seconds else None,
            "limit_s": int(limit) if limit.isdigit() else None,
        }
    return steps


def note_input(steps: dict, step: str, problem: str | None) -> None:
    """Record under ``steps`` that ``step``'s input could not be used."""
    if problem:
        entry = steps.setdefault(step, {"exit_status": None, "status": "not run"})
        entry["input"] = f"{entry['input']}; {problem}" if "input" in entry else problem


def gpu_test_counts(path: Path) -> tuple[dict | None, str | None]:
    """passed/failed/errors/skipped of a pytest junit XML, and the failed tests' ids."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except (OSError, ET.ParseError) as err:
        return None, f"{path.name} unreadable ({err})"
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failed = []
    for case in root.iter("testcase"):
        outcome = next(
            (child.tag for child in case if child.tag in ("failure", "error", "skipped")), None
        )
        key = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(outcome, "passed")
        counts[key] += 1
        if key in ("failed", "errors"):
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return counts | {"not_passed": failed}, None


def by_depth(rows: dict, key: str) -> dict[str, float | None]:
    return {n: (rows.get(n) or {}).get(key) for n in DEPTHS}


def trainer_rows(folder: Path, steps: dict) -> dict[str, dict]:
    """bench_train.py's GPU rows by depth, from every bench_train*.json in ``folder``."""
    rows = {}
    for path in sorted(glob.glob(str(folder / "bench_train*.json"))):
        content, problem = read_json(Path(path))
        if content is None:
            note_input(steps, Path(path).stem, problem)
            continue
        for row in content.get("gpu") or []:
            rows[str(row.get("n"))] = row
    for n in DEPTHS:
        if n not in rows:
            note_input(steps, f"bench_train_n{n}", f"no bench_train result for n = {n}")
    return rows


def build_results(folder: Path) -> dict:
    steps = read_steps(folder)
    versions, problem = read_json(folder / INPUTS["versions"])
    note_input(steps, "versions", problem)
    versions = versions or {}
    model, problem = read_json(folder / INPUTS["bench_model"])
    note_input(steps, "bench_model", problem)
    models = (model or {}).get("models", {})
    evaluation, problem = read_json(folder / INPUTS["bench_eval"])
    note_input(steps, "bench_eval", problem)
    scorer_rows = {row.get("workload"): row for row in (evaluation or {}).get("results", [])}
    tests, problem = gpu_test_counts(folder / INPUTS["gpu_tests"])
    note_input(steps, "gpu_tests", problem)
    trainer = trainer_rows(folder, steps)
    data, problem = read_json(folder / INPUTS["data"])
    note_input(steps, "data", problem)
    data = (data or {}).get("data") or {}

    smi = {}
    try:
        with open(folder / INPUTS["nvidia_smi"]) as f:
            first = next(csv.reader(f), None)
        if first and len(first) >= 3:
            smi = {"name": first[0].strip(), "driver": first[1].strip(), "memory": first[2].strip()}
    except OSError as err:
        note_input(steps, "nvidia_smi", f"{INPUTS['nvidia_smi']} unreadable ({err.strerror})")
    try:
        multi_gpu = (folder / INPUTS["multi_gpu"]).read_text().strip() or None
    except OSError:
        multi_gpu = None

    peak = versions.get("peak_flops") or (model or {}).get("peak_flops")
    l2l_mfu = by_depth(models.get("L2L", {}), "mfu")
    target_mfu = l2l_mfu[TARGET_DEPTH]
    return {
        "device": versions.get("device") or (model or {}).get("device") or smi.get("name"),
        "date": versions.get("date")
        or (model or {}).get("date")
        or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {**versions.get("versions", {}), "driver": smi.get("driver")},
        "mfu": l2l_mfu,
        "olmo2_mfu": by_depth(models.get("Olmo2", {}), "mfu"),
        "scorer_speedup": {
            task: (scorer_rows.get(task) or {}).get("speedup")
            for task in dict.fromkeys([*WORKLOADS, *scorer_rows])
        },
        "trainer_mfu": by_depth(trainer, "mfu"),
        "trainer_tokens_per_s": by_depth(trainer, "tokens_per_s"),
        "data_tokens_per_s": data.get("pipeline_tokens_written_per_s"),
        "data_vs_tokenizer": data.get("ratio_pipeline_vs_tokenizer"),
        "model_tokens_per_s": {
            label: by_depth(models.get(label, {}), "tokens_per_s") for label in MODELS
        },
        "model_batch_size": {
            label: by_depth(models.get(label, {}), "batch_size") for label in MODELS
        },
        "mfu_target": {
            "n": int(TARGET_DEPTH),
            "mfu": TARGET_MFU,
            "peak_flops": peak,
            "met": None if target_mfu is None else target_mfu >= TARGET_MFU,
        },
        "scorer": {
            task: {
                key: row.get(key)
                for key in (
                    "source",
                    "requests",
                    "ours_requests_per_s",
                    "hflm_requests_per_s",
                    "hflm_best",
                    "bare_over_ours",
                    "max_abs_logprob_diff",
                    "greedy_agreement",
                )
            }
            for task, row in scorer_rows.items()
        },
        "scorer_model": (evaluation or {}).get("meta", {}).get("model"),
        "scorer_device": (evaluation or {}).get("meta", {}).get("device"),
        "gpu_tests": tests,
        "multi_gpu": multi_gpu,
        "below_declared_floor": versions.get("below_declared_floor"),
        "device_count": versions.get("device_count"),
        "steps": steps,
    }


def number(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def percent(value: float | None) -> str:
    return number(value, ".1%", "not measured")


def markdown(results: dict) -> str:
    """The block for benchmarks/RESULTS.md: date, device, versions, MFU table, scorer, tests."""
    v = results["versions"]
    shown = [
        f"{name} {v[name]}"
        for name in ("transformers", "accelerate", "lm_eval", "datasets", "triton")
        if v.get(name)
    ]
    floors = results.get("below_declared_floor") or {}
    torch_note = f" (below the declared floor: {floors['torch']})" if "torch" in floors else ""
    target = results["mfu_target"]
    peak = target["peak_flops"]
    lines = [
        f"### GPU checks: {results['device'] or 'unknown device'} ({results['date']})",
        "",
        f"`bash benchmarks/gpu_check.sh`. Python {v.get('python')}, torch {v.get('torch')} "
        f"({'CUDA ' + v['cuda'] if v.get('cuda') else 'no CUDA'}){torch_note}, "
        + ", ".join(shown)
        + (f", driver {v['driver']}" if v.get("driver") else "")
        + ".",
        "",
        "Training step (forward, backward, fused AdamW), bf16 autocast, sequence 512, "
        "torch.compile: `bench_model.py` for the models, `bench_train.py` for `train()`. MFU "
        "= tokens/s x (6 N_matmul + 12 L d T) / peak"
        + (f", peak {peak / 1e12:.0f} TFLOP/s dense bf16 (PEAK_FLOPS_BY_DEVICE)." if peak else "."),
        "",
        "| n | L2L MFU | Olmo2 MFU | L2L / Olmo2 | trainer MFU | target |",
        "|---|---|---|---|---|---|",
    ]
    for n in DEPTHS:
        ours, theirs = results["mfu"][n], results["olmo2_mfu"][n]
        ratio = f"{ours / theirs:.2f}x" if ours and theirs else "-"
        goal = f">= {target['mfu']:.0%}" if n == str(target["n"]) else ""
        lines.append(
            f"| {n} | {percent(ours)} | {percent(theirs)} | {ratio} | "
            f"{percent(results['trainer_mfu'][n])} | {goal} |"
        )
    met = {True: "**met**", False: "**missed**", None: "not measured"}[target["met"]]
    lines += ["", f"Target >= {target['mfu']:.0%} MFU at n = {target['n']}: {met}.", ""]
    if results["scorer"]:
        lines += [
            f"Scorer against lm-eval's HFLM, same model ({results['scorer_model']}), same "
            f"requests (`bench_eval.py --device {results['scorer_device']}`):",
            "",
            "| workload | source | ours req/s | HFLM req/s (best batch) | speedup "
            "| bare / ours | max abs dlogp |",
            "|---|---|---|---|---|---|---|",
        ]
        for task, row in results["scorer"].items():
            lines.append(
                f"| {task} | {row['source']} | {number(row['ours_requests_per_s'], ',.0f')} | "
                f"{number(row['hflm_requests_per_s'], ',.0f')} ({row['hflm_best']}) | "
                f"{number(results['scorer_speedup'][task], '.1f')}x | "
                f"{number(row['bare_over_ours'], '.2f')} | "
                f"{number(row['max_abs_logprob_diff'], '.1e')} |"
            )
        lines.append("")
    else:
        lines += ["Scorer against lm-eval's HFLM: not measured.", ""]
    if results["data_tokens_per_s"]:
        lines += [
            f"Data pipeline (tokenise + pack + write): {results['data_tokens_per_s']:,.0f} "
            f"tokens/s, {number(results['data_vs_tokenizer'], '.2f')}x the bare tokenizer "
            "(`bench_train.py --data-only`; the machine's CPUs).",
            "",
        ]
    tests = results["gpu_tests"]
    if tests:
        lines.append(
            f"GPU tests (`pytest -m gpu`): {tests['passed']} passed, {tests['failed']} "
            f"failed, {tests['errors']} errors, {tests['skipped']} skipped"
            + (f"; not passed: {', '.join(tests['not_passed'])}." if tests["not_passed"] else ".")
        )
    else:
        lines.append("GPU tests (`pytest -m gpu`): no result.")
    if results["multi_gpu"]:
        lines.append(f"Multi-GPU (DDP/FSDP2 over NCCL): {results['multi_gpu']}.")
    unfinished = [
        f"{name} ({step['status']}" + (f"; {step['input']}" if "input" in step else "") + ")"
        for name, step in results["steps"].items()
        if step["status"] != "ok" or "input" in step
    ]
    if unfinished:
        lines.append("Steps without a full result: " + ", ".join(unfinished) + ".")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    versions = sub.add_parser("versions", help="record date, device and versions (imports torch)")
    versions.add_argument("path", type=Path)
    report = sub.add_parser("report", help="assemble gpu_results.json from a folder of inputs")
    report.add_argument("folder", type=Path)
    report.add_argument("--json", type=Path, help="write gpu_results.json here")
    report.add_argument("--markdown", type=Path, help="also write the Markdown block here")
    args = parser.parse_args(argv)
    if args.command == "versions":
        collect_versions(args.path)
        return
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder (gpu_check.sh's inputs)")
    results = build_results(args.folder)
    text = markdown(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
