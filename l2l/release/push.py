"""``push_release``: a study's release folder uploaded to a Hub repository, resumably: one
commit per run the Hub lacks, then one for the top-level files; what the Hub holds already (same
size and hash, by the release's manifest) is never sent again."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path

from l2l.layout import FIGURES_DIR, LAWS_DIR, PREDICTIONS, RELEASE_DIR, REPORT, RESULTS
from l2l.release.build import build_release, read_manifest, release_is_current
from l2l.release.cards import CARD_NAME
from l2l.release.survey import CODE_FILES, check_study

LOGIN_HELP = (
    "log in with `hf auth login` (or `huggingface-cli login`), set the HF_TOKEN environment "
    "variable, or pass token=...; the token needs write access to the repository"
)


HUB_TIMEOUT_S = float(os.environ.get("L2L_HUB_TIMEOUT", "60"))
"""Seconds the push waits to connect to the Hub, or for each of its answers, before it stops with
one line (huggingface_hub's client waits forever by default)."""


class HubUnreachable(RuntimeError):
    """The Hub refused the connection, or did not answer in time."""


@contextlib.contextmanager
def hub_timeouts(endpoint: str | None):
    """huggingface_hub's shared HTTP client with ``HUB_TIMEOUT_S`` for the length of a push, and
    its transport errors (refused, reset, timed out) as one ``HubUnreachable`` line. The client
    is huggingface_hub's (httpx, or httpx2 from its 2.x releases): its own module gives the
    timeout and the errors."""
    from huggingface_hub import constants, get_session

    session = get_session()
    client = importlib.import_module(type(session).__module__.split(".")[0])
    previous = session.timeout
    session.timeout = client.Timeout(HUB_TIMEOUT_S)
    try:
        yield
    except client.TransportError as error:
        where = endpoint or constants.ENDPOINT
        raise HubUnreachable(
            f"cannot reach the Hub at {where} ({type(error).__name__}: {error or 'no answer'} "
            f"within {HUB_TIMEOUT_S:g} s); check the network, HF_ENDPOINT or a proxy, then run "
            "the same command again: what was committed stays, the rest is uploaded") from None
    finally:
        session.timeout = previous


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
    from huggingface_hub import HfApi
    from huggingface_hub import constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE:
        raise ValueError("HF_HUB_OFFLINE is set: cannot push; unset it, or write the folder "
                         "only with --dry-run")  # fmt: skip

    folder = Path(out).expanduser() if out is not None else study / RELEASE_DIR
    if not release_is_current(study, folder, repo_id):
        build_release(study, folder, repo_id=repo_id, progress=progress)
    manifest = read_manifest(folder)
    with hub_timeouts(endpoint):
        return _push(HfApi(endpoint=endpoint, token=token), repo_id, folder, manifest, private,
                     revision, progress)


def _push(api, repo_id: str, folder: Path, manifest: dict, private: bool, revision: str | None,
          progress: bool) -> dict:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile
    from tqdm.auto import tqdm

    files: dict[str, dict] = manifest["files"]
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
        owned = {CARD_NAME, RESULTS, PREDICTIONS, REPORT}
        adds, deletes = changes(
            top, lambda p: p in owned or p.startswith((f"{LAWS_DIR}/", f"{FIGURES_DIR}/"))
        )
        if adds or deletes:
            commit(adds, deletes, "Release the study's card, results and laws")
            summary["top_level"] = "uploaded"
        bar.update()
    return summary
