"""Plan a scaling study: a table of runs, one row per (corpus, model size, token budget).

Grids:

- ``loss-to-loss`` (Brandfonbrener et al. 2024): depths n = 4..22, 24, ..., 32 (width 64 n) at the
  FLOP budgets ``geomspace(2e17, 1e19, 6) + [2.2e19, 4.84e19]``, with D = C / (6 N), keeping a pair
  iff 2 < D/N < 200; plus n = 40 at 1e21; for each of the six corpora.
- ``ladder`` (OLMo-ladder, Bhagia et al. 2024): given depths at 0.5, 1, 2, 5, 10 x Chinchilla
  (20 tokens per parameter).
- ``overtrain`` (Gadre et al. 2024): given depths at token multipliers M = D / N.
- ``custom``: any depths at any FLOP budgets (iso-FLOP, with an optional D/N window) or any token
  multipliers, with the batch and vocabulary of a base config: tiny grids that train on a CPU.

N is the paper's parameter count ``2 V d + n (12 d^2 + 4 d) + d`` (embeddings included). The
plan is written as ``runs.csv`` and ``runs.json`` in the study folder with the base training
config (``base_config.yaml``) that ``python -m training.launch`` combines with each row. A run
is finished iff ``<study>/<run>/final.json`` exists; the summary counts only the rest.

``--schedule wsd`` plans the same points as warmup-stable-decay trunks and decay branches
(``training.branches``): the longest run of each corpus and shape is trained in full, every other
run of the shape only as the decay it branches off the trunk (``schedule.decay_fraction`` of its
steps); the summary says what that saves.
"""

from __future__ import annotations

import argparse
import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from training.config import PRESETS
from training.corpora import CORPORA, PAPER_CORPORA, CorpusError, corpus_label, resolve_corpus
from training.study import (
    SIZE_DEPENDENT_PRESETS,
    PlannedRun,
    base_config,
    check_study_destination,
    is_finished,
    write_plan,
)

# The paper's depths (sweep.csv n_layers) and FLOP budgets (sweep.csv iso_flop).
PAPER_SWEEP_DEPTHS: tuple[int, ...] = (*range(4, 23), 24, 26, 28, 30, 32)
PAPER_BUDGETS: tuple[float, ...] = (
    *(2e17 * (1e19 / 2e17) ** (i / 5) for i in range(6)),  # numpy.geomspace(2e17, 1e19, 6)
    2.2e19,
    4.84e19,
)
PAPER_RATIO_RANGE = (2.0, 200.0)
# The largest runs: n = 40 at 1e21 FLOPs (one per corpus).
PAPER_LARGE_RUN = (40, 1e21)
CHINCHILLA_TOKENS_PER_PARAM = 20.0
LADDER_MULTIPLIERS = (0.5, 1.0, 2.0, 5.0, 10.0)
GADRE_MULTIPLIERS = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)

