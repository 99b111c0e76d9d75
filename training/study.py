"""The study folder: the planned runs of a scaling study and the training config of each.

Contract (shared with evaluation and analysis)::

    <study>/runs.csv, runs.json   one row per planned run (COLUMNS below)
    <study>/study.json            how to build each run's config: recipe preset or base YAML,
                                  and the dotted overrides given to the planner
    <study>/base_config.yaml      the base training config (for reading; study.json rules)
    <study>/configs/<run>.yaml    the full config of each run (written by the launcher)
    <study>/<run>/                the run folder written by training; finished iff final.json

A recipe whose hyper-parameters depend on the model size (OLMo-ladder's learning rate, batch and
warmup scale with N) is rebuilt per run from its preset at the run's depth, so one study can mix
sizes without a config per size.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from training.config import TrainingConfig

COLUMNS = ("run", "dataset", "N", "D", "C", "n_layers", "d_model", "steps", "tokens_per_param",
           "global_batch_size", "seq_len", "grid", "schedule", "trunk", "branch_step")
# Columns added with WSD trunks and branches; a plan written before them reads as cosine runs.
LATER_COLUMNS = {"schedule": "cosine", "trunk": "", "branch_step": "0"}
PLAN_FILES = ("runs.csv", "runs.json")  # the runs table, in either format (read_plan: CSV first)
# Written last by the trainer, atomically, into the run folder: a run is finished iff its folder
# holds it.
FINAL_NAME = "final.json"
# Presets whose recipe is a function of the depth: rebuilt for each run.
SIZE_DEPENDENT_PRESETS = ("olmo-ladder",)


@dataclass(frozen=True)
class PlannedRun:
    run: str
    """``L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}`` (``analysis.run_names``)."""
    dataset: str
    N: int
    """Parameters, embeddings included (the paper's formula)."""
    D: int
    """Training tokens (C / 6N on an iso-FLOP grid, rounded down)."""
    C: float
    """FLOP budget: the grid's budget on an iso-FLOP grid, else 6 N D."""
    n_layers: int
    d_model: int
    steps: int
    """Optimizer steps: floor(D / (global_batch_size x seq_len))."""
    tokens_per_param: float
    global_batch_size: int
    seq_len: int
    grid: str
    schedule: str = "cosine"
    """``cosine`` (a run of its own, the schedule of the recipe) or ``wsd``: a warmup-stable-decay
    trunk or decay branch (``training.branches``)."""
    trunk: str = ""
    """WSD: the run whose stable phase this run shares (a trunk names itself); empty: none."""
    branch_step: int = 0
    """WSD: the step at which the run's decay starts, where a branch leaves its trunk's
    checkpoint (a trunk checkpoints and keeps every branch step)."""


def base_config(preset: str | None, config_path: str | None, overrides: list[str],
                n_layers: int | None = None) -> TrainingConfig:
    """The recipe of a study at depth ``n_layers``: a preset (size-dependent ones built at that
    depth) or a YAML file, with the dotted overrides applied."""
    from training.config import PRESETS

    if config_path:
        cfg = TrainingConfig.from_yaml(config_path)
    else:
        preset = preset or "paper"
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
        if preset in SIZE_DEPENDENT_PRESETS and n_layers is not None:
            cfg = PRESETS[preset](n_layers)
        else:
            cfg = PRESETS[preset]()
    return cfg.with_overrides(overrides).validate()


def write_plan(runs: list[PlannedRun], study_dir: str | Path, *, preset: str | None = None,
               config_path: str | None = None, overrides: list[str] | None = None,
               base: TrainingConfig | None = None,
               corpora: list[str] | dict[str, str] | None = None,
               formats: tuple[str, ...] | list[str] = ("csv", "json")) -> list[Path]:
    """Write the runs table, ``study.json`` and ``base_config.yaml`` into the study folder.
    The base config is a preset (with ``overrides``), a YAML file (``config_path``) or a
    config (``base``). ``corpora``: the corpus arguments of the plan (registered names or local
    paths, named by ``corpus_label``), or a mapping of the runs' corpus labels to their sources.
    The folder must be new, empty or a study already (``check_study_destination``)."""
    from analysis.atomic import write_atomic  # analysis' import is heavy: only when writing
    from training.corpora import corpus_label

    study = Path(study_dir)
    check_study_destination(study)
    study.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides or [])
    rows = [asdict(r) for r in runs]
    written = []
    if "csv" in formats:
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(study / "runs.csv", table.getvalue())
        written.append(study / "runs.csv")
    if "json" in formats:
        write_atomic(study / "runs.json", json.dumps(rows, indent=1))
        written.append(study / "runs.json")
    if config_path:  # copy the base YAML into the study so the study folder is self-contained
        write_atomic(study / "base_config.yaml", Path(config_path).read_text())
        config_path = "base_config.yaml"
    elif base is not None:
        write_atomic(study / "base_config.yaml", base.to_yaml())
        config_path = "base_config.yaml"
    else:
        write_atomic(study / "base_config.yaml",
                     base_config(preset, None, overrides).to_yaml())
    if isinstance(corpora, dict):
        sources = dict(corpora)
    else:
        sources = {corpus_label(c): os.path.abspath(os.path.expanduser(c))
                   for c in (corpora or []) if corpus_label(c) != c}
    meta = {"preset": None if config_path else (preset or "paper"), "config": config_path,
            "overrides": overrides, "corpora": sources}
    write_atomic(study / "study.json", json.dumps(meta, indent=1))
    written += [study / "base_config.yaml", study / "study.json"]
    return written


