"""``l2l release``: a finished study as a Hub repository laid out like the paper's.

The paper's runs live in one repository, ``KempnerInstituteAI/loss-to-loss``, one folder per run
named ``L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}``. ``build_release(study)`` writes a study in
that layout to ``STUDY/release/``::

    release/
        README.md                  model card: the released runs, the runs left out and why
        results.jsonl              the study's results table (evaluation's tidy rows)
        predictions.csv            the laws' predictions (when the study has them)
        report.md, figures/*.png   the study's report (when written)
        laws/<name>/               every fitted law analysis can load (analysis.load_law)
        configuration_l2l.py       the model code, also at the root: transformers looks for
        modeling_l2l.py            remote code at the root of a repository even when loading
                                   a subfolder (from_pretrained(repo, subfolder=run, ...))
        <run>/                     one per finished run (its folder holds final.json):
            config.json (with auto_map), configuration_l2l.py, modeling_l2l.py,
            model.safetensors, generation_config.json, tokenizer files, training_config.yaml,
            metrics.jsonl, final.json, README.md (model card, model-index of its results)
        .l2l-release.json          manifest: every file's size and hashes (never uploaded)

Nothing else of a run folder is copied: not its checkpoints/, logs/, .lock or corpus.json (local
paths). The folder is built in a hidden sibling and renamed into place, so an interrupted build
leaves the previous release (or none), never a half-written one.

``push_release(study, "org/name")`` uploads it with huggingface_hub: one commit per run, then one
for the top-level files. Runs whose files are on the Hub already (same size and hash) are
skipped, so a rerun after an interruption uploads only what is missing. From the shell::

    l2l release STUDY --dry-run                 # write STUDY/release/ and list it
    l2l release STUDY --repo-id org/my-study    # ... and push it (HF_TOKEN or `hf auth login`)

Heavy modules (torch, transformers, analysis) are imported inside the functions that need them,
so ``l2l release --help`` answers at once.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

RELEASE_DIR = "release"
MANIFEST_NAME = ".l2l-release.json"
FORMAT_VERSION = 1
RESULTS_NAME = "results.jsonl"
PREDICTIONS_NAME = "predictions.csv"
REPORT_NAME = "report.md"
FIGURES_DIR = "figures"
LAWS_DIR = "laws"
STUDY_RECORD = "l2l_study.json"  # l2l.plan's record: preset, corpora, target runs
CARD_NAME = "README.md"
CODE_FILES = ("configuration_l2l.py", "modeling_l2l.py")
# Files of a finished run folder that every release of it holds (the trainer writes them all).
REQUIRED_RUN_FILES = ("final.json", "config.json", "training_config.yaml", "metrics.jsonl")
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
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
LAW_FILES = ("config.json", "bootstrap.csv", "README.md")  # what Law.save_pretrained writes
TAGS = ("l2l", "scaling-laws")
REPO_PLACEHOLDER = "ORG/NAME"
LOGIN_HELP = (
    "log in with `hf auth login` (or `huggingface-cli login`), set the HF_TOKEN environment "
    "variable, or pass token=...; the token needs write access to the repository"
)
_CHUNK = 8 * 1024 * 1024

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- the survey


@dataclass
class _Run:
    """A finished run and what its release folder will hold."""

    name: str
    folder: Path
    final: dict
    config: dict
    files: dict[str, Path]  # name in the release -> source
    rows: list[dict] = field(default_factory=list)  # its results rows, one per metric

    def value(self, key: str):
        """N, D, C or dataset from final.json, else from the run name."""
        if self.final.get(key) is not None:
            return self.final[key]
        from analysis.run_names import parse_run_name

        try:
            return getattr(parse_run_name(self.name), key)
        except ValueError:  # a folder not named like the paper's runs
            return None


@dataclass
class _Survey:
    """Everything a release of the study holds, read from the study folder (nothing written)."""

    study: Path
    runs: list[_Run]
    left_out: dict[str, str]  # run -> why it is not released
    targets: set[str]
    preset: str | None
    results: bytes | None  # the complete rows of results.jsonl
    n_rows: int
    top_files: dict[str, Path]  # predictions, report, figures, laws: name in release -> source
    laws: dict[str, str]  # released law -> its form
    bad_laws: dict[str, str]  # law folder -> why it is not released
    root_code: dict[str, Path]
    code_note: str
    sources: dict[str, Path]  # every file read: label -> path (the up-to-date check)

    def fingerprint(self, repo_id: str | None) -> dict:
        """What a release built from this survey depends on; a release whose manifest records
        the same is up to date. Sizes and mtimes, not hashes: cheap for gigabytes of weights."""
        stats = {}
        for label, path in sorted(self.sources.items()):
            st = path.stat()
            stats[label] = [st.st_size, st.st_mtime_ns]
        return {
            "format": FORMAT_VERSION,
            "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
            "repo_id": repo_id,
            "sources": stats,
            "left_out": self.left_out,
            "bad_laws": self.bad_laws,
        }


def check_study(study_dir: str | os.PathLike) -> Path:
    """The study folder as a Path; ``FileNotFoundError`` when there is none, ``ValueError`` when
    it is not a study (no plan of the planner, no l2l record, no run folder)."""
    study = Path(study_dir).expanduser()
    if not study.exists():
        raise FileNotFoundError(f"study folder {study} does not exist")
    if not study.is_dir():
        raise NotADirectoryError(f"{study} is a file, not a study folder")
    if _finished_folders(study) or (study / STUDY_RECORD).is_file():
        return study
    try:
        from training.study import is_study
    except ImportError:  # training not installed: only its plan files can tell
        planned = (study / "runs.csv").is_file() or (study / "runs.json").is_file()
    else:
        planned = is_study(study)
    if not planned:
        raise ValueError(
            f"{study} is not a study folder: no plan (runs.csv, study.json), no {STUDY_RECORD} "
            "and no run folder holding final.json; plan one with `l2l plan` or "
            "`python -m training.sweep --out STUDY`"
        )
    return study


def _finished_folders(study: Path) -> list[Path]:
    return sorted(
        p
        for p in study.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "final.json").is_file()
    )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


def _planned_runs(study: Path) -> list[str]:
    if not ((study / "runs.csv").is_file() or (study / "runs.json").is_file()):
        return []
    try:
        from training.study import read_plan
    except ImportError:  # without training the plan cannot be read: no run is said left out
        return []
    return [run.run for run in read_plan(study)]


def _why_unfinished(study: Path, run: str) -> str:
    folder = study / run
    if not folder.is_dir():
        return "not started (no run folder)"
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and any(p.name.startswith("step_") for p in checkpoints.iterdir()):
        return (
            "unfinished: checkpoints but no final.json (still training, paused, interrupted or "
            "failed; `--resume` continues it)"
        )
    return "unfinished: no final.json (still training, or failed before its first checkpoint)"


def _run_files(folder: Path) -> tuple[dict[str, Path] | None, str]:
    """The files of a finished run folder to release, or (None, why not)."""
    missing = [name for name in REQUIRED_RUN_FILES if not (folder / name).is_file()]
    files = {name: folder / name for name in REQUIRED_RUN_FILES}
    if (folder / WEIGHTS_NAME).is_file():
        files[WEIGHTS_NAME] = folder / WEIGHTS_NAME
    elif (folder / WEIGHTS_INDEX_NAME).is_file():  # sharded weights: the index and its shards
        index = _read_json(folder / WEIGHTS_INDEX_NAME)
        shards = sorted(set((index.get("weight_map") or {}).values()))
        absent = [s for s in shards if not (folder / s).is_file()]
        if not shards or absent:
            return None, f"{WEIGHTS_INDEX_NAME} names missing shards ({', '.join(absent[:3])})"
        files[WEIGHTS_INDEX_NAME] = folder / WEIGHTS_INDEX_NAME
        files.update({s: folder / s for s in shards})
    else:
        missing.append(WEIGHTS_NAME)
    if missing:
        return None, f"finished (final.json) but its folder lacks {', '.join(missing)}"
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


def _read_results(path: Path) -> tuple[bytes, list[dict]]:
    """The complete lines of a results table and their rows. A last line cut short by a crash
    mid-append (evaluation fsyncs row by row) is left out; any other bad line is an error."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows, keep = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if n == len(lines):  # no newline after it: a torn write
                logger.warning("%s:%d: leaving out a torn last line (interrupted write)", path, n)
                continue
            raise ValueError(f"{path}:{n} is not a JSON row: not a results table") from None
        if not isinstance(row, dict) or "run" not in row or "metric" not in row:
            raise ValueError(f"{path}:{n}: a results row needs 'run' and 'metric'")
        rows.append(row)
        keep.append(line.rstrip(b"\r"))
    return b"".join(line + b"\n" for line in keep), rows