def plan_runs(
    depths: Iterable[int | tuple[int, int]],
    corpora: Sequence[str],
    *,
    budgets: Iterable[float] | None = None,
    tokens_per_param: Iterable[float] | None = None,
    ratio_range: tuple[float, float] | None = None,
    vocab_size: int = 32000,
    global_batch_size: int | Callable[[int], int] = 1024,
    seq_len: int = 512,
    round_steps: int = 1,
    trained_tokens: bool = False,
    grid: str = "custom",
    labels: Sequence[str] | None = None,
) -> list[PlannedRun]:
    """Runs of every corpus x shape x (FLOP budget or token multiplier).

    A shape is a depth n (the paper's: width 64 n, n layers, n heads of 64) or a pair (width,
    layers) with the width a multiple of 64. Iso-FLOP (``budgets``): D = C / (6 N), kept iff
    ``ratio_range[0] < D/N < ratio_range[1]``. Fixed multipliers (``tokens_per_param``): D = M N
    and C = 6 N D. Steps are floor(D / (batch x seq_len)), rounded down to a multiple of
    ``round_steps``; ``trained_tokens``: D is then the tokens those steps train (the budget
    names C), else the planned C / (6 N) as the paper's run names give it.
    ``global_batch_size`` may be a function of the depth (OLMo-ladder scales it with N);
    ``labels`` name the corpora in run names (default: ``corpus_label`` of each).
    """
    # Here rather than at the top: the package imports torch and transformers (seconds), which
    # `python -m training.sweep --help` and its argument errors must not wait for.
    from analysis.run_names import format_run_name
    from analysis.sizes import PAPER_HEAD_DIM, param_count

    batch_for = global_batch_size if callable(global_batch_size) else (
        lambda n: global_batch_size)
    if (budgets is None) == (tokens_per_param is None):
        raise ValueError("plan_runs: give either budgets (iso-FLOP) or tokens_per_param")
    shapes = sorted({(PAPER_HEAD_DIM * int(s), int(s)) if isinstance(s, int) else
                     (int(s[0]), int(s[1])) for s in depths}, key=lambda s: (s[1], s[0]))
    if not shapes or min(min(s) for s in shapes) < 1:
        raise ValueError(f"plan_runs: depths and widths must be positive integers, got {shapes}")
    odd = [w for w, _ in shapes if w % PAPER_HEAD_DIM]
    if odd:
        raise ValueError(f"plan_runs: width {odd[0]} is not a multiple of {PAPER_HEAD_DIM} "
                         "(heads of 64)")
    runs = []
    for i, corpus in enumerate(corpora):
        dataset = labels[i] if labels is not None else corpus_label(corpus)
        points: list[tuple[int, int, float, float]] = []  # (width, layers, D, C)
        if budgets is not None:
            for c in budgets:
                for width, layers in shapes:
                    n_params = param_count(width, layers, vocab_size)
                    d = c / (6 * n_params)
                    if ratio_range is None or ratio_range[0] < d / n_params < ratio_range[1]:
                        points.append((width, layers, d, float(c)))
        else:
            for m in tokens_per_param:
                for width, layers in shapes:
                    n_params = param_count(width, layers, vocab_size)
                    d = m * n_params
                    points.append((width, layers, d, 6.0 * n_params * d))
        for width, layers, d, c in points:
            n_params = param_count(width, layers, vocab_size)
            batch = batch_for(layers)
            tokens_per_step = batch * seq_len
            steps = int(d // tokens_per_step) // round_steps * round_steps
            if steps < 1:
                raise ValueError(
                    f"plan_runs: width {width} x {layers} layers with D={d:.3g} tokens is less "
                    f"than one step of {tokens_per_step} tokens; lower the batch or raise the "
                    "budget")
            tokens = steps * tokens_per_step if trained_tokens else int(d)
            runs.append(PlannedRun(
                run=format_run_name(dataset, n_params, tokens, c), dataset=dataset, N=n_params,
                D=tokens, C=c, n_layers=layers, d_model=width, steps=steps,
                tokens_per_param=tokens / n_params, global_batch_size=batch,
                seq_len=seq_len, grid=grid,
            ))
    names = [r.run for r in runs]
    if len(set(names)) != len(names):
        dupes = sorted({x for x in names if names.count(x) > 1})
        raise ValueError(f"plan_runs: two runs share a name (same N, D, C at 2 digits): {dupes}")
    return runs


def loss_to_loss_grid(corpora: Sequence[str] = PAPER_CORPORA, *, include_large: bool = True,
                      **kwargs) -> list[PlannedRun]:
    """The paper's sweep: 95 (depth, budget) pairs per corpus plus n = 40 at 1e21. The released
    sweep.csv holds 529 of the 570 runs below 1e21 (the issue's "about 88 per corpus"): its run
    names show the same 95 pairs launched as slurm arrays, 41 single tasks of which are absent
    (tests/training/test_sweep.py traces every released run to its array task)."""
    runs = plan_runs(PAPER_SWEEP_DEPTHS, corpora, budgets=PAPER_BUDGETS,
                     ratio_range=PAPER_RATIO_RANGE, grid="loss-to-loss", **kwargs)
    if include_large:
        n, c = PAPER_LARGE_RUN
        runs += plan_runs([n], corpora, budgets=[c], grid="loss-to-loss", **kwargs)
    return runs


def ladder_grid(depths: Iterable[int], corpora: Sequence[str],
                multipliers: Iterable[float] = LADDER_MULTIPLIERS, **kwargs) -> list[PlannedRun]:
    """OLMo-ladder: each depth at ``multipliers`` x 20 tokens per parameter."""
    return plan_runs(depths, corpora, grid="ladder",
                     tokens_per_param=[m * CHINCHILLA_TOKENS_PER_PARAM for m in multipliers],
                     **kwargs)


def overtraining_grid(depths: Iterable[int], corpora: Sequence[str],
                      multipliers: Iterable[float] = GADRE_MULTIPLIERS,
                      **kwargs) -> list[PlannedRun]:
    """Gadre et al.: each depth at token multipliers M = D / N."""
    return plan_runs(depths, corpora, tokens_per_param=multipliers, grid="overtrain", **kwargs)


# ---------------------------------------------------------------------------- summary
def training_flops(run: PlannedRun, vocab_size: int = 32000) -> float:
    """FLOPs the run will actually execute, by the model's own count
    (``analysis.sizes.training_flops``) over the tokens of ``steps`` full batches. Slightly
    above the planning convention C = 6 N D."""
    from analysis.sizes import training_flops as flops

    return flops(run.d_model, run.n_layers, run.steps * run.global_batch_size * run.seq_len,
                 run.seq_len, vocab_size)


def summarize(runs: Sequence[PlannedRun], *, study_dir: str | Path | None = None,
              mfu: float = 0.4, peak_flops: float = 989e12, device: str = "H100",
              vocab_size: int = 32000) -> dict:
    from training.branches import grid_flops, train_flops, trained_fraction

    finished = [r for r in runs if study_dir is not None and is_finished(study_dir, r.run)]
    todo = [r for r in runs if r not in finished]
    # a decay branch trains only its decay; the steps before it are its trunk's
    flops_todo = sum(training_flops(r, vocab_size) * trained_fraction(r) for r in todo)
    return {
        "runs": len(runs),
        "finished": len(finished),
        "to_run": len(todo),
        "compute_6ND": sum(6.0 * r.N * r.D for r in runs),
        "compute_6ND_to_run": sum(6.0 * r.N * r.D for r in todo),
        "training_flops_to_run": flops_todo,
        "gpu_hours_to_run": flops_todo / (mfu * peak_flops) / 3600.0,
        "mfu": mfu,
        "device": device,
        "peak_flops": peak_flops,
        "schedule": "wsd" if any(r.schedule == "wsd" for r in runs) else "cosine",
        "train_flops": train_flops(runs),
        "grid_flops": grid_flops(runs),
    }


def format_summary(summary: dict, runs: Sequence[PlannedRun], iso_flop: bool = True) -> str:
    lines = [
        f"{summary['runs']} runs planned ({summary['finished']} finished, "
        f"{summary['to_run']} to run) over {len({r.dataset for r in runs})} corpora",
        f"total compute 6ND: {summary['compute_6ND']:.3e} FLOPs "
        f"({summary['compute_6ND_to_run']:.3e} still to run)",
        f"to run: {summary['training_flops_to_run']:.3e} training FLOPs "
        f"(6 N_matmul + 12 n d T per token) = {summary['gpu_hours_to_run']:,.1f} GPU-hours on "
        f"{summary['device']} ({summary['peak_flops']:.3g} FLOP/s peak) at "
        f"{summary['mfu']:.0%} MFU",
    ]
    if "train_flops" in summary:
        from training.branches import saving_line

        lines.append(saving_line(summary["train_flops"], summary["grid_flops"],
                                 summary["schedule"]))
    groups: dict[float, set[int]] = {}
    for r in runs:
        key = r.C if iso_flop else round(r.tokens_per_param, 6)
        groups.setdefault(key, set()).add(r.n_layers)
    if len(groups) <= 20:
        lines.append("depths per FLOP budget:" if iso_flop else "depths per tokens-per-parameter:")
        for key in sorted(groups):
            label = f"C={key:.3e}" if iso_flop else f"D/N={key:g}"
            lines.append(f"  {label}: n = {', '.join(map(str, sorted(groups[key])))}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------- CLI
# The flags each grid reads; any other grid flag given would be ignored, so it is refused.
GRID_FLAGS = {
    "loss-to-loss": {"no_large"},
    "ladder": {"depths", "multipliers"},
    "overtrain": {"depths", "multipliers"},
    "custom": {"depths", "budgets", "multipliers", "ratio_range"},
}
_GRID_FLAG_NAMES = {"depths": "--depths", "budgets": "--budgets", "multipliers": "--multipliers",
                    "ratio_range": "--ratio-range", "no_large": "--no-large"}


def check_corpora(corpora: Sequence[str]) -> None:
    """Refuse (``CorpusError``) a corpus that is neither registered nor existing local files, and
    two corpora that would go by the same label in run names, before anything is written."""
    if not corpora:
        raise CorpusError("--corpora: give at least one corpus")
    labels: dict[str, str] = {}
    for corpus in corpora:
        try:
            resolve_corpus(corpus)
        except CorpusError as exc:
            message = str(exc).removeprefix("data.corpus: ")
            close = difflib.get_close_matches(corpus, CORPORA, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CorpusError(f"--corpora: {message}{hint}") from None
        label = corpus_label(corpus)
        if label in labels and labels[label] != corpus:
            raise CorpusError(f"--corpora: {labels[label]!r} and {corpus!r} both go by "
                              f"{label!r} in run names; rename one of them")
        labels[label] = corpus


def check_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, in words, or None: flags the grid would ignore,
    missing flags, numbers out of range. Cheap: runs before the model code is imported."""
    given = [name for name in _GRID_FLAG_NAMES if getattr(args, name)]
    for name in given:
        if name not in GRID_FLAGS[args.grid]:
            hint = (" (it plans the paper's depths and budgets; for others use --grid custom "
                    "--depths ... --budgets ... --ratio-range 2 200)"
                    if args.grid == "loss-to-loss" else "")
            return f"{_GRID_FLAG_NAMES[name]} is not used by --grid {args.grid}{hint}"
    if args.grid != "loss-to-loss" and not args.depths:
        return f"--depths is required for --grid {args.grid}"
    if args.grid == "custom" and bool(args.budgets) == bool(args.multipliers):
        return "--grid custom takes either --budgets (iso-FLOP) or --multipliers (D/N)"
    if args.ratio_range and not args.budgets:
        return "--ratio-range filters iso-FLOP pairs: it needs --budgets"
    if any(n < 1 for n in args.depths or ()):
        return f"--depths must be positive integers, got {args.depths}"
    for flag, values in (("--budgets", args.budgets), ("--multipliers", args.multipliers)):
        bad = [v for v in values or () if not (math.isfinite(v) and v > 0)]
        if bad:
            return f"{flag} must be positive finite numbers, got {bad}"
    if args.ratio_range:
        low, high = args.ratio_range
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
            return f"--ratio-range LOW HIGH needs 0 <= LOW < HIGH, got {low:g} {high:g}"
    if args.round_steps < 1:
        return f"--round-steps must be at least 1, got {args.round_steps}"
    if not 0 < args.mfu <= 1:
        return f"--mfu is a fraction of the peak in (0, 1], got {args.mfu:g}"
    if args.peak_flops is not None and not (math.isfinite(args.peak_flops)
                                            and args.peak_flops > 0):
        return f"--peak-flops must be a positive number of FLOP/s, got {args.peak_flops:g}"
    return None


def _peak_for(device: str) -> float | None:
    from modeling_l2l import peak_flops_for_device

    return peak_flops_for_device(device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.sweep",
        description="Plan a scaling study as a table of runs (runs.csv / runs.json).",
    )
    p.add_argument("--grid", choices=["loss-to-loss", "ladder", "overtrain", "custom"],
                   default="loss-to-loss")
    p.add_argument("--corpora", nargs="+", default=list(PAPER_CORPORA),
                   help="registered corpora or local file paths (default: the paper's six)")
    p.add_argument("--depths", nargs="+", type=int, help="model depths n (width 64 n)")
    p.add_argument("--budgets", nargs="+", type=float, help="FLOP budgets (iso-FLOP grid)")
    p.add_argument("--multipliers", nargs="+", type=float,
                   help="ladder: x Chinchilla; overtrain/custom: tokens per parameter M = D/N")
    p.add_argument("--ratio-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="keep iso-FLOP pairs with LOW < D/N < HIGH")
    p.add_argument("--no-large", action="store_true", help="loss-to-loss: omit n=40 at 1e21")
    p.add_argument("--schedule", choices=["cosine", "wsd"], default="cosine",
                   help="cosine: every run trained alone with the base config's schedule; wsd: "
                   "one warmup-stable-decay trunk per corpus and shape, the other runs decays "
                   "branched off it (schedule.decay_fraction, schedule.decay_shape)")
    p.add_argument("--round-steps", type=int, default=1,
                   help="round steps down to a multiple (the released runs used 5)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="base training config (default: paper, tiny-cpu for --grid custom)")
    p.add_argument("--config", help="base training config YAML (instead of a preset)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base config")
    p.add_argument("--out", help="study folder to write runs.csv, runs.json, base_config.yaml "
                   "(new, empty, or a study to re-plan)")
    p.add_argument("--format", nargs="+", choices=["csv", "json"], default=["csv", "json"])
    p.add_argument("--mfu", type=float, default=0.4, help="assumed MFU for GPU-hours")
    p.add_argument("--device", default="H100", help="GPU name for the peak FLOP/s table")
    p.add_argument("--peak-flops", type=float, help="peak FLOP/s (instead of --device)")
    return p


def main(argv: list[str] | None = None) -> list[PlannedRun]:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)

    def fail(message: str):
        parser.exit(2, f"error: {message}\n")

    # "--corpora a b key=value" swallows the overrides: anything with "=" is an override.
    args.overrides += [c for c in args.corpora if "=" in c]
    args.corpora = [c for c in args.corpora if "=" not in c]
    # Everything that needs no model code is checked first, so that a mistake is reported in a
    # second and nothing is written for a plan that would be refused.
    problem = check_arguments(args)
    if problem:
        fail(problem)
    try:
        check_corpora(args.corpora)
        if args.out:
            check_study_destination(args.out)
    except (CorpusError, FileExistsError) as exc:
        fail(str(exc))
    preset = None if args.config else (args.preset or (
        "tiny-cpu" if args.grid == "custom" else "paper"))
    try:
        base = base_config(preset, args.config, args.overrides)
    except ValueError as exc:
        fail(str(exc))
    if base.model.d_model is not None or base.model.n_heads is not None:
        fail("the planner sizes models by depth (width 64 n): unset model.d_model and "
             "model.n_heads in the base config")
    if preset in SIZE_DEPENDENT_PRESETS:
        def batch_for(n: int) -> int:
            return base_config(preset, None, args.overrides, n).batch.global_batch_size
    else:
        batch_for = base.batch.global_batch_size
    common = dict(vocab_size=base.model.vocab_size, global_batch_size=batch_for,
                  seq_len=base.data.seq_len, round_steps=args.round_steps)
    ratio = tuple(args.ratio_range) if args.ratio_range else None
    try:
        if args.grid == "loss-to-loss":
            runs = loss_to_loss_grid(args.corpora, include_large=not args.no_large, **common)
        elif args.grid == "ladder":
            runs = ladder_grid(args.depths, args.corpora,
                               args.multipliers or LADDER_MULTIPLIERS, **common)
        elif args.grid == "overtrain":
            runs = overtraining_grid(args.depths, args.corpora,
                                     args.multipliers or GADRE_MULTIPLIERS, **common)
        else:
            runs = plan_runs(args.depths, args.corpora, budgets=args.budgets,
                             tokens_per_param=args.multipliers, ratio_range=ratio, **common)
    except ValueError as exc:
        fail(str(exc))
    if args.schedule == "wsd":
        from training.branches import plan_branches

        runs = plan_branches(runs, base.schedule.decay_fraction)
    if not runs:  # an empty study would launch nothing and say nothing about why
        window = f"{ratio[0]:g} < D/N < {ratio[1]:g}" if ratio else "the grid's D/N window"
        fail(f"no (depth, budget) pair has {window}: widen --ratio-range or change --depths / "
             "--budgets")
    peak = args.peak_flops or _peak_for(args.device)
    if peak is None:
        fail(f"unknown device {args.device!r}: pass --peak-flops")
    if args.out:
        try:
            written = write_plan(runs, args.out, preset=preset, config_path=args.config,
                                 overrides=args.overrides, corpora=args.corpora,
                                 formats=args.format)
        except OSError as exc:  # e.g. a read-only or vanished folder; the message names it
            fail(str(exc))
        for path in written:
            print(f"wrote {path}")
    summary = summarize(runs, study_dir=args.out, mfu=args.mfu, peak_flops=peak,
                        device=args.device if not args.peak_flops else "the given device",
                        vocab_size=base.model.vocab_size)
    iso_flop = args.grid == "loss-to-loss" or (args.grid == "custom" and bool(args.budgets))
    print(format_summary(summary, runs, iso_flop=iso_flop))
    return runs


if __name__ == "__main__":
    main()
