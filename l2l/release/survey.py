"""What a release of a study holds, read from the study folder (nothing written): the finished
runs and the files each releases, the runs left out and why, the results table, the laws, the
predictions, the report and its figures, and the model code for the repository's root."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import load_law
from analysis.results_table import check_results, read_rows
from l2l.layout import FIGURES_DIR, LAWS_DIR, PREDICTIONS, REPORT, RESULTS, STUDY_RECORD
from training.study import (
    FINAL_NAME,
    PLAN_FILES,
    finished_folders,
    is_finished,
    is_study,
    read_plan,
)

CODE_FILES = ("configuration_l2l.py", "modeling_l2l.py")
# Files of a finished run folder that every release of it holds (the trainer writes them all).
REQUIRED_RUN_FILES = (FINAL_NAME, "config.json", "training_config.yaml", "metrics.jsonl")
OPTIONAL_RUN_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    # what a tokenizer without a fast version saves instead (AutoTokenizer needs them)
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
LAW_FILES = ("config.json", "bootstrap.csv", "README.md")  # what Law.save_pretrained writes


# ---------------------------------------------------------------------------- the survey


@dataclass
class Run:
    """A finished run and what its release folder will hold."""

    name: str
    folder: Path
    final: dict
    config: dict
    files: dict[str, Path]  # name in the release -> source
    rows: list[dict] = field(default_factory=list)  # its results rows, one per metric

    def value(self, key: str):
        """N, D, C or dataset from ``final.json``, else from the run name."""
        if self.final.get(key) is not None:
            return self.final[key]
        from analysis.run_names import parse_run_name

        try:
            return getattr(parse_run_name(self.name), key)
        except ValueError:  # a folder not named like the paper's runs
            return None


@dataclass
class Survey:
    """Everything a release of the study holds, read from the study folder (nothing written)."""

    study: Path
    runs: list[Run]
    left_out: dict[str, str]  # run -> why it is not released
    targets: set[str]
    preset: str | None
    results: bytes | None  # the complete rows of the results table
    n_rows: int
    top_files: dict[str, Path]  # predictions, report, figures, laws: name in release -> source
    laws: dict[str, str]  # released law -> its form
    bad_laws: dict[str, str]  # law folder -> why it is not released
    root_code: dict[str, Path]
    code_note: str
    sources: dict[str, Path]  # every file read: label -> path (the up-to-date check)


def check_study(study_dir: str | os.PathLike) -> Path:
    """The study folder as a Path; ``FileNotFoundError`` when there is none, ``ValueError`` when
    it is not a study (no plan of the planner, no l2l record, no run folder)."""
    study = Path(study_dir).expanduser()
    if not study.exists():
        raise FileNotFoundError(f"study folder {study} does not exist")
    if not study.is_dir():
        raise NotADirectoryError(f"{study} is a file, not a study folder")
    if finished_folders(study) or (study / STUDY_RECORD).is_file() or is_study(study):
        return study
    raise ValueError(
        f"{study} is not a study folder: no plan (runs.csv, study.json), no {STUDY_RECORD} "
        f"and no run folder holding {FINAL_NAME}; plan one with `l2l plan` or "
        "`python -m training.sweep --out STUDY`"
    )


def read_json(path: Path):
    """A JSON file's content; a ValueError naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


def _damaged(folder: Path, final: dict) -> str | None:
    """What of a run's model differs from the checksums its final.json recorded (runs from
    before those checksums are taken as they are)."""
    from training.checkpoint import check_files

    files = final.get("files")
    if not isinstance(files, dict):
        return None
    return check_files(folder, files)


def _planned_runs(study: Path) -> list[str]:
    try:
        return [run.run for run in read_plan(study)]
    except FileNotFoundError:  # no plan: no run is said left out
        return []


def _why_unfinished(study: Path, run: str) -> str:
    folder = study / run
    if not folder.is_dir():
        return "not started (no run folder)"
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and any(p.name.startswith("step_") for p in checkpoints.iterdir()):
        return (
            f"unfinished: checkpoints but no {FINAL_NAME} (still training, paused, interrupted "
            "or failed; `--resume` continues it)"
        )
    return f"unfinished: no {FINAL_NAME} (still training, or failed before its first checkpoint)"