def _survey(study: Path) -> _Survey:
    sources: dict[str, Path] = {}

    def read(label: str, path: Path) -> Path:
        sources[label] = path
        return path

    left_out: dict[str, str] = {}
    runs = []
    for folder in _finished_folders(study):
        try:
            final = _read_json(read(f"{folder.name}/final.json", folder / "final.json"))
            config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
        except ValueError as error:
            left_out[folder.name] = str(error).replace(str(folder) + "/", "")
            continue
        if not isinstance(final, dict) or not isinstance(config, dict):
            left_out[folder.name] = "final.json or config.json is not a JSON object"
            continue
        files, why = _run_files(folder)
        if files is None:
            left_out[folder.name] = why
            continue
        if config.get("model_type") != "l2l":
            left_out[folder.name] = (
                f"config.json is not an l2l model (model_type {config.get('model_type')!r})"
            )
            continue
        for name, path in files.items():
            read(f"{folder.name}/{name}" if path.parent == folder else f"package/{name}", path)
        runs.append(_Run(folder.name, folder, final, config, files))

    for run in _planned_runs(study):
        if not (study / run / "final.json").is_file():
            left_out[run] = _why_unfinished(study, run)
    for name in ("runs.csv", "runs.json"):
        if (study / name).is_file():
            read(name, study / name)

    if not runs:
        why = "".join(f"\n  {run}: {reason}" for run, reason in sorted(left_out.items())[:20])
        raise ValueError(
            f"study {study} has no finished run to release (a run is finished when its folder "
            f"holds final.json and the model)" + (f"; its runs:{why}" if why else "")
        )

    targets, preset = set(), None
    if (study / STUDY_RECORD).is_file():
        record = _read_json(read(STUDY_RECORD, study / STUDY_RECORD))
        if isinstance(record, dict):
            targets, preset = set(record.get("targets") or ()), record.get("preset")

    results, n_rows = None, 0
    if (study / RESULTS_NAME).is_file():
        results, rows = _read_results(read(RESULTS_NAME, study / RESULTS_NAME))
        n_rows = len(rows)
        by_run: dict[str, dict[str, dict]] = {}
        for row in rows:  # one row per (run, metric): a later row replaces an earlier one
            by_run.setdefault(row["run"], {})[row["metric"]] = row
        for run in runs:
            run.rows = list(by_run.get(run.name, {}).values())

    top_files: dict[str, Path] = {}
    for name in (PREDICTIONS_NAME, REPORT_NAME):
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
    return _Survey(
        study=study, runs=sorted(runs, key=_run_order), left_out=dict(sorted(left_out.items())),
        targets=targets, preset=preset, results=results, n_rows=n_rows, top_files=top_files,
        laws=laws, bad_laws=bad_laws, root_code=root_code, code_note=code_note, sources=sources,
    )  # fmt: skip


