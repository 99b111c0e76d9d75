"""Registry of training corpora: where each one's documents come from, as a `datasets` stream.

The six corpora of the loss-to-loss paper (Brandfonbrener et al. 2024) are named as in its
released sweep (the ``data`` column of sweep.csv), plus C4 for evaluation. Each is read by
streaming the Hub dataset through ``datasets.load_dataset(..., streaming=True)`` with explicit
``data_files`` patterns, so the same code path reads a local mirror of the Hub repositories
(``hub_mirror/<owner>/<name>/...``, e.g. on a cluster without internet) or local files.

Three corpora are built from files that every Python installation has, so that everything runs
offline: ``python-stdlib`` (the standard library's ``.py`` sources: code), ``python-docstrings``
(the docstrings of those modules) and ``python-prose`` (their docstrings and comments, and
pydoc's help topics: English prose, the second corpus of the offline loss-to-loss study).

Any other corpus is a path: a file, a folder, or a glob of ``.txt`` (one document per file),
``.jsonl``/``.json`` (one document per line, ``text`` field) or ``.parquet`` files. A long text
in one ``.txt`` file is a single document, which the validation split (whole documents from the
start) takes entirely: split such a text into one file per document, or into a ``.jsonl`` file
with one ``{"text": ...}`` object per line.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import lzma
import os
import re
import sys
import sysconfig
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path


class CorpusError(ValueError):
    """A corpus cannot be read: unknown name, no files, a malformed file, a missing field, a
    missing decompressor. The message names the corpus and the files."""


@dataclass(frozen=True)
class SourcePart:
    """One stream of documents: a Hub dataset repository (or ``datasets`` builder) and files."""

    path: str
    """Hub dataset id (``owner/name``), a local folder, or a builder (json, parquet, text)."""
    data_files: tuple[str, ...] = ()
    """Glob patterns inside the repository, read in sorted order."""
    split: str = "train"
    weight: float = 1.0
    """Share of the documents when a corpus interleaves several parts (proportional to tokens)."""
    config: str | None = None
    """The dataset's configuration (``load_dataset(path, name=config)``), if it has several."""


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    """Corpus name as in the paper's sweep.csv ``data`` column (and in run names)."""
    parts: tuple[SourcePart, ...]
    text_field: str = "text"
    description: str = ""

    @property
    def hub_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.path for p in self.parts))


def _hub(repo: str, *patterns: str, split: str = "train", weight: float = 1.0) -> SourcePart:
    return SourcePart(path=repo, data_files=tuple(patterns), split=split, weight=weight)


# Weights of multi-part corpora are their parts' sizes in billions of tokens (the datasets' cards),
# so that interleaving samples documents roughly in proportion to the data.
CORPORA: dict[str, CorpusSpec] = {
    spec.name: spec
    for spec in [
        CorpusSpec(
            "fineweb-100b",
            (_hub("HuggingFaceFW/fineweb", "sample/100BT/*.parquet"),),
            description="FineWeb, the 100B-token sample (config sample-100BT)",
        ),
        CorpusSpec(
            "fineweb-edu-100b",
            (_hub("HuggingFaceFW/fineweb-edu", "sample/100BT/*.parquet"),),
            description="FineWeb-Edu, the 100B-token sample (config sample-100BT)",
        ),
        CorpusSpec(
            "proof-pile-2",
            (
                _hub("EleutherAI/proof-pile-2", "arxiv/train/*.jsonl.zst", weight=29.0),
                _hub("EleutherAI/proof-pile-2", "open-web-math/train/*.jsonl.zst", weight=15.0),
                _hub("EleutherAI/proof-pile-2", "algebraic-stack/train/*.jsonl.zst", weight=11.0),
            ),
            description="Proof-Pile-2: arXiv, OpenWebMath and AlgebraicStack interleaved",
        ),
        CorpusSpec(
            "slimpajama-chunk1",
            (_hub("cerebras/SlimPajama-627B", "train/chunk1/*.jsonl.zst"),),
            description="SlimPajama-627B, train/chunk1",
        ),
        CorpusSpec(
            "starcoder",
            (_hub("bigcode/starcoderdata", "*/train-*.parquet"),),
            text_field="content",
            description="StarCoderData, all languages (gated on the Hub: accept its terms first)",
        ),
        CorpusSpec(
            "smollm-corpus",
            (
                _hub("HuggingFaceTB/smollm-corpus", "fineweb-edu-dedup/*.parquet", weight=220.0),
                _hub("HuggingFaceTB/smollm-corpus", "cosmopedia-v2/*.parquet", weight=28.0),
            ),
            description="SmolLM-Corpus: FineWeb-Edu-dedup and Cosmopedia-v2 interleaved (its "
            "python-edu part holds only Software Heritage blob ids, no text, and is not read)",
        ),
        CorpusSpec(
            "c4",
            (_hub("allenai/c4", "en/c4-validation.*.json.gz", split="train"),),
            description="C4 (en), its validation files: an evaluation corpus",
        ),
        CorpusSpec(
            "python-stdlib",
            (SourcePart(path="python-stdlib"),),
            description="The running Python's standard-library .py sources (offline)",
        ),
        CorpusSpec(
            "python-docstrings",
            (SourcePart(path="python-docstrings"),),
            description="Docstrings of the standard library's modules, classes, functions",
        ),
        CorpusSpec(
            "python-prose",
            (SourcePart(path="python-prose"),),
            description="English prose that ships with Python: each standard-library module's "
            "docstrings and comments, and the help topics of pydoc_data.topics (offline)",
        ),
    ]
}

