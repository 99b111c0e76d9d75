"""The ``l2l`` command: one study folder from grid to prediction to Hub release.

    l2l study --preset tiny                  plan, train, evaluate, fit, report, release folder
    l2l plan --preset tiny --out studies/tiny
    l2l train | eval | fit | predict | report STUDY
    l2l release STUDY [--repo-id ORG/NAME] [--dry-run]
    l2l sweep | launch | reproduce | backtest | convert ...   the package's other tools

Each stage reads and writes the study folder and resumes where it stopped: finished runs are not
trained again, metrics already in the results table are not computed again. Imports stay inside
the commands so that every ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Tools of the four packages reachable from here: name -> (module, what it does).
PASSTHROUGH = {
    "sweep": ("training.sweep", "plan a scaling study (python -m training.sweep)"),
    "launch": ("training.launch", "train a study here or under slurm (python -m training.launch)"),
    "reproduce": ("analysis.reproduce",
                  "the papers' tables from their data (python -m analysis.reproduce)"),
    "backtest": ("analysis.backtest", "predict each study's largest runs (python -m analysis.backtest)"),
    "convert": ("modeling_l2l.convert_olmo",
                "convert a released OLMo-fork checkpoint (python -m modeling_l2l.convert_olmo)"),
}
STAGES = ("plan", "train", "eval", "fit", "report", "release")


def build_parser() -> argparse.ArgumentParser:
    from l2l.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="l2l", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    presets = ", ".join(f"{name} ({p.description.split(':')[0].split(';')[0]})"
                        for name, p in PRESETS.items())

    def study_arg(sub):
        sub.add_argument("study", type=Path, help="the study folder")

    def spec_args(sub):
        which = sub.add_mutually_exclusive_group(required=True)
        which.add_argument("--preset", help="a shipped study: " + ", ".join(PRESETS))
        which.add_argument("--config", type=Path, metavar="STUDY.yaml",
                           help="a study spec (l2l plan --preset NAME --print-config writes one)")
        sub.add_argument("--corpus", action="append", default=[], metavar="NAME=SOURCE",
                         help="replaces the spec's corpora (repeat for each): SOURCE is a "
                         "registered corpus, a .txt/.jsonl/.jsonl.gz/.jsonl.zst/.parquet file or "
                         "a folder of them, or hf://datasets/ORG/NAME[:CONFIG]")
        sub.add_argument("--out", type=Path, default=None,
                         help="study folder (default studies/NAME)")
        sub.add_argument("--schedule", choices=("cosine", "wsd"), default=None,
                         help="replaces the spec's schedule: cosine (every run alone) or wsd (a "
                         "warmup-stable-decay trunk per corpus and shape, the other runs decays "
                         "branched off it)")

    study = commands.add_parser("study", help="run a whole study, resuming where it stopped",
                                description="Plan, train, evaluate, fit, report and lay out the "
                                "release of one study. Presets: " + presets)
    spec_args(study)
    _launch_options(study)
    study.add_argument("--task-data", default=None, help="folder of local task files")
    study.add_argument("--stop-after", choices=STAGES, default=None,
                       help="stop after this stage (default: all of them)")

    plan = commands.add_parser("plan", help="write a study folder from a preset or a spec")
    spec_args(plan)
    plan.add_argument("--print-config", action="store_true",
                      help="print the study spec as YAML (to copy and edit) and stop")
    plan.add_argument("--dry-run", action="store_true",
                      help="print the runs it would plan, write nothing")

    train = commands.add_parser("train", help="train the study's unfinished runs")
    study_arg(train)
    _launch_options(train)

    evaluate = commands.add_parser("eval", help="evaluate the finished runs into results.jsonl")
    study_arg(evaluate)
    evaluate.add_argument("--task-data", default=None, help="folder of local task files")

    for name, text in (("fit", "fit the study's laws; write laws/, predictions.csv and "
                               "decisions.csv"),
                       ("predict", "the targets' predictions beside their measured losses"),
                       ("report", "fit, then write report.md and figures/")):
        sub = commands.add_parser(name, help=text)
        study_arg(sub)
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "predict":
            sub.add_argument("--budget", type=float, action="append", default=[], metavar="C",
                             help="also the compute-optimal N*, D* and loss of each corpus at "
                             "this FLOP budget (approaches 2 and 3, with intervals); repeatable")

    release = commands.add_parser("release", help="the study as a Hub repository",
                                  add_help=False)
    release.add_argument("args", nargs=argparse.REMAINDER)

    for name, (_, text) in PASSTHROUGH.items():
        sub = commands.add_parser(name, help=text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _launch_options(sub) -> None:
    sub.add_argument("--launcher", choices=("local", "slurm"), default=None,
                     help="local: here, a pool of single-thread processes (default of the offline "
                     "presets); slurm: a job array, then evaluation, fitting and the report as a "
                     "job that depends on it")
    sub.add_argument("--workers", type=int, default=None, help="runs at once, local launcher")
    sub.add_argument("--dry-run", action="store_true",
                     help="write the configs and print the commands, run nothing")
    sub.add_argument("--sbatch-arg", action="append", default=[], dest="sbatch_args",
                     help="extra sbatch argument (repeatable), e.g. --sbatch-arg=--partition=gpu")
    sub.add_argument("--accelerate-config", default=None,
                     help="training/launch's cpu, cpu_ddp, gpu, ddp, fsdp2 or a path (default: "
                     "plain python -m training here; under slurm fsdp2 on GPU nodes for the paper "
                     "presets, cpu on CPU nodes for the offline ones)")
    sub.add_argument("--follow-up", action="store_true",
                     help="slurm: take the training stage from the arrays already submitted (how "
                     "each run ended, failures with their log) and submit nothing; the job that "
                     "depends on the array runs `l2l study ... --follow-up`")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:  # their own parsers, help and exit codes
        # As `python -m MODULE`, in a process of its own: modeling_l2l imports its model code
        # lazily only when located for a `-m` command, which keeps `l2l convert --help` fast.
        import subprocess

        return subprocess.run([sys.executable, "-m", PASSTHROUGH[argv[0]][0], *argv[1:]]).returncode
    if argv and argv[0] == "release":
        from l2l.release import main as release_main

        return release_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError) as exc:
        # Our own errors and the packages' (CorpusError, ConfigError, HeldOutDataError are
        # ValueErrors; RunLockedError and CheckpointError RuntimeErrors): one line each.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def load_spec(args):
    """The study spec the command line names: a preset or a YAML file, with ``--corpus``
    replacing its corpora; checked (a ConfigError names the bad field)."""
    from l2l.presets import get_preset
    from l2l.spec import StudySpec
    from training.typed_config import ConfigError

    spec = get_preset(args.preset) if args.preset else StudySpec.from_yaml(args.config)
    if args.corpus:
        corpora = {}
        for item in args.corpus:
            name, sep, source = item.partition("=")
            if not sep or not name.strip() or not source.strip():
                raise ConfigError(f"--corpus {item!r}: expected NAME=SOURCE, e.g. "
                                  "--corpus web=~/data/web.jsonl")
            if name.strip() in corpora:
                raise ConfigError(f"--corpus: {name.strip()!r} is given twice")
            corpora[name.strip()] = source.strip()
        spec.corpora = corpora
        # the spec's words describe its own corpora: say what this study compares instead
        spec.description = (f"{' against '.join(corpora)}, on the grid and targets of the "
                            f"`{spec.name}` study")
    if args.schedule is not None:
        spec.schedule = args.schedule
    return spec.check()


def _study_dir(args, spec) -> Path:
    return args.out if args.out is not None else Path("studies") / spec.name


def cmd_plan(args) -> int:
    from l2l.plan import plan_runs, plan_study

    spec = load_spec(args)
    if args.print_config:
        print(spec.to_yaml(), end="")
        return 0
    if args.dry_run:
        runs, targets = plan_runs(spec)
        _print_plan(spec, runs, targets)
        return 0
    runs = plan_study(spec, _study_dir(args, spec))
    print(f"{_study_dir(args, spec)}: {len(runs)} runs planned; configs in "
          f"{_study_dir(args, spec) / 'configs'}")
    return 0


def _print_plan(spec, runs, targets) -> None:
    """The runs a spec plans, as a table, and what training them costs."""
    from analysis.sizes import training_flops
    from l2l.plan import cost_line, plan_cost, run_role

    print(f"{spec.name}: {len(runs)} runs ({len(runs) - len(targets)} grid, {len(targets)} "
          f"targets) on {len(spec.corpora)} corpora: {', '.join(spec.corpora)}")
    print(f"{'run':<48} {'width':>5} {'layers':>6} {'N':>9} {'D':>9} {'D/N':>7} {'C':>9} "
          f"{'steps':>6}")
    for run in runs:
        mark = "  (target)" if run.run in targets else ""
        mark += f"  ({run_role(run)})" if run_role(run) else ""
        print(f"{run.run:<48} {run.d_model:>5} {run.n_layers:>6} {run.N:>9.3g} {run.D:>9.3g} "
              f"{run.tokens_per_param:>7.3g} {run.C:>9.3g} {run.steps:>6}{mark}")
    from training.branches import trained_fraction  # a decay branch trains only its decay

    total = sum(training_flops(r.d_model, r.n_layers, r.steps * r.global_batch_size * r.seq_len,
                               r.seq_len, spec.vocab_size) * trained_fraction(r) for r in runs)
    print(f"training FLOPs (the model's count): {total:.3g}; needs: "
          f"{'; '.join(spec.needs) or 'nothing beyond this package'}")
    print(cost_line(plan_cost(spec, runs)))


def cmd_train(args) -> int:
    from l2l.plan import read_spec
    from l2l.stages import slurm_outcome, train_study

    spec = read_spec(args.study)
    if args.follow_up:
        report = slurm_outcome(args.study)
    else:
        report = train_study(args.study, launcher=args.launcher or spec.launch.launcher,
                             workers=args.workers, dry_run=args.dry_run,
                             sbatch_args=tuple(args.sbatch_args),
                             accelerate_config=args.accelerate_config)
    _say_stage("train", report)
    return 1 if report.failed else 0


def cmd_eval(args) -> int:
    from l2l.stages import evaluate_study

    report = evaluate_study(args.study, task_data=args.task_data)
    _say_stage("eval", report)
    return 0


def _fit(study: Path, progress: bool):
    from analysis.results_table import read_results, wide
    from l2l.fits import check_grid_schedules, fit_study
    from l2l.layout import RESULTS
    from l2l.plan import read_record, read_spec

    spec, record = read_spec(study), read_record(study)
    if not (study / RESULTS).is_file():
        raise ValueError(f"{study} has no {RESULTS} yet: run `l2l eval {study}` first")
    results = wide(read_results(study / RESULTS))  # one row per run
    results, notes = _planned_only(study, results, record["targets"])
    check_grid_schedules(study, results, record["targets"], spec)  # cosine and WSD: not mixed
    fits = fit_study(results, spec, record["targets"], progress=progress)
    fits.missing = notes + fits.missing
    return spec, record, results, fits


def _planned_only(study: Path, results, targets: list[str]):
    """The results of the runs the study plans, and in words what is off: planned grid runs
    without results (never trained or evaluated), and results of runs its runs.csv does not
    plan (an edited plan, a copied run), which are left out of every fit."""
    from training.study import read_plan

    planned = {run.run for run in read_plan(study)}
    notes = []
    absent = sorted(planned - set(targets) - set(results.run))
    if absent:
        notes.append(f"{len(absent)} planned grid run(s) have no results (not trained or not "
                     f"evaluated), so the fits do without them: {', '.join(absent[:5])}"
                     + (" ..." if len(absent) > 5 else ""))
    foreign = sorted(set(results.run) - planned)
    if foreign:
        notes.append(f"{len(foreign)} run(s) in the results table are not in the study's runs.csv "
                     f"(an edited plan, a copied run) and are left out of every fit: "
                     f"{', '.join(foreign[:5])}" + (" ..." if len(foreign) > 5 else ""))
    return results[results.run.isin(planned)].reset_index(drop=True), notes


def cmd_fit(args) -> int:
    from l2l.fits import save_fits
    from l2l.layout import LAWS_DIR, PREDICTIONS

    _, _, _, fits = _fit(args.study, not args.quiet)
    save_fits(fits, args.study)
    print(f"{args.study}: {len(fits.laws)} laws in {LAWS_DIR}/, {len(fits.predictions)} predictions "
          f"in {PREDICTIONS}" + (f"; missing: {len(fits.missing)} (see report)" if fits.missing else ""))
    return 0


def cmd_predict(args) -> int:
    import math

    from l2l.decisions import allocation

    bad = [c for c in args.budget if not (math.isfinite(c) and c > 0)]
    if bad:
        raise ValueError(f"--budget {bad[0]}: a FLOP budget is a positive number, e.g. 1e21")
    spec, _, results, fits = _fit(args.study, not args.quiet)
    columns = ["run", "quantity", "method", "prediction", "lower", "upper", "actual",
               "relative_error"]
    print(fits.predictions[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.budget:
        table, left_out = allocation(fits, results, spec, sorted(args.budget),
                                     spec.prediction.level)
        print(f"\ncompute-optimal allocation ({spec.prediction.level:.0%} intervals):")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}") if len(table)
              else "(no law of (N, D) could be fitted on this grid)")
        for line in left_out:
            print(f"left out: {line}")
    return 0


def cmd_report(args) -> int:
    path = make_report(args.study, progress=not args.quiet)
    print(f"{path}")
    return 0


def make_report(study: Path, progress: bool = True, failures: dict | None = None) -> Path:
    from l2l.fits import save_fits
    from l2l.report import draw_figures, write_report

    spec, record, results, fits = _fit(study, progress)
    save_fits(fits, study)
    figures = draw_figures(fits, results, record["targets"], study, spec.prediction.level,
                           list(spec.corpora))
    path = write_report(study, spec=spec, record=record, results=results, fits=fits,
                        figures=figures, failures=failures or {})
    for line in summary_lines(fits, spec.prediction.level):
        print(f"[report] {line}", flush=True)
    return path


def summary_lines(fits, level: float) -> list[str]:
    """What the study found, in a few lines: how the selected and the paper's methods did on the
    measured targets, and each metric's decision."""
    lines = []
    preds = fits.predictions
    if preds is not None and len(preds):
        for method in ("selected", "paper"):
            mine = preds[(preds.method == method) & preds.actual.notna()]
            if len(mine):
                lines.append(f"{method}: {len(mine)} measured target predictions, mean absolute "
                             f"error {mine.relative_error.abs().mean():.2%}, "
                             f"{int(mine.covered.astype(bool).sum())} inside their {level:.0%} "
                             "interval")
    decisions = fits.decisions
    if decisions is not None and len(decisions):
        chosen = decisions[decisions.method == "selected"]
        for row in chosen.itertuples():
            favourite, other, p = ((row.data_a, row.data_b, row.p_a_better)
                                   if row.p_a_better >= 0.5 else
                                   (row.data_b, row.data_a, 1 - row.p_a_better))
            lines.append(f"{row.metric}: {favourite} beats {other} with probability {p:.2f}")
    return lines


