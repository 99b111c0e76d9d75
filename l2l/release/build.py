"""``build_release``: a study's release folder, written whole or not at all, and the manifest
that says what it holds and whether it is still current.

The folder is built in a hidden sibling (``.release.building-*``) and renamed into place, so an
interrupted build leaves the previous release (or none), never a half-written one; one build at
a time holds a lock beside it. Every file is hashed as it is written (sha256 for LFS, the git blob
id for regular files: what the Hub's tree listing reports), and the manifest
(``.l2l-release.json``, never uploaded) records them with what the release was built from, so that
a push can tell what the Hub lacks and whether the folder must be rebuilt first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from analysis.atomic import plain_mode
from l2l.layout import FIGURES_DIR, LAWS_DIR, RELEASE_DIR, RESULTS
from l2l.release.cards import CARD_NAME, REPO_PLACEHOLDER, run_card, study_card
from l2l.release.survey import Survey, check_study, read_json, survey_study
from training.run_lock import FileLock

MANIFEST_NAME = ".l2l-release.json"
FORMAT_VERSION = 1
_CHUNK = 8 * 1024 * 1024


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
    survey = survey_study(study)
    out = Path(out).expanduser() if out is not None else study / RELEASE_DIR
    _check_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _BuildLock(out):
        _check_destination(out)  # again: another build may have made it while we waited
        # Holding the lock, the hidden folders beside it are what killed builds left.
        for pattern in (f".{out.name}.building-*", f".{out.name}.old-*"):
            for stale in out.parent.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
        try:
            _write_release(survey, _Writer(tmp), repo_id, progress)
            os.chmod(tmp, plain_mode(directory=True))  # mkdtemp makes it private
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


def _check_destination(out: Path) -> None:
    """The release replaces what is at ``out``: only an earlier release or an empty folder."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; the release is written as a folder")
    if out.is_dir() and not (out / MANIFEST_NAME).is_file() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} holds files that are not an l2l release (no {MANIFEST_NAME}); building the "
            "release there would replace them: choose a new or empty folder with --out"
        )


class _BuildLock(FileLock):
    """One build of a release folder at a time: the lock of a hidden sibling file."""

    def __init__(self, out: Path):
        super().__init__(out.with_name(f".{out.name}.lock"))
        self.out = out

    def refusal(self, holder: str) -> RuntimeError:
        return RuntimeError(
            f"another process is building the release {self.out} ({holder}; it holds "
            f"{self.path}); wait for it to finish"
        )


def _write_release(survey: Survey, writer: _Writer, repo_id: str | None, progress: bool) -> None:
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
        writer.write(RESULTS, survey.results)
    for name, source in survey.top_files.items():
        writer.copy(name, source)
    writer.write(CARD_NAME, study_card(survey, repo))
    manifest = {
        **fingerprint(survey, repo_id),
        "runs": [run.name for run in survey.runs],
        "laws": survey.laws,
        "files": writer.files,
    }
    # written last: a folder with a manifest is a complete release
    (writer.root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")


def _config_with_auto_map(path: Path) -> str | None:
    """``config.json`` with every entry of modeling_l2l's AUTO_MAP, or None where it has them all
    (the file is then copied as it is). save_pretrained of L2LForCausalLM writes them; a folder
    saved by other code or an older version may lack some, and a user without the package needs
    all three to load with AutoConfig, AutoModel or AutoModelForCausalLM."""
    config = read_json(path)
    present = config.get("auto_map") or {}
    if all(present.get(key) for key in ("AutoConfig", "AutoModel", "AutoModelForCausalLM")):
        return None
    from modeling_l2l.configuration_l2l import AUTO_MAP  # imports torch: only when needed

    config["auto_map"] = {**AUTO_MAP, **present}  # the run's own entries win
    return json.dumps(config, indent=2, sort_keys=True) + "\n"  # transformers' own layout


def fingerprint(survey: Survey, repo_id: str | None) -> dict:
    """What a release built from ``survey`` depends on; a release whose manifest records the same
    is up to date. Sizes and mtimes, not hashes: cheap for gigabytes of weights."""
    stats = {}
    for label, path in sorted(survey.sources.items()):
        st = path.stat()
        stats[label] = [st.st_size, st.st_mtime_ns]
    builder = hashlib.sha256()  # this package's code: a new version builds the release anew
    for path in sorted(Path(__file__).parent.glob("*.py")):
        builder.update(path.read_bytes())
    return {
        "format": FORMAT_VERSION,
        "builder": builder.hexdigest(),
        "repo_id": repo_id,
        "sources": stats,
        "left_out": survey.left_out,
        "bad_laws": survey.bad_laws,
    }


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
        expected = fingerprint(survey_study(check_study(study_dir)), repo_id)
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