def read_plan(study_dir: str | Path) -> list[PlannedRun]:
    """The planned runs of a study folder (``runs.csv``, else ``runs.json``).

    Raises ``FileNotFoundError`` when there is no such folder or no plan in it, ``ValueError``
    (naming the file, the row and the column) when the table cannot be read."""
    study = Path(study_dir)
    plan_it = f"plan one with `python -m training.sweep --grid ... --out {study}`"
    if not study.exists():
        raise FileNotFoundError(f"study folder {study} does not exist; {plan_it}")
    if not study.is_dir():
        raise FileNotFoundError(f"{study} is a file, not a study folder; a study is the folder "
                                "written by `python -m training.sweep --out STUDY`")
    if (study / "runs.csv").is_file():
        source = study / "runs.csv"
        with open(source, newline="") as handle:
            rows = list(csv.DictReader(handle))
    elif (study / "runs.json").is_file():
        source = study / "runs.json"
        rows = _read_json(source)
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{source} must hold a JSON list of objects (one per run)")
    else:
        raise FileNotFoundError(f"no runs.csv or runs.json in {study}: not a study folder; "
                                f"{plan_it}")
    types = {"N": int, "D": int, "C": float, "n_layers": int, "d_model": int, "steps": int,
             "tokens_per_param": float, "global_batch_size": int, "seq_len": int,
             "branch_step": int}
    runs = []
    for i, row in enumerate(rows, 1):
        row = {**LATER_COLUMNS, **row}
        missing = [k for k in COLUMNS if k not in row]
        if missing:
            raise ValueError(f"{source}: the runs table lacks column(s) {', '.join(missing)}")
        values = {}
        for k in COLUMNS:
            try:
                values[k] = types.get(k, str)(row[k])
            except (TypeError, ValueError):  # a short csv row reads as None
                raise ValueError(f"{source}: run {i} ({row.get('run')}): column {k}: "
                                 f"{row[k]!r} is not a valid {types.get(k, str).__name__}"
                                 ) from None
        if values["schedule"] not in ("cosine", "wsd"):
            raise ValueError(f"{source}: run {i} ({values['run']}): column schedule: "
                             f"{values['schedule']!r} is not cosine or wsd")
        runs.append(PlannedRun(**values))
    names = {run.run for run in runs}
    for run in runs:
        if run.trunk and run.trunk not in names:
            raise ValueError(f"{source}: run {run.run} branches off {run.trunk}, which the table "
                             "does not plan; plan the study again")
    return runs


def is_study(study_dir: str | Path) -> bool:
    """Whether a folder holds a plan written by the planner: ``study.json`` (a JSON object of the
    planner's keys) or a runs table with the planner's columns (studies from before
    ``study.json``)."""
    study = Path(study_dir)
    try:
        meta = json.loads((study / "study.json").read_text())
        if isinstance(meta, dict) and {"preset", "config", "overrides"} <= meta.keys():
            return True
    except (OSError, ValueError):
        pass
    try:
        with open(study / "runs.csv", newline="") as handle:
            header = tuple(next(csv.reader(handle), ()))
            return header in (COLUMNS, tuple(k for k in COLUMNS if k not in LATER_COLUMNS))
    except (OSError, ValueError):
        return False


