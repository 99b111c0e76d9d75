"""Checkpoints that a crash can never corrupt, and exact resumption.

A checkpoint is ``<run>/checkpoints/step_<step>/``: accelerate's ``save_state`` (model weights as
safetensors, optimizer, gradient scaler, every process' RNG states) plus ``train_state.json``
(step, tokens seen, the data order's seed and size). It is written into
``checkpoints/.tmp-step_<step>/`` and renamed into place by the main process only once every
process has finished writing and ``train_state.json`` is on disk; a folder without the exact
``step_<digits>`` name or without ``train_state.json`` is never loaded. A kill at any moment
therefore leaves either the previous checkpoints alone or the new one complete. Older complete
checkpoints beyond ``keep_last`` are deleted only after the new one is committed; the steps of
``keep_steps`` (a WSD trunk's branch points) are never deleted, nor counted in ``keep_last``.

Every checkpoint holds ``manifest.json``, written last before the commit: the size and SHA-256
of each of its files. A resume verifies it, so bytes damaged after the write (a disk error, a
partial copy, a file zeroed in place with its header intact) are found before they are trained
on: the damaged checkpoint is moved aside (``damaged-step_<n>``, kept, never loaded) and the run
resumes from the newest one that verifies, saying so; with none left it stops with a message.

We name the folders ourselves instead of using accelerate's automatic naming, whose counter
(``project_configuration.iteration``) ``load_state`` does not advance past the loaded checkpoint.
The training state is JSON rather than a pickled registered object: accelerate unpickles those
with ``weights_only=False``, while everything loaded here goes through safetensors, JSON or
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

TRAIN_STATE = "train_state.json"
MANIFEST = "manifest.json"
_NAME = re.compile(r"^step_(\d{8,})$")


class CheckpointError(RuntimeError):
    """No checkpoint of a run can be resumed (damaged, unreadable); the message says which and
    what to do."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if match and child.is_dir() and (child / TRAIN_STATE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def read_train_state(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / TRAIN_STATE).read_text())


def remove_partial(root: str | os.PathLike) -> list[Path]:
    """Delete leftovers of interrupted writes (``.tmp-*`` folders); returns what was removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".tmp-"):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def save_checkpoint(accelerator, root: str | os.PathLike, state: dict, keep_last: int,
                    keep_steps: Collection[int] = ()) -> Path:
    """Write a checkpoint of everything ``accelerator`` prepared plus ``state`` (JSON), atomically.

    Collective: every process must call it."""
    root = Path(root)
    name = checkpoint_name(state["step"])
    final = root / name
    tmp = root / f".tmp-{name}"
    if (final / TRAIN_STATE).is_file():
        # Already committed (a resumed run re-reaching a saved step holds the identical state):
        # keep it rather than delete it and leave a window with no checkpoint of that step.
        return final
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state_tmp = tmp / (TRAIN_STATE + ".tmp")
        state_tmp.write_text(json.dumps(state, indent=1))
        state_tmp.replace(tmp / TRAIN_STATE)
        write_manifest(tmp)
        _fsync_tree(tmp)
        if final.exists():  # a folder of that name without train_state.json: nothing loadable
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        rotating = [path for step, path in list_checkpoints(root) if step not in keep_steps]
        for old in rotating[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | os.PathLike) -> dict:
    """Restore model, optimizer, scaler and RNG states from ``path``; return its train state."""
    path = Path(path)
    if not (path / TRAIN_STATE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {TRAIN_STATE})")
    try:
        state = read_train_state(path)
        accelerator.load_state(str(path))
    except Exception as exc:  # a damaged file: say which checkpoint, never start over silently
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc}); move it away to "
            "resume from the one before it"
        ) from exc
    return state


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: Path, names) -> dict[str, dict]:
    """Size and SHA-256 of the files ``names`` of ``folder`` (a manifest's ``files``)."""
    return {name: {"size": (folder / name).stat().st_size, "sha256": _file_sha256(folder / name)}
            for name in sorted(names)}


def check_files(folder: Path, files: dict) -> str | None:
    """None when every file of a manifest's ``files`` is in ``folder`` with its size and
    checksum, else what is wrong, in words."""
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, its manifest says {expected['size']}"
        if _file_sha256(path) != expected["sha256"]:
            return f"{name} does not match its checksum (its bytes changed after it was written)"
    return None


def write_manifest(folder: Path) -> None:
    """``manifest.json``: size and SHA-256 of every other file in ``folder`` (written last)."""
    names = [str(child.relative_to(folder)) for child in sorted(folder.rglob("*"))
             if child.is_file() and child.name not in (MANIFEST, MANIFEST + ".tmp")]
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"files": file_digests(folder, names)}, indent=1))
    tmp.replace(folder / MANIFEST)


def verify_checkpoint(folder: Path) -> str | None:
    """None when every file of ``folder`` matches its manifest, else what is wrong, in words.

    A checkpoint written before manifests existed has none; it is accepted (``"unverified"``
    is then the caller's to report) since refusing it would strand every older run."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its {MANIFEST} is unreadable ({type(exc).__name__}: {exc})"
    return check_files(folder, files)


def resumable_checkpoint(root: str | os.PathLike,
                         log: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint under ``root`` that verifies against its manifest, or None when
    there is none at all. Newer damaged ones are moved aside to ``damaged-step_<n>`` (kept for
    inspection, never loaded) and reported through ``log``; when every checkpoint is damaged
    nothing is moved and ``CheckpointError`` says what was found. Main process only."""
    root = Path(root)
    found = list_checkpoints(root)
    damaged: list[tuple[Path, str]] = []
    for _, path in reversed(found):
        problem = verify_checkpoint(path)
        if problem is None:
            good = path
            break
        damaged.append((path, problem))
    else:
        if not damaged:
            return None
        listed = "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
        raise CheckpointError(
            f"no checkpoint under {root} can be resumed, every one is damaged ({listed}). "
            "Nothing was changed; restore them from a copy, or remove the run folder to train "
            "the run again from the start"
        )
    for path, problem in damaged:
        aside = root / f"damaged-{path.name}"
        suffix = 1
        while aside.exists():
            aside, suffix = root / f"damaged-{path.name}.{suffix}", suffix + 1
        os.replace(path, aside)
        log(f"checkpoint {path.name} is damaged ({problem}); moved it to {aside.name} and "
            f"resuming from {good.name}")
    if not (good / MANIFEST).is_file():
        log(f"note: checkpoint {good.name} has no {MANIFEST} (written by an older version), so "
            "its files could not be verified")
    return good


def link_checkpoint(source: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Commit a copy of the complete checkpoint ``source`` (another run's) into ``root`` under
    the same step name, atomically like ``save_checkpoint``: its files hard-linked where the file
    system allows (checkpoint files are never written in place, so the two runs cannot change
    each other's), else copied. The caller verifies ``source`` first."""
    source, root = Path(source), Path(root)
    final = root / source.name
    tmp = root / f".tmp-{source.name}"
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not allowed: a real copy
            shutil.copy2(src, dst)

    shutil.copytree(source, tmp, copy_function=link_or_copy)
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Flush a checkpoint's files before the rename commits it (a power loss after the rename
    must not expose empty files)."""
    for child in path.rglob("*"):
        if child.is_file():
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(path)
