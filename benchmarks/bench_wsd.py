"""The tiny study trained twice in one run, on the same machine: its grid with the paper's cosine
(every point a run of its own) and as warmup-stable-decay trunks and decay branches; its two
targets trained with cosine in both. What the WSD grid saves (planned FLOPs, training wall time)
and what it costs (the targets' prediction errors, per method, against the cosine grid's).

    python benchmarks/bench_wsd.py --out runs/bench-wsd        # about 20 minutes on 2 cores

Both studies are planned by ``l2l.plan`` from the ``tiny`` preset, trained by ``l2l train``'s
local pool (``training.launch.run_local``: two single-thread processes, largest first, a branch
once its trunk has finished),
evaluated by ``l2l.stages.evaluate_study`` and fitted and reported by ``l2l report``'s code.
Nothing is tuned to the targets. Prints a markdown block for benchmarks/RESULTS.md and writes
``<out>/bench_wsd.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2l.presets import get_preset  # noqa: E402

MAE_MARGIN = 0.005  # the bar: the wsd grid's MAE at most 0.5 points above cosine's


def train_study(study: Path, spec, workers: int) -> tuple[float, dict[str, str]]:
    """Train every planned run with ``workers`` single-thread processes (``l2l train``'s pool:
    largest first, a branch once its trunk has finished); (wall seconds, failures)."""
    from l2l.plan import run_training_config
    from training.launch import run_local, write_run_configs

    todo = write_run_configs(study, build=lambda folder, run: run_training_config(folder, run,
                                                                                  spec))
    start = time.perf_counter()
    failed = run_local(todo, workers=workers, log_dir=study / "logs")
    return time.perf_counter() - start, failed


def errors_by_method(study: Path) -> pd.DataFrame:
    """Per method: measured target predictions, their mean absolute relative error, and how many
    lie inside their interval."""
    preds = measured_predictions(study)
    return preds.groupby("method").agg(
        predictions=("relative_error", "size"),
        mae=("relative_error", lambda e: float(e.abs().mean())),
        inside=("covered", lambda c: int(c.astype(bool).sum())))


def measured_predictions(study: Path) -> pd.DataFrame:
    preds = pd.read_csv(study / "predictions.csv")
    return preds[preds.actual.notna()]


MATCH = ["run", "quantity", "given", "method"]  # one prediction of one target by one method


def matched_errors(cosine_study: Path, wsd_study: Path) -> pd.DataFrame:
    """Per method, on the target predictions that both grids made (a law that one grid cannot
    fit makes no prediction there, and a mean over other targets compares nothing): how many,
    each grid's mean absolute error and how many inside their interval; and how many predictions
    only one grid made."""
    cosine, wsd = measured_predictions(cosine_study), measured_predictions(wsd_study)
    both = cosine.merge(wsd, on=MATCH, suffixes=("_cosine", "_wsd"))
    rows = []
    for method in dict.fromkeys([*cosine.method, *wsd.method]):
        mine = both[both.method == method]
        rows.append({
            "method": method, "matched": len(mine),
            "mae_cosine": float(mine.relative_error_cosine.abs().mean()) if len(mine) else float("nan"),
            "mae_wsd": float(mine.relative_error_wsd.abs().mean()) if len(mine) else float("nan"),
            "inside_cosine": int(mine.covered_cosine.astype(bool).sum()),
            "inside_wsd": int(mine.covered_wsd.astype(bool).sum()),
            "cosine_only": int((cosine.method == method).sum()) - len(mine),
            "wsd_only": int((wsd.method == method).sum()) - len(mine)})
    return pd.DataFrame(rows)


def run_study(name: str, out: Path, schedule: str, workers: int) -> dict:
    from l2l.cli import make_report
    from l2l.plan import plan_study
    from l2l.stages import evaluate_study
    from training.branches import grid_flops, train_flops
    from training.study import read_plan

    spec = get_preset(name)
    spec.schedule = schedule
    spec.target_schedule = "cosine"  # the same targets in both studies
    spec = spec.check()
    study = out / f"{name}-{schedule}"
    print(f"[{schedule}] planning {study}", flush=True)
    plan_study(spec, study, log=lambda line: print(line, flush=True))
    runs = read_plan(study)
    print(f"[{schedule}] training {len(runs)} runs", flush=True)
    train_s, failed = train_study(study, spec, workers)
    if failed:
        raise SystemExit(f"[{schedule}] runs failed: {failed}")
    finals = {r.run: json.loads((study / r.run / "final.json").read_text()) for r in runs}
    print(f"[{schedule}] trained in {train_s:.0f} s; evaluating", flush=True)
    start = time.perf_counter()
    evaluated = evaluate_study(study)
    if evaluated.failed:
        raise SystemExit(f"[{schedule}] evaluation failed: {evaluated.failed}")
    eval_s = time.perf_counter() - start
    start = time.perf_counter()
    make_report(study, progress=False)
    fit_s = time.perf_counter() - start
    record = json.loads((study / "l2l_study.json").read_text())
    targets = set(record["targets"])
    return {
        "study": str(study), "schedule": schedule, "runs": len(runs),
        "train_flops": train_flops(runs), "grid_flops": grid_flops(runs),
        "train_wall_s": round(train_s, 1), "eval_wall_s": round(eval_s, 1),
        "fit_report_wall_s": round(fit_s, 1),
        # each run's own time (a branch's wall_time_s includes its trunk's up to the branch)
        "grid_run_s": round(sum(f["wall_time_s"] - f.get("trunk_wall_time_s", 0.0)
                                for r, f in finals.items() if r not in targets), 1),
        "target_run_s": round(sum(finals[r]["wall_time_s"] for r in targets), 1),
        "errors": errors_by_method(study).reset_index().to_dict("records"),
        "targets": {r: finals[r]["final_val_loss"] for r in sorted(targets)},
    }


def markdown(results: list[dict], preset: str) -> str:
    cosine, wsd = results
    import torch
    import transformers

    lines = [
        f"### WSD trunks and branches against cosine on the {preset} study "
        f"({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, transformers {transformers.__version__})",
        "",
        f"`python benchmarks/bench_wsd.py --preset {preset}`: the preset planned twice, its grid with "
        "cosine and with WSD (1-sqrt decay over the last 20% of each run, one trunk per corpus "
        "and shape), its targets trained with cosine in both; the same launcher (2 single-thread "
        "processes, a branch after its trunk), one after the other in one run.",
        "",
        "| grid | planned FLOPs (C) | of cosine's | training wall time | grid runs' own time | "
        "evaluation | fits + report |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['schedule']} | {r['train_flops']:.3g} | {r['train_flops'] / cosine['train_flops']:.1%} "
            f"| {r['train_wall_s']:.0f} s | {r['grid_run_s']:.0f} s | {r['eval_wall_s']:.0f} s | "
            f"{r['fit_report_wall_s']:.0f} s |")
    saved = 1 - wsd["train_wall_s"] / cosine["train_wall_s"]
    lines += ["", f"Training wall time saved by the WSD grid: {saved:.1%} "
              f"({cosine['train_wall_s'] - wsd['train_wall_s']:.0f} s).", "",
              "Target predictions that both grids made, per method (a law that one grid "
              "cannot fit predicts nothing there; those are counted apart):", "",
              "| method | matched predictions | MAE, cosine grid | MAE, wsd grid | difference | "
              "inside their interval (cosine, wsd) | made by one grid only (cosine, wsd) |",
              "|---|---|---|---|---|---|---|"]
    for e in matched_errors(Path(cosine["study"]), Path(wsd["study"])).to_dict("records"):
        lines.append(f"| {e['method']} | {e['matched']} | {e['mae_cosine']:.2%} | "
                     f"{e['mae_wsd']:.2%} | {(e['mae_wsd'] - e['mae_cosine']) * 100:+.2f} points | "
                     f"{e['inside_cosine']}, {e['inside_wsd']} | {e['cosine_only']}, "
                     f"{e['wsd_only']} |")
    same = cosine["targets"] == wsd["targets"]
    lines += ["", "The targets' validation losses in the two studies: "
              + ("identical (the same cosine runs)." if same else
                 f"cosine study {cosine['targets']}, wsd study {wsd['targets']}.")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-wsd"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tables-from", type=Path, metavar="BENCH_WSD.json",
                        help="print the tables of an earlier run (its bench_wsd.json and the two "
                        "study folders it names) instead of training again")
    args = parser.parse_args(argv)
    if args.tables_from is not None:
        results = json.loads(args.tables_from.read_text())
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        results = [run_study(args.preset, args.out, schedule, args.workers)
                   for schedule in ("cosine", "wsd")]
        (args.out / "bench_wsd.json").write_text(json.dumps(results, indent=1))
    print(markdown(results, args.preset))
    matched = matched_errors(Path(results[0]["study"]), Path(results[1]["study"]))
    worse = (matched.mae_wsd - matched.mae_cosine)[matched.matched > 0]
    print("\nwithin the issue's 0.5-point bar for every method (matched predictions):",
          bool((worse <= MAE_MARGIN).all()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