# The loss-to-loss paper's six training corpora, in the order of its figures.
PAPER_CORPORA: tuple[str, ...] = (
    "fineweb-100b",
    "fineweb-edu-100b",
    "proof-pile-2",
    "slimpajama-chunk1",
    "smollm-corpus",
    "starcoder",
)

_LOCAL_BUILDERS = {
    ".txt": "text",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".gz": "json",
    ".zst": "json",
}
_LOCAL_BUILDER_NAMES = frozenset(_LOCAL_BUILDERS.values())
_OFFLINE_SOURCES = ("python-stdlib", "python-docstrings", "python-prose")


HUB_DATASETS = "hf://datasets/"


def resolve_corpus(corpus: str) -> CorpusSpec:
    """The registered corpus of that name, a Hub dataset (``hf://datasets/ORG/NAME[:CONFIG]``,
    its train split streamed, documents in its ``text`` field), or a corpus over local files
    (path, folder or glob)."""
    if corpus in CORPORA:
        return CORPORA[corpus]
    if corpus.startswith(HUB_DATASETS):
        repo, _, config = corpus[len(HUB_DATASETS):].partition(":")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise CorpusError(f"data.corpus: {corpus!r}: expected hf://datasets/ORG/NAME or "
                              "hf://datasets/ORG/NAME:CONFIG")
        return CorpusSpec(name=corpus_label(corpus),
                          parts=(SourcePart(path=repo, config=config or None),),
                          description=f"the Hub dataset {repo}" + (f" ({config})" if config else ""))
    found = _local_files(corpus)
    if not found:
        known = ", ".join(sorted(CORPORA))
        raise CorpusError(
            f"data.corpus: {corpus!r} is neither a registered corpus ({known}) nor a path to "
            "existing .txt/.jsonl/.json/.parquet files"
        )
    # An empty file holds no document, and datasets' json builder fails on one (it infers the
    # schema from the first file) with a bare "generator raised StopIteration".
    files = [f for f in found if os.path.getsize(f) > 0]
    if not files:
        raise CorpusError(f"data.corpus: {corpus!r}: every file is empty ({', '.join(found)})")
    builders = {_LOCAL_BUILDERS.get(_suffix(f)) for f in files}
    if None in builders or len(builders) != 1:
        raise CorpusError(
            f"data.corpus: {corpus!r} mixes or contains unsupported file types "
            f"({sorted({_suffix(f) for f in files})}); use one of .txt, .jsonl, .json, .parquet"
        )
    return CorpusSpec(
        name=corpus_label(corpus),
        parts=(SourcePart(path=builders.pop(), data_files=tuple(files)),),
        description=f"local files: {corpus}",
    )


def corpus_label(corpus: str) -> str:
    """The name a corpus goes by in run names: the registry name, else the files' stem, with
    anything but letters, digits, dots and hyphens replaced by hyphens (run names use '_')."""
    if corpus in CORPORA:
        return corpus
    parts = list(Path(os.path.expanduser(corpus)).parts)
    while parts and any(ch in parts[-1] for ch in "*?["):
        parts.pop()  # a glob names its files by the folder that holds them
    stem = parts[-1].split(".")[0] if parts else "local"
    return re.sub(r"[^A-Za-z0-9.-]+", "-", stem).strip("-") or "local"


