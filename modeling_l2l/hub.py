"""Load one of the paper's 500+ released runs from the Hub, converted once into a local cache.

The runs live in one repository, ``KempnerInstituteAI/loss-to-loss``, one OLMo-fork folder per
run (``L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}``). ``load_l2l_run`` downloads only that folder
with ``snapshot_download(allow_patterns=[f"{run}/*"])``, converts it with
``convert_olmo_checkpoint`` into ``{converted_dir}/{repo}/{commit}/{run}`` (once per commit of the
repository) and returns ``L2LForCausalLM.from_pretrained`` of the result::

    >>> from modeling_l2l import load_l2l_run
    >>> model = load_l2l_run("L2L_starcoder_N1.1e08_D3.0e08_C2.0e17")

A folder that already holds a transformers ``l2l`` checkpoint is loaded as it is. From the shell,
``python -m modeling_l2l.hub RUN`` prints the converted folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from analysis.locations import cache_dir
from analysis.run_names import RunName, parse_run_name

from .convert_olmo import convert_olmo_checkpoint
from .modeling_l2l import L2LForCausalLM

L2L_HUB_REPO = "KempnerInstituteAI/loss-to-loss"


def default_converted_dir() -> Path:
    """``$L2L_CACHE/converted`` (default ``~/.cache/l2l/converted``)."""
    return cache_dir("converted")


def resolve_run(
    run: str | RunName, repo_id: str | None = None, subfolder: str | None = None
) -> tuple[str, str]:
    """``(repo_id, subfolder)`` of a run given as a run name, ``RunName``, ``"org/repo/run"``, or
    a repo id with ``subfolder``. Names in the paper's repository are checked by ``parse_run_name``.
    """
    if isinstance(run, RunName):
        run = str(run)
    if not isinstance(run, str) or not run.strip("/"):
        raise ValueError(f"run must be a run name or a Hub repo id, got {run!r}")
    run = run.strip("/")
    if subfolder is not None:  # run is the repo id
        repo_id, subfolder = run, subfolder.strip("/")
    elif repo_id is not None:
        subfolder = run
    elif run.count("/") >= 2:  # "org/repo/run"
        owner, name, subfolder = run.split("/", 2)
        repo_id = f"{owner}/{name}"
    else:
        repo_id, subfolder = L2L_HUB_REPO, run
    if not subfolder:
        raise ValueError(f"no run folder given for repository {repo_id!r}")
    if repo_id == L2L_HUB_REPO:
        parse_run_name(subfolder)  # a clear error for a mistyped run name before any download
    return repo_id, subfolder


def download_run(
    run: str | RunName,
    *,
    repo_id: str | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download only the run's folder (Hugging Face cache) and return its local path."""
    repo_id, subfolder = resolve_run(run, repo_id, subfolder)
    try:
        snapshot = snapshot_download(
            repo_id=repo_id,
            allow_patterns=[f"{subfolder}/*"],
            revision=revision,
            cache_dir=cache_dir,
            endpoint=endpoint,
            token=token,
            local_files_only=local_files_only,
        )
    except LocalEntryNotFoundError as exc:  # huggingface_hub's words say nothing of the run
        raise ConnectionError(
            f"cannot get run {subfolder!r} of {repo_id}: it is not in the local Hugging Face "
            "cache and the Hub was not asked or could not be reached (offline, HF_HUB_OFFLINE=1 "
            "or local_files_only=True). A copy of the run folder on disk converts with "
            "`python -m modeling_l2l.convert_olmo SRC DST`."
        ) from exc
    folder = Path(snapshot) / subfolder
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"run {subfolder!r} not found in {repo_id} (revision {revision or 'main'}): no "
            f"{subfolder}/config.json in the repository"
        )
    return folder


def prepare_l2l_run(
    run: str | RunName,
    *,
    repo_id: str | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    converted_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download a run and convert it once; returns a folder ``from_pretrained`` loads.

    ``run``: a run name (``"L2L_starcoder_N1.1e08_D3.0e08_C2.0e17"``, in the paper's repository),
    ``"org/repo/run"``, or a repo id with ``subfolder``. ``cache_dir``, ``revision``,
    ``endpoint``, ``token`` and ``local_files_only`` go to ``snapshot_download``;
    ``converted_dir`` (default ``default_converted_dir()``) keeps the converted folders, keyed by
    repository, commit and run, so a new revision of the repository is converted again.
    """
    repo_id, subfolder = resolve_run(run, repo_id, subfolder)
    source = download_run(
        subfolder,
        repo_id=repo_id,
        revision=revision,
        cache_dir=cache_dir,
        endpoint=endpoint,
        token=token,
        local_files_only=local_files_only,
    )
    if json.loads((source / "config.json").read_text()).get("model_type") == "l2l":
        return source  # already a transformers checkpoint

    commit = source.parent.name  # snapshot folders are named by the commit they hold
    root = Path(converted_dir) if converted_dir is not None else default_converted_dir()
    target = root / repo_id.replace("/", "--") / commit / subfolder
    if not (target / "model.safetensors").is_file():
        try:
            convert_olmo_checkpoint(source, target)
        except FileExistsError:
            # another process converted it first (the write is atomic); use its result
            if not (target / "model.safetensors").is_file():
                raise
    return target


def load_l2l_run(run: str | RunName, **kwargs) -> L2LForCausalLM:
    """The released model of one run as ``L2LForCausalLM`` in eval mode.

    Takes the arguments of ``prepare_l2l_run``; any other keyword (e.g. ``dtype``, ``device_map``,
    ``attn_implementation``) goes to ``from_pretrained``.
    """
    names = (
        "repo_id",
        "subfolder",
        "revision",
        "cache_dir",
        "converted_dir",
        "endpoint",
        "token",
        "local_files_only",
    )
    prepare_kwargs = {name: kwargs.pop(name) for name in names if name in kwargs}
    folder = prepare_l2l_run(run, **prepare_kwargs)
    return L2LForCausalLM.from_pretrained(folder, **kwargs).eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_l2l.hub",
        description="Download one released loss-to-loss run from the Hub, convert it once, and "
        "print the folder to pass to AutoModelForCausalLM.from_pretrained.",
    )
    parser.add_argument("run", help="run name, e.g. L2L_starcoder_N1.1e08_D3.0e08_C2.0e17")
    parser.add_argument("--repo-id", default=None, help=f"repository (default {L2L_HUB_REPO})")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--converted-dir", default=None, help="where converted runs are kept")
    args = parser.parse_args(argv)
    folder = prepare_l2l_run(
        args.run, repo_id=args.repo_id, revision=args.revision, converted_dir=args.converted_dir
    )
    print(folder)


if __name__ == "__main__":
    main()


__all__ = [
    "L2L_HUB_REPO",
    "default_converted_dir",
    "download_run",
    "load_l2l_run",
    "prepare_l2l_run",
    "resolve_run",
]