def _run_order(run: _Run):
    return (str(run.value("dataset")), float(run.value("N") or 0), float(run.value("C") or 0),
            run.name)  # fmt: skip


def _survey_laws(study: Path, top_files: dict[str, Path], read) -> tuple[dict, dict]:
    """Every folder under laws/ that analysis loads is released; the others are named."""
    laws, bad = {}, {}
    root = study / LAWS_DIR
    if not root.is_dir():
        return laws, bad
    from analysis import load_law

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


def _root_code(runs: list[_Run]) -> tuple[dict[str, Path], str]:
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


# ---------------------------------------------------------------------------- writing


class _Writer:
    """Writes files into the folder being built, hashing them as it goes (sha256 for LFS, the
    git blob id for regular files: what the Hub's tree listing reports)."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[str, dict] = {}

    def _record(self, name: str, size: int, sha256, sha1) -> None:
        stat = (self.root / name).stat()
        self.files[name] = {"size": size, "sha256": sha256.hexdigest(),
                            "git_oid": sha1.hexdigest(), "mtime_ns": stat.st_mtime_ns}  # fmt: skip

    def write(self, name: str, data: str | bytes) -> None:
        data = data.encode("utf-8") if isinstance(data, str) else data
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sha1 = hashlib.sha1(b"blob %d\0" % len(data))
        sha1.update(data)
        self._record(name, len(data), hashlib.sha256(data), sha1)

    def copy(self, name: str, source: Path) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        size = source.stat().st_size
        sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
        copied = 0
        # A plain open() gives the file the umask's mode: the trainer's weights are 0600, and a
        # release is meant to be read by others.
        with open(source, "rb") as src, open(path, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
                sha256.update(chunk)
                sha1.update(chunk)
                copied += len(chunk)
        if copied != size:
            raise RuntimeError(f"{source} changed while it was copied; build the release again")
        self._record(name, size, sha256, sha1)


def build_release(
    study_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    repo_id: str | None = None,
    progress: bool = False,
) -> Path:
    """Write the release folder of a study (default ``STUDY/release/``) and return its path.

    ``repo_id``: the repository the model cards tell readers to load from (``ORG/NAME`` where
    None). The folder is built in a hidden sibling and renamed into place, replacing an earlier
    release; a folder at ``out`` that is not a release (no manifest) and not empty is refused.
    Raises ``ValueError`` naming the study when it has no finished run, before writing anything.
    """
    study = check_study(study_dir)
    survey = _survey(study)
    out = Path(out).expanduser() if out is not None else study / RELEASE_DIR
    _check_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _BuildLock(out):
        _check_destination(out)  # again: another build may have made it while we waited
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
        try:
            _write_release(survey, _Writer(tmp), repo_id, progress)
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private
            old = None
            if out.exists():
                old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
                out.rename(old)
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def _check_destination(out: Path) -> None:
    """The release replaces what is at ``out``: only an earlier release or an empty folder."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; the release is written as a folder")
    if out.is_dir() and not (out / MANIFEST_NAME).is_file() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} holds files that are not an l2l release (no {MANIFEST_NAME}); building the "
            "release there would replace them: choose a new or empty folder with --out"
        )