def source_fingerprint(spec: CorpusSpec, text_field: str | None = None) -> dict:
    """What determines the documents of ``spec``, and so the key of its built shards' folder.

    Local files count by content: the SHA-256 and size of each file, in reading order (their
    paths and modification times are recorded beside, for the messages, but a corpus that was
    moved or touched is still the same corpus). Another file of the same name, or an edited one,
    therefore never reuses shards built from the old bytes. The offline corpora count by the
    Python that provides them (its version and every standard-library file's path and size). A
    Hub corpus counts by its repository, file patterns, split and weights: the repositories are
    read at their current revision, which no fingerprint taken before reading can see.
    ``digest`` is a SHA-256 over the ``content`` entry.
    """
    content: dict = {"text_field": text_field or spec.text_field, "parts": []}
    files: list[dict] = []
    for part in spec.parts:
        if part.path in _OFFLINE_SOURCES:
            root = Path(sysconfig.get_paths()["stdlib"])
            listing = hashlib.sha256()
            for path in stdlib_files():
                listing.update(f"{path.relative_to(root)}\0{path.stat().st_size}\n".encode())
            entry = {"path": part.path, "python": sys.version.split()[0],
                     "stdlib_files": listing.hexdigest()}
        elif part.path in _LOCAL_BUILDER_NAMES:
            identities = [_file_identity(f) for f in part.data_files]
            files += identities
            entry = {"builder": part.path, "split": part.split,
                     "files": [[f["size"], f["sha256"]] for f in identities]}
        else:
            entry = {"path": part.path, "data_files": list(part.data_files),
                     "split": part.split, "weight": part.weight}
            if part.config:
                entry["config"] = part.config
        content["parts"].append(entry)
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return {"corpus": spec.name, "digest": digest, "content": content, "files": files}


def fingerprint_changes(before: dict, after: dict) -> list[str]:
    """What differs between two ``source_fingerprint`` results, in words (empty: the same)."""
    if before.get("digest") == after.get("digest"):
        return []
    old = {f["path"]: f for f in before.get("files", [])}
    new = {f["path"]: f for f in after.get("files", [])}
    changes = [f"{path} was edited" for path in sorted(old.keys() & new.keys())
               if old[path]["sha256"] != new[path]["sha256"]]
    changes += [f"{path} is new" for path in sorted(new.keys() - old.keys())]
    changes += [f"{path} is gone" for path in sorted(old.keys() - new.keys())]
    old_field = before.get("content", {}).get("text_field")
    new_field = after.get("content", {}).get("text_field")
    if old_field != new_field:
        changes.append(f"the text field {old_field!r} became {new_field!r}")
    return changes or ["its documents differ (files, Python version or Hub source)"]


# Hashing a large local corpus takes seconds; a process that builds, trains and evaluates asks
# for the same fingerprint several times, so hashes are kept per (path, inode, size, ctime). The
# change time moves on every write and every utime(), and no user can set it back, so a file
# edited with its modification time restored is still hashed again.
_CONTENT_HASHES: dict[tuple, str] = {}