def _run_files(folder: Path) -> tuple[dict[str, Path] | None, str]:
    """The files of a finished run folder to release, or (None, why not)."""
    missing = [name for name in REQUIRED_RUN_FILES if not (folder / name).is_file()]
    files = {name: folder / name for name in REQUIRED_RUN_FILES}
    if (folder / WEIGHTS_NAME).is_file():
        files[WEIGHTS_NAME] = folder / WEIGHTS_NAME
    elif (folder / WEIGHTS_INDEX_NAME).is_file():  # sharded weights: the index and its shards
        index = read_json(folder / WEIGHTS_INDEX_NAME)
        shards = sorted(set((index.get("weight_map") or {}).values()))
        absent = [s for s in shards if not (folder / s).is_file()]
        if not shards or absent:
            return None, f"{WEIGHTS_INDEX_NAME} names missing shards ({', '.join(absent[:3])})"
        files[WEIGHTS_INDEX_NAME] = folder / WEIGHTS_INDEX_NAME
        files.update({s: folder / s for s in shards})
    else:
        missing.append(WEIGHTS_NAME)
    if missing:
        return None, f"finished ({FINAL_NAME}) but its folder lacks {', '.join(missing)}"
    for name in CODE_FILES:
        if (folder / name).is_file():
            files[name] = folder / name
        else:
            package = _package_code_file(name)
            if package is None:
                return None, f"no {name} in its folder and the modeling_l2l package is not installed"
            files[name] = package
    files.update({n: folder / n for n in OPTIONAL_RUN_FILES if (folder / n).is_file()})
    return files, ""


def _package_code_file(name: str) -> Path | None:
    """The installed modeling_l2l's file ``name``, found without importing the package (its
    import loads torch and transformers)."""
    spec = importlib.util.find_spec("modeling_l2l")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / name
    return path if path.is_file() else None