def cmd_study(args) -> int:
    from l2l.plan import plan_study
    from l2l.stages import evaluate_study, slurm_outcome, train_study
    from training.run_lock import RunLock

    spec = load_spec(args)
    study = _study_dir(args, spec)
    launcher = args.launcher or spec.launch.launcher
    if launcher == "slurm" and not (args.dry_run or args.follow_up):
        from training.launch.slurm import require_sbatch

        require_sbatch("--launcher slurm")  # before the plan writes a folder nothing can train
    print(f"[plan] {study}: study {spec.name!r}", flush=True)
    runs = plan_study(spec, study)
    print(f"[plan] {study}: {len(runs)} runs planned", flush=True)
    if args.stop_after == "plan":
        return 0
    # Two `l2l study` processes on one folder cannot both write it.
    with RunLock(study, then="run the same command again"):
        if args.follow_up:  # the slurm job that depends on the arrays
            trained = slurm_outcome(study)
        else:
            trained = train_study(study, launcher=launcher, workers=args.workers,
                                  dry_run=args.dry_run, sbatch_args=tuple(args.sbatch_args),
                                  accelerate_config=args.accelerate_config)
        _say_stage("train", trained)
        if launcher == "slurm" and not args.follow_up:
            return _submit_followers(study, trained, args)
        if args.dry_run or args.stop_after == "train":
            return 0
        evaluated = evaluate_study(study, task_data=args.task_data)
        _say_stage("eval", evaluated)
        if args.stop_after == "eval":
            return 0
        failures = {**{f"training {k}": v for k, v in trained.failed.items()}, **evaluated.failed}
        report = make_report(study, failures=failures)
        print(f"[report] {report}", flush=True)
        if args.stop_after in ("fit", "report"):
            return 0
        from l2l.release import build_release

        print(f"[release] {build_release(study)} (push it with `l2l release {study} "
              "--repo-id ORG/NAME`)", flush=True)
    return 0


