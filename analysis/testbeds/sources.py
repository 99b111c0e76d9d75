"""Where a testbed's files come from: a local folder, or a folder of the study's GitHub repository.

The papers' released data lives in their public repositories. A loader reads it from a local copy
(a folder given by path) or, when online, straight from the repository: raw files from
``raw.githubusercontent.com``, folder listings from the GitHub contents API. Downloads are cached
under ``$L2L_CACHE`` (default ``~/.cache/l2l``) and written atomically, so a second load works
offline. Offline without a cache, the error says so and shows how to pass a local folder instead.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from analysis.atomic import write_atomic
from analysis.locations import cache_dir

RAW_BASE = "https://raw.githubusercontent.com"
API_BASE = "https://api.github.com"
TIMEOUT_S = 30.0


class TestbedUnavailableError(ConnectionError):
    """A testbed file could not be downloaded (offline, moved, or refused)."""

    __test__ = False  # not a pytest test class despite the name


def cache_root() -> Path:
    return cache_dir("testbeds")


@dataclass(frozen=True)
class LocalFolder:
    """A folder on disk holding a testbed's files."""

    root: Path
    copy_of: GitHubFolder | None = field(default=None, compare=False)
    """The repository folder this is a local copy of, named when a file is missing."""

    def child(self, name: str) -> LocalFolder:
        return LocalFolder(self.root / name, self.copy_of and self.copy_of.child(name))

    def exists(self, name: str = "") -> bool:
        return (self.root / name).exists()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"testbed folder not found: {self.root}{self.provenance()}")
        return sorted(p.name for p in self.root.iterdir() if p.is_file())

    def read_bytes(self, name: str) -> bytes:
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(f"testbed file not found: {path}{self.provenance()}")
        return path.read_bytes()

    def provenance(self) -> str:
        """Where the folder comes from, for an error message (empty when unknown)."""
        if self.copy_of is None:
            return ""
        return (f" (it comes from the folder {self.copy_of.path} of the GitHub repository "
                f"{self.copy_of.repo}: pass the path of a local copy of that folder, or no "
                "path at all to download it)")

    def describe(self, name: str = "") -> str:
        return str(self.root / name) if name else str(self.root)


@dataclass(frozen=True)
class GitHubFolder:
    """A folder of a public GitHub repository at a given ref (branch, tag or commit)."""

    repo: str
    path: str
    ref: str = "main"
    raw_base: str = RAW_BASE
    api_base: str = API_BASE

    def child(self, name: str) -> GitHubFolder:
        return replace(self, path=f"{self.path.rstrip('/')}/{name}")

    def url(self, name: str) -> str:
        quoted = urllib.parse.quote(f"{self.path.strip('/')}/{name}")
        return f"{self.raw_base}/{self.repo}/{self.ref}/{quoted}"

    def listing_url(self) -> str:
        quoted = urllib.parse.quote(self.path.strip("/"))
        return f"{self.api_base}/repos/{self.repo}/contents/{quoted}?ref={self.ref}"

    def describe(self, name: str = "") -> str:
        return self.url(name) if name else f"github.com/{self.repo}@{self.ref}/{self.path}"

    def provenance(self) -> str:
        return ""  # describe() names the repository already

    def _cache_path(self, name: str) -> Path:
        return cache_root() / self.repo / self.ref / self.path.strip("/") / name

    def exists(self, name: str = "") -> bool:
        if not name:
            return True
        try:
            self.read_bytes(name)
        except FileNotFoundError:
            return False
        return True

    def names(self) -> list[str]:
        cached = self._cache_path(".listing.json")
        if cached.is_file():
            return json.loads(cached.read_text())
        entries = json.loads(
            _download(self.listing_url(), what=f"the listing of {self.describe()}")
        )
        if not isinstance(entries, list):
            raise TestbedUnavailableError(f"unexpected answer listing {self.describe()}: {entries}")
        names = sorted(e["name"] for e in entries if e.get("type") == "file")
        write_atomic(cached, json.dumps(names).encode())
        return names

    def read_bytes(self, name: str) -> bytes:
        cached = self._cache_path(name)
        if cached.is_file():
            return cached.read_bytes()
        data = _download(self.url(name), what=name)
        write_atomic(cached, data)
        return data


Folder = LocalFolder | GitHubFolder


def resolve(source: str | os.PathLike | Folder | None, default: GitHubFolder) -> Folder:
    """A folder from a user's ``source``: ``None`` for the study's repository, a path, or a folder."""
    if source is None:
        return default
    if isinstance(source, LocalFolder | GitHubFolder):
        return source
    text = os.fspath(source)
    if text.startswith(("http://", "https://")):
        raise ValueError(
            f"{text}: pass a local path, or a GitHubFolder(repo, path, ref) for another repository"
        )
    return LocalFolder(Path(text).expanduser(), default)


def resolve_file(
    source: str | os.PathLike | Folder | None, default: GitHubFolder, name: str
) -> tuple[Folder, str]:
    """The folder and file name of a testbed file: ``source`` may also be the file's own path."""
    if source is not None and not isinstance(source, LocalFolder | GitHubFolder):
        path = Path(os.fspath(source)).expanduser()
        if path.is_file():
            return LocalFolder(path.parent, default), path.name
    return resolve(source, default), name


def _download(url: str, *, what: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "l2l-analysis"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise FileNotFoundError(f"{what}: not found at {url} (HTTP 404)") from error
        raise TestbedUnavailableError(
            f"could not download {what} from {url}: HTTP {error.code} {error.reason}"
        ) from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TestbedUnavailableError(
            f"could not download {what} from {url} ({reason}). Offline? Pass the folder of a "
            "local copy instead, for example `--data /path/to/data` or `load_testbed(name, path)`."
        ) from error