def survey_study(study: Path) -> Survey:
    """Everything a release of ``study`` holds; a ``ValueError`` when it has no finished run."""
    sources: dict[str, Path] = {}

    def read(label: str, path: Path) -> Path:
        sources[label] = path
        return path

    left_out: dict[str, str] = {}
    runs = []
    for folder in finished_folders(study):
        try:
            final = read_json(read(f"{folder.name}/{FINAL_NAME}", folder / FINAL_NAME))
            config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
        except ValueError as error:
            left_out[folder.name] = str(error).replace(str(folder) + "/", "")
            continue
        if not isinstance(final, dict) or not isinstance(config, dict):
            left_out[folder.name] = f"{FINAL_NAME} or config.json is not a JSON object"
            continue
        files, why = _run_files(folder)
        if files is None:
            left_out[folder.name] = why
            continue
        damaged = _damaged(folder, final)
        if damaged:
            left_out[folder.name] = (
                f"{damaged} since the run finished, by its {FINAL_NAME}: not released; train it "
                f"again (remove its {FINAL_NAME}: `l2l train` resumes from its last checkpoint)")
            continue
        if config.get("model_type") != "l2l":
            left_out[folder.name] = (
                f"config.json is not an l2l model (model_type {config.get('model_type')!r})"
            )
            continue
        for name, path in files.items():
            read(f"{folder.name}/{name}" if path.parent == folder else f"package/{name}", path)
        runs.append(Run(folder.name, folder, final, config, files))

    for run in _planned_runs(study):
        if not is_finished(study, run):
            left_out[run] = _why_unfinished(study, run)
    for name in PLAN_FILES:
        if (study / name).is_file():
            read(name, study / name)

    if not runs:
        why = "".join(f"\n  {run}: {reason}" for run, reason in sorted(left_out.items())[:20])
        raise ValueError(
            f"study {study} has no finished run to release (a run is finished when its folder "
            f"holds {FINAL_NAME} and the model)" + (f"; its runs:{why}" if why else "")
        )

    targets, preset = set(), None
    if (study / STUDY_RECORD).is_file():
        record = read_json(read(STUDY_RECORD, study / STUDY_RECORD))
        if isinstance(record, dict):
            targets = set(record.get("targets") or ())
            spec = record.get("spec") if isinstance(record.get("spec"), dict) else {}
            preset = spec.get("name") or record.get("preset")

    results, n_rows = None, 0
    if (study / RESULTS).is_file():
        table = read_rows(read(RESULTS, study / RESULTS))
        results, n_rows = table.data, len(table.rows)
        rows = []
        if table.rows:  # one row per (run, metric): the same row twice is kept once
            checked = check_results(pd.DataFrame(table.rows), origin=str(study / RESULTS))
            rows = [table.rows[i] for i in checked.index]
        by_run: dict[str, list[dict]] = {}
        for row in rows:
            by_run.setdefault(row["run"], []).append(row)
        for run in runs:
            run.rows = by_run.get(run.name, [])

    top_files: dict[str, Path] = {}
    for name in (PREDICTIONS, REPORT):
        if (study / name).is_file():
            top_files[name] = read(name, study / name)
    if (study / FIGURES_DIR).is_dir():
        for png in sorted((study / FIGURES_DIR).glob("*.png")):
            if png.is_file():
                label = f"{FIGURES_DIR}/{png.name}"
                top_files[label] = read(label, png)

    laws, bad_laws = _survey_laws(study, top_files, read)
    root_code, code_note = _root_code(runs)
    for name, path in root_code.items():
        read(f"root/{name}", path)
    return Survey(
        study=study, runs=sorted(runs, key=_run_order), left_out=dict(sorted(left_out.items())),
        targets=targets, preset=preset, results=results, n_rows=n_rows, top_files=top_files,
        laws=laws, bad_laws=bad_laws, root_code=root_code, code_note=code_note, sources=sources,
    )  # fmt: skip


def _run_order(run: Run):
    return (str(run.value("dataset")), float(run.value("N") or 0), float(run.value("C") or 0),
            run.name)  # fmt: skip


def _survey_laws(study: Path, top_files: dict[str, Path], read) -> tuple[dict, dict]:
    """Every folder under ``laws/`` that analysis loads is released; the others are named."""
    laws, bad = {}, {}
    root = study / LAWS_DIR
    if not root.is_dir():
        return laws, bad
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not folder.is_dir():
            continue
        files = [name for name in LAW_FILES if (folder / name).is_file()]
        for name in files:  # a law that fails now may load after a fix: watch it either way
            read(f"{LAWS_DIR}/{folder.name}/{name}", folder / name)
        try:
            law = load_law(folder)
        except (ValueError, OSError) as error:
            bad[folder.name] = " ".join(str(error).replace(str(folder), folder.name).split())
            continue
        laws[folder.name] = law.form
        for name in files:
            top_files[f"{LAWS_DIR}/{folder.name}/{name}"] = folder / name
    return laws, bad


def _root_code(runs: list[Run]) -> tuple[dict[str, Path], str]:
    """The code files for the repository root: the runs' own when they all agree, else the
    installed package's (each run folder keeps the code it was trained with)."""
    chosen, differ = {}, []
    for name in CODE_FILES:
        contents = {run.name: run.files[name].read_bytes() for run in runs}
        first = runs[0].files[name]
        if len(set(contents.values())) == 1:
            chosen[name] = first
            continue
        package = _package_code_file(name)
        chosen[name] = package or first
        reference = chosen[name].read_bytes()
        differ += [run for run, text in contents.items() if text != reference]
    note = ""
    if differ:
        note = (
            "The runs were not all trained with the same model code; the code at the root "
            "(which `from_pretrained(repo, subfolder=run)` uses) is the current one. These "
            "runs keep their own code in their folder; download the folder and load it from "
            "there: " + ", ".join(f"`{r}`" for r in sorted(set(differ)))
        )
    return chosen, note