def _submit_followers(study: Path, trained, args) -> int:
    """Evaluation, fitting, the report and the release folder as one slurm job: the rest of this
    ``l2l study``, run with ``--follow-up`` once every training task has ended (``afterany``: a
    failed run is reported, not waited for). It also waits for an earlier follow-up job still
    queued or running, so that two never write the study at once; where one is already waiting
    and nothing new was submitted, none is added."""
    import shlex

    from l2l.layout import SPEC_FILE
    from l2l.plan import read_spec
    from l2l.stages import default_accelerate_config
    from training.launch import accelerate_config
    from training.launch.slurm import in_flight_jobs, job_name, runs_on_cpu, slurm_dir, submit

    if args.stop_after == "train":
        return 0
    earlier = [] if args.dry_run else in_flight_jobs(study, kind="follow-up")
    if earlier and not trained.job_id:
        print(f"[study] follow-up job {earlier[-1].job} is already queued or running (it waits "
              f"for {', '.join(earlier[-1].after) or 'nothing'}); nothing more submitted",
              flush=True)
        return 0
    after = list(trained.wait_for) + [job.job for job in earlier]
    if args.dry_run and trained.to_train:
        after.append("<array job id>")  # the array this dry run would submit
    # The follow-up runs the study as planned: from the spec recorded in its folder.
    follow = [sys.executable, "-m", "l2l", "study", "--config", str((study / SPEC_FILE).resolve()),
              "--out", str(study.resolve()), "--launcher", "slurm", "--follow-up"]
    follow += ["--task-data", args.task_data] if args.task_data else []
    follow += ["--stop-after", args.stop_after] if args.stop_after else []
    accel = args.accelerate_config or default_accelerate_config(read_spec(study), "slurm")
    # Evaluation runs on a GPU where training did (its tasks and losses are many forwards).
    gpu = [] if runs_on_cpu(accelerate_config(accel)) else ["--gpus-per-node=1"]
    cmd = ["sbatch", "--parsable", *([f"--dependency=afterany:{':'.join(after)}"] if after else []),
           f"--job-name={job_name(study)}-fit", f"--output={slurm_dir(study)}/%x-%j.out", *gpu,
           *args.sbatch_args, "--wrap", shlex.join(follow)]
    if args.dry_run:
        print("would submit: " + shlex.join(cmd), flush=True)
        return 0
    try:
        job = submit(study, cmd, kind="follow-up", after=after)
    except RuntimeError as exc:
        if not trained.job_id:
            raise
        raise RuntimeError(f"{exc}; the training array is submitted (job {trained.job_id}): "
                           "run the same command again to submit the follow-up job alone") from None
    print(f"[study] follow-up job {job.job} (evaluation, fits, report) " + (
        f"waits for job{'s' if len(after) > 1 else ''} {', '.join(after)}" if after else
        "starts now") + f"; its output: "
        f"{job.log}; `squeue --jobs={','.join([*after, job.job])}` shows where they stand, "
        f"`l2l train {study} --follow-up` how each run ended", flush=True)
    return 0