def _file_identity(path: str) -> dict:
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_ino, stat.st_size, stat.st_ctime_ns)
    if key not in _CONTENT_HASHES:
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _CONTENT_HASHES[key] = digest.hexdigest()
    return {"path": real, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": _CONTENT_HASHES[key]}


def iter_documents(
    spec: CorpusSpec, *, text_field: str | None = None, hub_mirror: str | None = None
) -> Iterator[str]:
    """Stream the corpus' documents as strings, deterministically (same order every time).

    Documents come in the order of the source files (sorted names), so a build of D tokens is
    the first D tokens of that order: representative when the files are random shards (FineWeb,
    SlimPajama), not when they are sorted by content (StarCoderData's folders are languages in
    alphabetical order: a small build reads only the first languages)."""
    import datasets  # here: seconds to import, and planning a study needs none of it

    field = text_field or spec.text_field
    try:
        streams = [_part_stream(part, hub_mirror) for part in spec.parts]
        if len(streams) == 1:
            stream = streams[0]
        else:
            total = sum(p.weight for p in spec.parts)
            stream = datasets.interleave_datasets(
                streams,
                probabilities=[p.weight / total for p in spec.parts],
                seed=0,
                stopping_strategy="first_exhausted",
            )
        for row in stream:
            if field not in row:
                raise CorpusError(
                    f"corpus {spec.name!r}: documents have no field {field!r} (fields: "
                    f"{sorted(row)}); set data.text_field"
                )
            text = row[field]
            if text is None or text == "":
                continue  # a document without text holds no tokens
            if not isinstance(text, str):
                raise CorpusError(
                    f"corpus {spec.name!r}: field {field!r} holds a value of type "
                    f"{type(text).__name__} ({str(text)[:40]!r}), not text, in "
                    f"{_describe_parts(spec, hub_mirror)}; "
                    "every document's text must be a string (set data.text_field to the field "
                    "that holds it)"
                )
            yield text
    except CorpusError:
        raise
    except _read_errors() as exc:
        # pyarrow's ArrowInvalid is a ValueError; fsspec without zstandard raises ValueError;
        # a corrupt .gz raises zlib.error (a bad stream) or EOFError (a truncated one).
        hint = ""
        if any(f.endswith(".zst") for p in spec.parts for f in p.data_files):
            hint = " (.zst files need the zstandard package: pip install zstandard)"
        raise CorpusError(
            f"corpus {spec.name!r}: cannot read {_describe_parts(spec, hub_mirror)}: "
            f"{_error_name(exc)}: {exc}{hint}"
        ) from exc


@cache
def _read_errors() -> tuple[type[BaseException], ...]:
    from datasets.exceptions import DatasetsError

    errors: list[type[BaseException]] = [OSError, ValueError, RuntimeError, ImportError,
                                         DatasetsError, EOFError, zlib.error, lzma.LZMAError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)



def _error_name(exc: BaseException) -> str:
    """``zlib.error`` rather than a bare ``error``; builtins keep their plain names."""
    kind = type(exc)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _describe_parts(spec: CorpusSpec, hub_mirror: str | None) -> str:
    described = []
    for part in spec.parts:
        files = list(part.data_files)
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        where = part.path if part.path in ("json", "parquet", "text") else (
            f"{part.path} (under {hub_mirror})" if hub_mirror else part.path)
        described.append(f"{where} [{shown}]" if shown else where)
    return "; ".join(described)


def _part_stream(part: SourcePart, hub_mirror: str | None):
    import datasets

    if part.path == "python-stdlib":
        return datasets.IterableDataset.from_generator(_stdlib_sources)
    if part.path == "python-docstrings":
        return datasets.IterableDataset.from_generator(_stdlib_docstrings)
    if part.path == "python-prose":
        return datasets.IterableDataset.from_generator(_stdlib_prose)
    path = part.path
    if hub_mirror and "/" in path and not os.path.isabs(path):
        path = os.path.join(os.path.expanduser(hub_mirror), path)
    kwargs: dict = {"streaming": True, "split": part.split}
    if part.config:
        kwargs["name"] = part.config
    if part.data_files:
        kwargs["data_files"] = {part.split: list(part.data_files)}
    if path == "text":
        kwargs["sample_by"] = "document"
    return datasets.load_dataset(path, **kwargs)


def _suffix(path: str) -> str:
    return Path(path).suffix.lower()


def _local_files(corpus: str) -> list[str]:
    path = Path(os.path.expanduser(corpus))
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        candidates = [str(p) for p in path.rglob("*") if p.is_file()]
    else:
        candidates = glob.glob(os.path.expanduser(corpus), recursive=True)
    return sorted(f for f in candidates if _suffix(f) in _LOCAL_BUILDERS and os.path.isfile(f))


# ------------------------------------------------------------ offline corpora from the stdlib
def stdlib_files() -> list[Path]:
    """The standard library's .py files (no site-packages), in a fixed pseudo-random order: sorted
    by a hash of the relative path, so that the held-out first documents are a sample of all
    modules rather than the alphabetically first ones."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        p for p in root.rglob("*.py")
        if "site-packages" not in p.parts and "dist-packages" not in p.parts
    ]
    return sorted(files, key=lambda p: hashlib.sha1(str(p.relative_to(root)).encode()).hexdigest())


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _stdlib_sources() -> Iterator[dict]:
    for path in stdlib_files():
        text = _read(path)
        if text:
            yield {"text": text}


def _stdlib_docstrings() -> Iterator[dict]:
    for path in stdlib_files():
        text = _read(path)
        for body in _docstrings_of(text) if text else ():
            yield {"text": body}

def _comments(text: str) -> str:
    """The comment lines of a module's source, without their ``#``, as paragraphs."""
    paragraphs, current = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("#!"):
            words = stripped.lstrip("#").strip()
            if words:
                current.append(words)
                continue
        if current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    # Short comments are mostly lint markers and to-do tags; keep sentences.
    return "\n\n".join(p for p in paragraphs if len(p) > 40)


def _stdlib_prose() -> Iterator[dict]:
    """One document per module (its docstrings, then its comments), then one per help topic."""
    for document in _stdlib_docstrings_and_comments():
        yield {"text": document}
    from pydoc_data.topics import topics

    for name in sorted(topics, key=lambda t: hashlib.sha1(t.encode()).hexdigest()):
        if topics[name].strip():
            yield {"text": topics[name].strip()}


def _stdlib_docstrings_and_comments() -> Iterator[str]:
    for path in stdlib_files():
        text = _read(path)
        if not text:
            continue
        docs = next(iter(_docstrings_of(text)), "")
        body = "\n\n".join(part for part in (docs, _comments(text)) if part)
        if body:
            yield body


def _docstrings_of(text: str) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return
    nodes = [tree] + [
        n for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    docs = [ast.get_docstring(n) for n in nodes]
    body = "\n\n".join(d for d in docs if d and len(d) > 40)
    if body:
        yield body