class _BuildLock:
    """One build of a release folder at a time (``flock`` on a hidden sibling file); holding it,
    the hidden folders that killed builds left beside it are removed."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out.with_name(f".{out.name}.lock")
        self.handle = None

    def __enter__(self):
        import fcntl

        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise RuntimeError(
                f"another process is building the release {self.out} (it holds {self.path}); "
                "wait for it to finish"
            ) from None
        for pattern in (f".{self.out.name}.building-*", f".{self.out.name}.old-*"):
            for stale in self.out.parent.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _write_release(survey: _Survey, writer: _Writer, repo_id: str | None, progress: bool) -> None:
    from tqdm.auto import tqdm

    repo = repo_id or REPO_PLACEHOLDER
    for run in tqdm(survey.runs, desc="release", unit="run", disable=not progress):
        for name, source in run.files.items():
            text = _config_with_auto_map(source) if name == "config.json" else None
            if text is None:
                writer.copy(f"{run.name}/{name}", source)
            else:
                writer.write(f"{run.name}/{name}", text)
        writer.write(f"{run.name}/{CARD_NAME}", run_card(run, survey, repo))
    for name, source in survey.root_code.items():
        writer.copy(name, source)
    if survey.results is not None:
        writer.write(RESULTS_NAME, survey.results)
    for name, source in survey.top_files.items():
        writer.copy(name, source)
    writer.write(CARD_NAME, study_card(survey, repo))
    manifest = {
        **survey.fingerprint(repo_id),
        "runs": [run.name for run in survey.runs],
        "laws": survey.laws,
        "files": writer.files,
    }
    # written last: a folder with a manifest is a complete release
    (writer.root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")


def _config_with_auto_map(path: Path) -> str | None:
    """config.json with every entry of modeling_l2l's AUTO_MAP, or None where it has them all
    (the file is then copied as it is). save_pretrained of L2LForCausalLM writes them; a folder
    saved by other code or an older version may lack some, and a user without the package needs
    all three to load with AutoConfig, AutoModel or AutoModelForCausalLM."""
    config = _read_json(path)
    present = config.get("auto_map") or {}
    if all(present.get(key) for key in ("AutoConfig", "AutoModel", "AutoModelForCausalLM")):
        return None
    from modeling_l2l.configuration_l2l import AUTO_MAP  # imports torch: only when needed

    config["auto_map"] = {**AUTO_MAP, **present}  # the run's own entries win
    return json.dumps(config, indent=2, sort_keys=True) + "\n"  # transformers' own layout


# ---------------------------------------------------------------------------- model cards


def _front_matter(data) -> str:
    return f"---\n{data.to_yaml()}\n---\n"


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value, spec: str = ".3g") -> str:
    return "?" if value is None else (format(value, spec) if _finite(value) else str(value))


def _dataset_of(row: dict, run: _Run) -> str:
    """What a result was measured on, for the model-index: the row's source when it is a Hub id
    or a plain name (never a local path), else the metric's group (``eval/c4_val/...``)."""
    source = str(row.get("source") or "")
    if source and not os.path.isabs(source) and not source.startswith((".", "~")):
        if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) and not os.path.exists(source):
            return source
    parts = str(row["metric"]).split("/")
    # a bare metric (val_loss) is on the run's own corpus: evaluation's eval/{corpus}_val/...
    return parts[-2] if len(parts) >= 2 else f"{run.value('dataset')}_val"