def _say_stage(stage: str, report) -> None:
    # eval: every finished run, its metrics already in the table not computed again
    parts = [f"{len(report.done)} {'evaluated' if stage == 'eval' else 'done'}"] if report.done else []
    if report.skipped:
        parts.append(f"{len(report.skipped)} already finished")
    if report.to_train:
        parts.append(f"{len(report.to_train)} " + (
            f"submitted as slurm job{'s' if ',' in report.job_id else ''} {report.job_id}"
            if report.job_id else
            "would be submitted to slurm" if report.launcher == "slurm" else
            "would be trained") + (f" ({len(report.retried)} of them again)"
                                   if report.retried else ""))
    for what, tasks in (("queued", report.pending), ("running", report.running)):
        if tasks:
            jobs = sorted({task.split("_")[0] for task in tasks.values()}, key=int)
            parts.append(f"{len(tasks)} {what} in slurm job {', '.join(jobs)}")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    print(f"[{stage}] " + (", ".join(parts) or "nothing to do"), flush=True)
    if report.log:
        print(f"[{stage}]   each task's output: {report.log.format(index='<index>')}", flush=True)
    for job, reason in report.stuck.items():
        print(f"[{stage}]   slurm job {job} cannot start as submitted ({reason}), nor can what "
              f"depends on it: `scancel {job}`, then submit again with other --sbatch-arg",
              flush=True)
    for what, why in report.retried.items():
        again = "submitted again" if report.job_id else "would be submitted again"
        print(f"[{stage}]   {what}: {again}; its last task: {why}", flush=True)
    for what, why in report.failed.items():
        print(f"[{stage}]   {what}: {why}", flush=True)


COMMANDS = {"study": cmd_study, "plan": cmd_plan, "train": cmd_train, "eval": cmd_eval,
            "fit": cmd_fit, "predict": cmd_predict, "report": cmd_report}


if __name__ == "__main__":
    sys.exit(main())