def check_study_destination(study_dir: str | Path) -> None:
    """Refuse (``FileExistsError``) to write a plan where it would overwrite or mix with files that
    are not a study's: a path that is a file, or a folder that is neither empty nor a study.
    Writing into an existing study re-plans it (its run folders are kept)."""
    study = Path(study_dir)
    if study.exists() and not study.is_dir():
        raise FileExistsError(f"{study} is a file, not a study folder; choose a new folder")
    if not study.is_dir() or is_study(study):
        return
    entries = sorted(p.name for p in study.iterdir())
    if entries:
        shown = ", ".join(entries[:8]) + (f" and {len(entries) - 8} more" if len(entries) > 8
                                          else "")
        raise FileExistsError(
            f"{study} is not a study folder (no study.json or runs table of the planner) and "
            f"holds {shown}; writing runs.csv, runs.json, study.json and base_config.yaml there "
            "could overwrite those files: choose a new or empty folder")


def run_finished(run_dir: str | Path) -> bool:
    """Whether a run folder holds a finished run: ``final.json`` (the trainer writes it last,
    atomically)."""
    return (Path(run_dir) / FINAL_NAME).is_file()


def is_finished(study_dir: str | Path, run: str) -> bool:
    """Whether the run ``run`` of a study is finished (``run_finished`` of its folder)."""
    return run_finished(Path(study_dir) / run)


def finished_folders(study_dir: str | Path) -> list[Path]:
    """The run folders of a study that hold a finished run, sorted by name (hidden folders, such
    as a release being built, are not runs)."""
    return sorted(p for p in Path(study_dir).iterdir()
                  if p.is_dir() and not p.name.startswith(".") and run_finished(p))  # fmt: skip


def run_config(study_dir: str | Path, run: PlannedRun,
               plan: list[PlannedRun] | None = None) -> TrainingConfig:
    """The full training config of one planned run of the study (``plan``: the study's runs,
    read when not given, which a WSD run needs for its trunk)."""
    study = Path(study_dir)
    meta_path = study / "study.json"
    meta = _read_json(meta_path) if meta_path.is_file() else {
        "preset": None, "config": "base_config.yaml", "overrides": []}
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path} must hold a JSON object (preset, config, overrides)")
    config_path = str(study / meta["config"]) if meta.get("config") else None
    cfg = base_config(meta.get("preset"), config_path, meta.get("overrides", []), run.n_layers)
    cfg.model.n_layers = run.n_layers
    if run.d_model != 64 * run.n_layers:  # a width other than the paper's 64 n (heads of 64)
        cfg.model.d_model, cfg.model.n_heads = run.d_model, run.d_model // 64
    # Local-file corpora go by their label in run names; study.json maps labels back to paths.
    cfg.data.corpus = meta.get("corpora", {}).get(run.dataset, run.dataset)
    cfg.batch.global_batch_size = run.global_batch_size
    cfg.data.seq_len = run.seq_len
    cfg.run.tokens = run.D
    cfg.run.steps = run.steps
    cfg.run.flop_budget = run.C
    cfg.run.name = run.run
    cfg.run.output_dir = str(study)
    if run.schedule == "wsd":
        from training.branches import branch_settings

        settings = branch_settings(run, plan if plan is not None else read_plan(study),
                                   warmup_fraction=cfg.schedule.warmup_fraction,
                                   warmup_tokens=cfg.schedule.warmup_tokens)
        for key, value in settings.items():
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, value)
    return cfg.validate()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:  # its message names neither the file nor the study
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def run_schedule(run_dir: str | Path) -> str | None:
    """The schedule a finished run was trained with (its ``final.json``, else its config's
    ``schedule.kind``), or None when neither says."""
    run_dir = Path(run_dir)
    try:
        final = json.loads((run_dir / FINAL_NAME).read_text())
        if isinstance(final, dict) and isinstance(final.get("schedule"), str):
            return final["schedule"]
    except (OSError, ValueError):
        pass
    try:
        import yaml

        saved = yaml.safe_load((run_dir / "training_config.yaml").read_text())
        return str(saved["schedule"]["kind"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