def _eval_results(run: _Run) -> list:
    """One EvalResult per results row with a finite value (the Hub's metadata check rejects NaN;
    such rows stay in results.jsonl)."""
    from huggingface_hub import EvalResult

    results = []
    for row in run.rows:
        if not _finite(row.get("value")):
            continue
        dataset = _dataset_of(row, run)
        results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=str(row["metric"]),
                metric_name=str(row["metric"]),
                metric_value=float(row["value"]),
            )
        )
    return results


def run_card(run: _Run, survey: _Survey, repo: str) -> str:
    """The model card of one run: what it is, how to load it, its results (model-index)."""
    from huggingface_hub import ModelCardData

    results = _eval_results(run)
    data = ModelCardData(
        library_name="transformers",
        tags=list(TAGS),
        pipeline_tag="text-generation",
        model_name=run.name if results else None,
        eval_results=results or None,
    )
    final, config = run.final, run.config
    loss = final.get("final_val_loss")
    role = (
        "a target run: trained like the grid but never fitted, the laws predict it"
        if run.name in survey.targets
        else "one run of the grid the study's laws are fitted on"
    )
    table = [
        ("training corpus", f"`{run.value('dataset')}`"),
        ("N (parameters, embeddings included)", _fmt(run.value("N"), ",")
         if isinstance(run.value("N"), int) else _fmt(run.value("N"))),
        ("D (training tokens)", _fmt(run.value("D"), ",")
         if isinstance(run.value("D"), int) else _fmt(run.value("D"))),
        ("C (FLOPs)", _fmt(run.value("C"), ".2e")),
        ("layers x width", f"{config.get('num_hidden_layers', '?')} x "
                           f"{config.get('hidden_size', '?')}"),
        ("steps", _fmt(final.get("steps"), "d") if isinstance(final.get("steps"), int) else "?"),
        ("final validation loss", _fmt(loss, ".4f")),
    ]  # fmt: skip
    lines = [
        _front_matter(data),
        f"# {run.name}\n",
        f"A decoder-only language model of the scaling study `{survey.study.name}`"
        + (f" (preset `{survey.preset}`)" if survey.preset else "")
        + f", {role}. The folder name follows the loss-to-loss paper's runs: "
        "`L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}`.\n",
        "| | |\n|---|---|",
        *(f"| {key} | {value} |" for key, value in table),
        "",
        "## Load it\n",
        "```python",
        "from transformers import AutoModelForCausalLM",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo}", subfolder="{run.name}", '
        "trust_remote_code=True)",
    ]
    if any(name in run.files for name in TOKENIZER_FILES):
        lines[-3] = "from transformers import AutoModelForCausalLM, AutoTokenizer"
        lines.append(f'tokenizer = AutoTokenizer.from_pretrained("{repo}", subfolder="{run.name}")')
    lines += [
        "```\n",
        "`trust_remote_code=True` runs `modeling_l2l.py` of this repository; with the l2l "
        "package installed (`import modeling_l2l`) the installed code is used instead.\n",
    ]
    if run.rows:
        lines += ["## Evaluation\n", f"From the study's `{RESULTS_NAME}`:\n",
                  "| metric | value | n |", "|---|---|---|"]  # fmt: skip
        lines += [f"| `{r['metric']}` | {_fmt(r.get('value'), '.4g')} | {_fmt(r.get('n'))} |"
                  for r in sorted(run.rows, key=lambda r: str(r["metric"]))]  # fmt: skip
        lines.append("")
    lines += [
        "## Files\n",
        "`config.json`, `model.safetensors` and the model code (`configuration_l2l.py`, "
        "`modeling_l2l.py`); `training_config.yaml`, the full training config; `metrics.jsonl`, "
        "one line per logged step; `final.json`, the run's summary.\n",
    ]
    return "\n".join(lines)


def study_card(survey: _Survey, repo: str) -> str:
    """The repository's model card: every released run, what was left out and why, the data."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(library_name="transformers", tags=list(TAGS),
                         pipeline_tag="text-generation")  # fmt: skip
    example = survey.runs[0].name
    lines = [
        _front_matter(data),
        f"# Scaling study `{survey.study.name}`\n",
        f"{len(survey.runs)} language models of a scaling study"
        + (f" (l2l preset `{survey.preset}`)" if survey.preset else "")
        + ", trained with the l2l project, laid out like the loss-to-loss paper's "
        "`KempnerInstituteAI/loss-to-loss`: one folder per run, named "
        "`L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}` (training corpus, parameters, training "
        "tokens, FLOPs).\n",
        "## Load a run\n",
        "```python",
        "from transformers import AutoModelForCausalLM",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo}", subfolder="{example}", '
        "trust_remote_code=True)",
        "```\n",
        "The model code is in every run folder and, for loading with `subfolder=`, at the root "
        "of the repository too (transformers reads remote code from the root).\n",
    ]
    if survey.code_note:
        lines.append(survey.code_note + "\n")
    lines += ["## Runs\n", "| run | dataset | N | D | C | val loss |", "|---|---|---|---|---|---|"]
    for run in survey.runs:
        name = f"`{run.name}`" + (" (target)" if run.name in survey.targets else "")
        lines.append(
            f"| {name} | {run.value('dataset')} | {_fmt(run.value('N'))} | "
            f"{_fmt(run.value('D'))} | {_fmt(run.value('C'), '.2e')} | "
            f"{_fmt(run.final.get('final_val_loss'), '.4f')} |"
        )
    lines.append("")
    if survey.targets & {run.name for run in survey.runs}:
        lines.append("Target runs were trained like the others but never fitted: the study's "
                     "laws predict them.\n")  # fmt: skip
    if survey.left_out:
        lines += [f"## Left out ({len(survey.left_out)})\n",
                  "Runs of the study that are not in this release:\n",
                  "| run | why |", "|---|---|"]  # fmt: skip
        lines += [f"| `{run}` | {why} |" for run, why in survey.left_out.items()]
        lines.append("")
    else:
        lines.append("Every planned run of the study is released.\n")
    lines.append("## Data\n")
    if survey.results is not None:
        lines += [
            f"`{RESULTS_NAME}`: the study's results table, {survey.n_rows} tidy rows (one per "
            "run and metric: run, dataset, N, D, C, metric, value, n, source, ...):\n",
            "```python",
            "from datasets import load_dataset",
            "from huggingface_hub import hf_hub_download",
            "",
            f'path = hf_hub_download("{repo}", "{RESULTS_NAME}")',
            'results = load_dataset("json", data_files=path, split="train")',
            "```\n",
        ]
    else:
        lines.append(f"The study has no results table (`{RESULTS_NAME}`) yet.\n")
    if PREDICTIONS_NAME in survey.top_files:
        lines.append(f"`{PREDICTIONS_NAME}`: what the fitted laws predict.\n")
    if REPORT_NAME in survey.top_files:
        lines.append(f"`{REPORT_NAME}`: the study's report, with its figures in "
                     f"`{FIGURES_DIR}/`.\n")  # fmt: skip
    if survey.laws:
        lines += [
            f"## Laws ({len(survey.laws)})\n",
            f"`{LAWS_DIR}/<name>/`, each a law fitted with l2l's `analysis` "
            "(`Law.save_pretrained`):\n",
            "| law | form |",
            "|---|---|",
            *(f"| `{name}` | `{form}` |" for name, form in survey.laws.items()),
            "",
            "```python",
            "from huggingface_hub import snapshot_download",
            "from analysis import load_law",
            "",
            f'root = snapshot_download("{repo}", allow_patterns=["{LAWS_DIR}/*"])',
            f'law = load_law(f"{{root}}/{LAWS_DIR}/{next(iter(survey.laws))}")',
            "```\n",
        ]
    if survey.bad_laws:
        lines += ["Law folders of the study that do not load, not released:\n"]
        lines += [f"- `{name}`: {why}" for name, why in survey.bad_laws.items()]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- up to date


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a release folder, or None where there is no readable one."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "files" in manifest else None


def release_is_current(
    study_dir: str | os.PathLike, folder: str | os.PathLike, repo_id: str | None = None
) -> bool:
    """Whether ``folder`` is a complete release of the study as it is now, for ``repo_id``:
    built from the same files (sizes and mtimes), by this version of the builder, and with its
    own files untouched since."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    try:
        expected = _survey(check_study(study_dir)).fingerprint(repo_id)
    except (ValueError, OSError):
        return False
    if any(manifest.get(key) != value for key, value in expected.items()):
        return False
    for name, entry in manifest["files"].items():
        try:
            stat = (Path(folder) / name).stat()
        except OSError:
            return False
        if (stat.st_size, stat.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
            return False
    return True


# ---------------------------------------------------------------------------- the Hub


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a valid ``owner/name`` Hub id; a ``ValueError`` saying why not."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(
            f"invalid repo id {repo_id!r}: expected 'owner/name' (your user name or an "
            "organization, then the repository's name), e.g. my-org/my-study"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"invalid repo id {repo_id!r}: {error}") from None
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN``, else the one ``hf auth login``
    saved (``huggingface_hub.get_token``); a ``ValueError`` saying how to log in if none."""
    if token:
        return token
    from huggingface_hub import get_token

    found = os.environ.get("HF_TOKEN") or get_token()
    if not found:
        raise ValueError(f"no Hugging Face token found to push with: {LOGIN_HELP}")
    return found


def _same(remote, entry: dict) -> bool:
    """Whether a file of the Hub's tree listing holds the release's file ``entry``."""
    if remote is None or remote.size != entry["size"]:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == entry["sha256"]
    return remote.blob_id == entry["git_oid"]


def push_release(
    study_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    endpoint: str | None = None,
    progress: bool = True,
    out: str | os.PathLike | None = None,
) -> dict:
    """Build the release of a study (or reuse an up-to-date one at ``out``, default
    ``STUDY/release/``) and upload it to the Hub repository ``repo_id`` (created if needed,
    ``private`` then).

    One commit per run whose files are not all on the Hub already, in the order of the
    repository card, then one for the top-level files: an interrupted push keeps the runs it
    committed, and a rerun skips them. A run folder on the Hub is made exactly the release's
    (stale files in it are deleted); files outside the run folders and the release's own
    top-level files (``laws/``, ``figures/``) are never touched. ``revision``: a branch (created
    from main if absent). The token is sent to the Hub only, never printed.

    Returns ``{"repo_id", "url", "revision", "release_dir", "uploaded", "skipped", "left_out",
    "top_level", "commits"}``: uploaded and skipped runs, the runs left out and why, whether
    the top-level files were uploaded or skipped, and the commits made.
    """
    repo_id = check_repo_id(repo_id)
    study = check_study(study_dir)
    token = resolve_token(token)
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile
    from tqdm.auto import tqdm

    if hub_constants.HF_HUB_OFFLINE:
        raise ValueError("HF_HUB_OFFLINE is set: cannot push; unset it, or write the folder "
                         "only with --dry-run")  # fmt: skip

    folder = Path(out).expanduser() if out is not None else study / RELEASE_DIR
    if not release_is_current(study, folder, repo_id):
        build_release(study, folder, repo_id=repo_id, progress=progress)
    manifest = read_manifest(folder)
    files: dict[str, dict] = manifest["files"]

    api = HfApi(endpoint=endpoint, token=token)
    url = str(api.create_repo(repo_id, private=private, exist_ok=True))
    try:
        head = api.repo_info(repo_id, revision=revision).sha
    except RevisionNotFoundError:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
        head = api.repo_info(repo_id, revision=revision).sha
    # The listing at that commit; every commit below names its parent, so a push racing
    # another one fails instead of mixing them.
    remote = {
        f.path: f for f in api.list_repo_tree(repo_id, recursive=True, revision=head)
        if isinstance(f, RepoFile)
    }  # fmt: skip

    synced: set[str] = set()  # committed by this push: the listing above predates them

    def changes(paths: list[str], managed) -> tuple[list, list]:
        adds = [
            CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p))
            for p in paths if p not in synced and not _same(remote.get(p), files[p])
        ]  # fmt: skip
        deletes = [CommitOperationDelete(path_in_repo=p) for p in sorted(remote)
                   if managed(p) and p not in files]  # fmt: skip
        return adds, deletes

    def commit(adds: list, deletes: list, message: str) -> str:
        nonlocal head
        try:
            info = api.create_commit(repo_id, adds + deletes, commit_message=message,
                                     revision=revision, parent_commit=head)  # fmt: skip
        except HfHubHTTPError as error:
            if getattr(error.response, "status_code", None) != 429:
                raise
            # The Hub allows a repository so many commits an hour (128 on a free plan): a
            # study of more runs is pushed in several sittings, each resuming the last.
            raise RuntimeError(
                f"the Hub refused the commit '{message}' (too many requests: "
                f"{' '.join(str(error).split())}); this push committed "
                f"{len(summary['uploaded'])} run(s), and running it again later uploads the rest"
            ) from None
        head = info.oid
        synced.update(op.path_in_repo for op in adds)
        for op in deletes:
            remote.pop(op.path_in_repo, None)
        summary["commits"].append(info.oid)
        return info.oid

    summary = {"repo_id": repo_id, "url": url, "revision": revision or "main",
               "release_dir": str(folder), "uploaded": [], "skipped": [],
               "left_out": dict(manifest.get("left_out") or {}), "top_level": "skipped",
               "commits": []}  # fmt: skip
    root_code = [name for name in CODE_FILES if name in files]
    bar = tqdm(total=len(manifest["runs"]) + 1, desc=f"push {repo_id}", unit="commit",
               disable=not progress)  # fmt: skip
    with bar:
        for run in manifest["runs"]:
            bar.set_postfix_str(run)
            paths = [p for p in files if p.startswith(run + "/")]
            adds, deletes = changes(paths, lambda p, run=run: p.startswith(run + "/"))
            if not (adds or deletes):
                summary["skipped"].append(run)
                bar.update()
                continue
            # The root's code files go with the first run committed (when the Hub lacks them):
            # from then on every run there loads with from_pretrained(repo, subfolder=run,
            # trust_remote_code=True). Otherwise they go with the top-level files.
            adds += changes(root_code, lambda p: False)[0]
            commit(adds, deletes, f"Release run {run}")
            summary["uploaded"].append(run)
            bar.update()
        bar.set_postfix_str("top-level files")
        top = [p for p in files if "/" not in p or p.startswith((f"{LAWS_DIR}/", f"{FIGURES_DIR}/"))]
        owned = {CARD_NAME, RESULTS_NAME, PREDICTIONS_NAME, REPORT_NAME}
        adds, deletes = changes(
            top, lambda p: p in owned or p.startswith((f"{LAWS_DIR}/", f"{FIGURES_DIR}/"))
        )
        if adds or deletes:
            commit(adds, deletes, "Release the study's card, results and laws")
            summary["top_level"] = "uploaded"
        bar.update()
    return summary


# ---------------------------------------------------------------------------- command line


def describe_release(folder: str | os.PathLike) -> str:
    """What a release folder holds, as lines of text (from its manifest)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return f"{folder}: not a release folder (no {MANIFEST_NAME})"
    files = manifest["files"]

    def size(paths) -> str:
        total = sum(files[p]["size"] for p in paths)
        return f"{total / 1e6:.1f} MB" if total >= 1e5 else f"{total / 1e3:.1f} kB"

    lines = [f"{folder}", f"  {len(manifest['runs'])} runs:"]
    for run in manifest["runs"]:
        inside = [p for p in files if p.startswith(run + "/")]
        lines.append(f"    {run}/  ({len(inside)} files, {size(inside)})")
    top = sorted(p for p in files if "/" not in p)
    lines.append(f"  top level: {', '.join(top)}")
    for sub in (LAWS_DIR, FIGURES_DIR):
        inside = sorted({p.split("/")[1] for p in files if p.startswith(sub + "/")})
        if inside:
            lines.append(f"  {sub}/: {', '.join(inside)}")
    left_out = manifest.get("left_out") or {}
    if left_out:
        lines.append(f"  left out ({len(left_out)}):")
        lines += [f"    {run}: {why}" for run, why in left_out.items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2l release",
        description="Write a finished study as a Hub repository laid out like the loss-to-loss "
        "paper's (one folder per run, model cards, the results table and the fitted laws) "
        "and, with --repo-id, push it. A rerun uploads only what the Hub lacks.",
    )
    parser.add_argument("study", type=Path, help="the study folder")
    parser.add_argument("--repo-id", default=None, metavar="ORG/NAME",
                        help="Hub repository to push to (created if needed); without it the "
                        "folder is only written")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="write the release folder and list it; upload nothing")
    parser.add_argument("--private", action="store_true",
                        help="create the repository private (an existing one keeps its setting)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help=f"release folder (default STUDY/{RELEASE_DIR})")
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Carry out parsed ``l2l release`` arguments; 0 on success, 2 with ``error: ...`` on stderr."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        if args.repo_id is not None:
            check_repo_id(args.repo_id)
        if args.dry_run or args.repo_id is None:
            folder = build_release(args.study, args.out, repo_id=args.repo_id, progress=True)
            print(describe_release(folder))
            if args.repo_id is None:
                print("(not pushed: give --repo-id ORG/NAME to upload it)")
            return 0
        summary = push_release(args.study, args.repo_id, private=args.private, out=args.out)
    except (ValueError, OSError, RuntimeError, HfHubHTTPError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to upload the rest", file=sys.stderr)
        return 130
    print(f"{summary['url']} ({summary['revision']}): uploaded {len(summary['uploaded'])} "
          f"runs, skipped {len(summary['skipped'])} already there; top-level files "
          f"{summary['top_level']}")  # fmt: skip
    for run, why in summary["left_out"].items():
        print(f"  left out {run}: {why}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "build_parser",
    "build_release",
    "check_repo_id",
    "check_study",
    "describe_release",
    "main",
    "push_release",
    "read_manifest",
    "release_is_current",
    "resolve_token",
    "run_cli",
]
