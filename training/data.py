"""Data pipeline: stream a corpus, tokenise, pack into fixed-length sequences, write disk shards once,
and memory-map them for training and evaluation.

Layout of one built corpus (``<data_dir>/<corpus>/<tokenizer tag>-seq<L>-val<V>-src<S>/``)::

    index.json          written last: what the folder holds (corpus, source fingerprint,
                        tokenizer, dtype, shards)
    val.bin             the held-out split: the first V sequences of the stream
    train-00000.bin     training sequences, in stream order, ``shard_tokens`` tokens per shard

The folder is keyed by everything that determines its tokens: the source (``S``, a digest of
``training.corpora.source_fingerprint``: local files by content, so an edited or replaced file
is never read through old shards), the tokenizer (its tag hashes the vocabulary and merges),
the sequence length and the validation size.

Documents are tokenised without special tokens and each is followed by the EOS token (as in the
paper's OLMo pipeline); the token stream is cut into sequences of L tokens. The validation split
takes whole documents from the start of the stream (the paper held out its first shard) and the
training split starts at the next document, so no document is in both. Training reads the
sequences in a seeded pseudo-random permutation (``SequenceOrder``), a pure function of
(seed, epoch, index): resuming needs nothing but the step.

A build happens in a temporary folder that is renamed into place when complete; a lock file keeps
concurrent runs from building the same corpus twice. Evaluation gets held-out splits through
``load_validation_split`` (or ``validation_tokens``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.locations import DATA_DIR, LLAMA2_TOKENIZER
from training.corpora import (
    CorpusError,
    CorpusSpec,
    corpus_label,
    iter_documents,
    resolve_corpus,
    source_fingerprint,
)
from training.run_lock import FileLock

INDEX_NAME = "index.json"
# 2: the folder is keyed by the source fingerprint, which index.json records.
FORMAT_VERSION = 2
# 2^27 tokens per training shard: 256 MiB as uint16; large enough to keep file counts small.
DEFAULT_SHARD_TOKENS = 1 << 27


# ------------------------------------------------------------------------------ tokenizers
def load_tokenizer(name: str):
    """A tokenizer by Hub id, local folder or ``offline:V`` (see ``modeling_l2l.tokenizer``)."""
    from modeling_l2l.tokenizer import load_tokenizer as load

    return load(name)


def tokenizer_tag(tokenizer, name: str) -> str:
    """Folder-safe id of a tokenizer: its name plus a hash of its full vocabulary and merges, so
    two tokenizers that differ never share shards."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(
        sorted(tokenizer.get_vocab().items())
    )
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    base = re.sub(r"[^A-Za-z0-9.-]+", "-", name.rstrip("/").split("/")[-1]) or "tokenizer"
    return f"{base}-{digest}"


def _eos_id(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("data.tokenizer: the tokenizer has no EOS token to separate documents")
    return int(eos)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def iter_token_batches(texts: Iterator[str], tokenizer, max_batch_docs: int = 512) -> Iterator[list]:
    """Yield, per batch of documents, a list of per-document token lists, each ending with EOS.

    Batches start at 4 documents and double up to ``max_batch_docs``: a small build (a held-out
    split, a tiny run) stops after tokenising little more than it needs, a large one gets the
    fast tokenizer's batch parallelism."""
    eos = _eos_id(tokenizer)
    batch: list[str] = []
    size = 4

    def encode(docs: list[str]) -> list[list[int]]:
        ids = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]
        return [doc + [eos] for doc in ids]

    for text in texts:
        batch.append(text)
        if len(batch) >= size:
            yield encode(batch)
            batch = []
            size = min(2 * size, max_batch_docs)
    if batch:
        yield encode(batch)


# ----------------------------------------------------------------------------- the shards
@dataclass
class BuiltCorpus:
    """A built corpus folder, memory-mapped. Sequences are rows of ``seq_len`` token ids."""

    root: Path
    index: dict

    @property
    def seq_len(self) -> int:
        return self.index["seq_len"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.index["dtype"])

    @property
    def num_train_sequences(self) -> int:
        return sum(s["sequences"] for s in self.index["train"]["shards"])

    @property
    def fingerprint(self) -> dict:
        """The source fingerprint the shards were built from (``source_fingerprint``)."""
        return self.index["source_fingerprint"]

    @property
    def num_val_sequences(self) -> int:
        return self.index["val"]["sequences"]

    def _map(self, name: str, rows: int) -> np.ndarray:
        if rows == 0:
            return np.zeros((0, self.seq_len), dtype=self.dtype)
        return np.memmap(self.root / name, dtype=self.dtype, mode="r", shape=(rows, self.seq_len))

    def validation(self) -> np.ndarray:
        """The held-out sequences, shape [V, L] (memory-mapped, read-only)."""
        return self._map(self.index["val"]["file"], self.num_val_sequences)

    def train_shards(self) -> list[np.ndarray]:
        return [self._map(s["file"], s["sequences"]) for s in self.index["train"]["shards"]]


class TrainSequences:
    """Random access to training sequences by global index across the memory-mapped shards."""

    def __init__(self, corpus: BuiltCorpus):
        self.shards = corpus.train_shards()
        sizes = [len(s) for s in self.shards]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.seq_len = corpus.seq_len

    def __len__(self) -> int:
        return int(self.starts[-1])

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """Rows at ``indices`` as an int64 array [len(indices), L] (token ids for torch)."""
        out = np.empty((len(indices), self.seq_len), dtype=np.int64)
        shard_of = np.searchsorted(self.starts, indices, side="right") - 1
        for row, (i, s) in enumerate(zip(indices, shard_of, strict=True)):
            out[row] = self.shards[s][i - self.starts[s]]
        return out


def corpus_folder(data_dir: str | os.PathLike, corpus: str, tok_tag: str, seq_len: int,
                  val_sequences: int, text_field: str | None = None,
                  fingerprint: dict | None = None) -> Path:
    """The folder of ``corpus`` built with these settings (``fingerprint``: the source's, when
    the caller has it already; it is computed otherwise)."""
    if fingerprint is None:
        fingerprint = source_fingerprint(resolve_corpus(corpus), text_field)
    return (Path(os.path.expanduser(data_dir)) / corpus_label(corpus)
            / f"{tok_tag}-seq{seq_len}-val{val_sequences}-src{fingerprint['digest'][:12]}")


def open_corpus(folder: Path) -> BuiltCorpus | None:
    """The built corpus in ``folder``, or None when it has no complete index."""
    index_path = folder / INDEX_NAME
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise CorpusError(f"built corpus {folder} is damaged: its {INDEX_NAME} cannot be read "
                          f"({exc}); delete the folder to rebuild it") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT_VERSION:
        return None
    built = BuiltCorpus(folder, index)
    # A truncated or overwritten shard would otherwise surface as numpy's "mmap length is
    # greater than file size", or be read silently short.
    itemsize = built.dtype.itemsize * built.seq_len
    for entry in [index["val"], *index["train"]["shards"]]:
        path = folder / entry["file"]
        expected = entry["sequences"] * itemsize
        actual = path.stat().st_size if path.is_file() else None
        if actual != expected:
            raise CorpusError(
                f"built corpus {folder} is damaged: {entry['file']} has "
                f"{'no file' if actual is None else f'{actual} bytes'}, its index says "
                f"{expected}; delete the folder to rebuild it"
            )
    return built


def build_corpus(
    corpus: str,
    tokenizer,
    *,
    tokenizer_name: str,
    data_dir: str | os.PathLike,
    seq_len: int = 512,
    val_sequences: int = 2048,
    train_tokens: int,
    text_field: str | None = None,
    hub_mirror: str | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    progress: bool = True,
) -> BuiltCorpus:
    """Build (or reuse) the shards of ``corpus`` holding at least ``train_tokens`` training tokens
    (fewer when the corpus is exhausted first: then training loops over it in several epochs).

    The stream is deterministic, so a larger build has the smaller one as its prefix; a folder
    that holds too few tokens is rebuilt larger and swapped in atomically."""
    spec = resolve_corpus(corpus)  # an unknown name fails here, before any folder is made for it
    fingerprint = source_fingerprint(spec, text_field)
    folder = corpus_folder(data_dir, corpus, tokenizer_tag(tokenizer, tokenizer_name), seq_len,
                           val_sequences, fingerprint=fingerprint)
    want_sequences = -(-train_tokens // seq_len)
    existing = open_corpus(folder)
    if existing is not None and _enough(existing, want_sequences):
        return existing
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One build per corpus folder: concurrent runs wait for it, then find it built.
    with FileLock(folder.with_name(folder.name + ".lock"), wait=True):
        existing = open_corpus(folder)  # another process may have built it while we waited
        if existing is not None and _enough(existing, want_sequences):
            return existing
        # Holding the lock, any other build folder of ours is a leftover of a killed build.
        for kind in ("tmp", "old"):
            for stale in folder.parent.glob(f"{glob.escape(folder.name)}.{kind}-*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir()
        try:
            _write_shards(
                tmp, spec, fingerprint, tokenizer, tokenizer_name, seq_len, val_sequences,
                want_sequences, text_field, hub_mirror, shard_tokens, progress,
            )
        except BaseException:  # a failed source or Ctrl-C: leave no half-built folder behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if folder.exists():  # too small: move the old build aside, then swap the new one in
            old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    built = open_corpus(folder)
    assert built is not None
    return built


def prepare_corpora(configs, *, progress: bool = True, say=print) -> None:
    """Build, before any run of a study starts, the shards its runs will read: each corpus once
    (per tokenizer, context and held-out size), as large as its most demanding run needs. The
    runs then find them built, and the wait is shown here, corpus by corpus, rather than spent
    in silence inside the first runs. ``configs``: the runs' ``TrainingConfig``s."""
    needs: dict[tuple, int] = {}
    for cfg in configs:
        d = cfg.data
        key = (d.corpus, d.tokenizer, d.data_dir, d.seq_len, d.val_sequences, d.text_field,
               d.hub_mirror)
        tokens = d.train_tokens or cfg.total_steps * cfg.batch.global_batch_size * d.seq_len
        needs[key] = max(needs.get(key, 0), tokens)
    for (corpus, tokenizer, data_dir, seq_len, val_sequences, text_field, hub_mirror), tokens in (
            needs.items()):
        say(f"[data] {corpus}: tokenising {tokens:,} training tokens (and the held-out "
            "split) once for every run, unless built before")
        build_corpus(corpus, load_tokenizer(tokenizer), tokenizer_name=tokenizer,
                     data_dir=data_dir, seq_len=seq_len, val_sequences=val_sequences,
                     train_tokens=tokens, text_field=text_field, hub_mirror=hub_mirror,
                     progress=progress)


def _enough(built: BuiltCorpus, want_sequences: int) -> bool:
    return built.num_train_sequences >= want_sequences or built.index["train"]["exhausted"]


def _write_shards(tmp: Path, spec: CorpusSpec, fingerprint: dict, tokenizer, tokenizer_name: str,
                  seq_len: int, val_sequences: int, want_sequences: int, text_field: str | None,
                  hub_mirror: str | None, shard_tokens: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    vocab_size = len(tokenizer)
    dtype = token_dtype(vocab_size)
    shard_sequences = max(1, shard_tokens // seq_len)
    started = time.time()
    texts = iter_documents(spec, text_field=text_field, hub_mirror=hub_mirror)
    total = val_sequences + want_sequences
    bar = tqdm(total=total * seq_len, unit="tok", unit_scale=True, disable=not progress,
               desc=f"tokenising {spec.name}")

    buffer: list[np.ndarray] = []
    buffered = 0
    val_docs = train_docs = 0
    in_validation = True
    shards: list[dict] = []
    train_written = 0
    exhausted = True

    def flush_train(final: bool) -> None:
        nonlocal buffer, buffered, train_written
        tokens = np.concatenate(buffer) if buffer else np.zeros(0, dtype=dtype)
        while len(tokens) >= shard_sequences * seq_len or (final and len(tokens) >= seq_len):
            rows = min(shard_sequences, len(tokens) // seq_len,
                       want_sequences - train_written)
            if rows <= 0:
                break
            name = f"train-{len(shards):05d}.bin"
            tokens[: rows * seq_len].astype(dtype).tofile(tmp / name)
            shards.append({"file": name, "sequences": int(rows)})
            train_written += rows
            tokens = tokens[rows * seq_len:]
        buffer, buffered = ([tokens] if len(tokens) else []), len(tokens)

    for batch in iter_token_batches(texts, tokenizer):
        for doc in batch:
            buffer.append(np.asarray(doc, dtype=np.int64))
            buffered += len(doc)
            bar.update(len(doc))
            if in_validation:
                val_docs += 1
                if buffered >= val_sequences * seq_len:
                    tokens = np.concatenate(buffer)[: val_sequences * seq_len]
                    tokens.astype(dtype).tofile(tmp / "val.bin")
                    # The tail of the boundary document is dropped: training starts on a fresh
                    # document, so no document is split between the two splits.
                    buffer, buffered, in_validation = [], 0, False
            else:
                train_docs += 1
                if buffered >= shard_sequences * seq_len:
                    flush_train(final=False)
        if not in_validation and train_written + buffered // seq_len >= want_sequences:
            exhausted = False
            break
    bar.close()
    text_files = any(part.path == "text" for part in spec.parts)
    one_per_file = (" (a .txt file is one document: split the text into several files, or "
                    "write a .jsonl file with one {\"text\": ...} document per line)"
                    if text_files else "")
    if in_validation:
        raise CorpusError(
            f"corpus {spec.name!r} has only {buffered} tokens in {val_docs} document(s): not "
            f"enough for the {val_sequences} x {seq_len}-token validation split (lower "
            f"data.val_sequences){one_per_file}"
        )
    flush_train(final=True)
    if train_written == 0:
        if train_docs == 0:
            # The validation split ends at a document boundary (the boundary document's tail is
            # dropped), so a corpus of few long documents can lose everything to it, whatever
            # data.val_sequences is.
            raise CorpusError(
                f"corpus {spec.name!r}: the validation split took all of its {val_docs} "
                f"document(s) and left none for training; it needs more documents than "
                f"the validation split uses{one_per_file}"
            )
        raise CorpusError(f"corpus {spec.name!r} has no tokens left for training after the "
                          f"validation split ({train_docs} document(s), fewer than one "
                          f"{seq_len}-token sequence); lower data.val_sequences")
    index = {
        "format": FORMAT_VERSION,
        "corpus": spec.name,
        "source": [p.__dict__ for p in spec.parts],
        "source_fingerprint": fingerprint,
        "tokenizer": tokenizer_name,
        "vocab_size": vocab_size,
        "eos_token_id": _eos_id(tokenizer),
        "seq_len": seq_len,
        "dtype": dtype.name,
        "val": {"file": "val.bin", "sequences": val_sequences, "documents": val_docs},
        "train": {"shards": shards, "documents": train_docs, "exhausted": exhausted},
        "build_seconds": round(time.time() - started, 2),
    }
    tmp.joinpath(INDEX_NAME).write_text(json.dumps(index, indent=1))


# --------------------------------------------------------------------------- read order
class SequenceOrder:
    """A seeded pseudo-random permutation of ``range(n)`` per epoch, evaluated index by index.

    A 4-round Feistel network over the smallest even-bit domain >= n, with cycle walking, gives a
    bijection without materialising it (a 36B-token run has 70M sequences: a stored permutation
    per process would cost 560 MB). Position p of the stream reads sequence
    ``permute(p % n, epoch = p // n)``.
    """

    ROUNDS = 4

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("SequenceOrder needs at least one sequence")
        self.n = int(n)
        self.seed = int(seed)
        bits = max(2, int(np.ceil(np.log2(max(self.n, 2)))))
        bits += bits % 2
        self.half_bits = bits // 2
        self.mask = np.uint64((1 << self.half_bits) - 1)

    def _round_keys(self, epoch: int) -> list[np.uint64]:
        return [np.uint64(_splitmix64(self.seed * 1_000_003 + epoch * 101 + r))
                for r in range(self.ROUNDS)]

    def _feistel(self, x: np.ndarray, keys: list[np.uint64]) -> np.ndarray:
        hb = np.uint64(self.half_bits)
        left, right = x >> hb, x & self.mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << hb) | right

    def indices(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty_like(positions)
        epochs = positions // self.n
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            keys = self._round_keys(int(epoch))
            x = (positions[sel] % self.n).astype(np.uint64)
            y = self._feistel(x, keys)
            while True:  # cycle-walk values outside [0, n) back into it
                bad = y >= np.uint64(self.n)
                if not bad.any():
                    break
                y[bad] = self._feistel(y[bad], keys)
            out[sel] = y.astype(np.int64)
        return out


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xFF51AFD7ED558CCD)
        x = x ^ (x >> np.uint64(33))
        x = x * np.uint64(0xC4CEB9FE1A85EC53)
        return x ^ (x >> np.uint64(33))


# ------------------------------------------------------------------- for evaluation & co
def load_validation_split(
    corpus: str,
    *,
    tokenizer: str = LLAMA2_TOKENIZER,
    data_dir: str | os.PathLike = DATA_DIR,
    seq_len: int = 512,
    val_sequences: int = 2048,
    text_field: str | None = None,
    hub_mirror: str | None = None,
    build: bool = True,
) -> np.ndarray:
    """The held-out split of ``corpus`` that training never sees: an array [V, L] of token ids
    (memory-mapped). Built on first use (only the validation part plus one training sequence
    is tokenised) unless ``build=False``, which raises when it is absent.

    The split is a function of (corpus, tokenizer, seq_len, val_sequences) only, so training and
    evaluation agree on it when they agree on those four.
    """
    tok = load_tokenizer(tokenizer)
    folder = corpus_folder(data_dir, corpus, tokenizer_tag(tok, tokenizer), seq_len, val_sequences,
                           text_field)
    built = open_corpus(folder)
    if built is None:
        if not build:
            raise FileNotFoundError(f"no built corpus at {folder}; build it with "
                                    f"`python -m training.data {corpus} --tokenizer {tokenizer}`")
        built = build_corpus(corpus, tok, tokenizer_name=tokenizer, data_dir=data_dir,
                             seq_len=seq_len, val_sequences=val_sequences, train_tokens=seq_len,
                             text_field=text_field, hub_mirror=hub_mirror)
    return built.validation()


def validation_tokens(corpus: str, **kwargs) -> np.ndarray:
    """The held-out split as one flat token stream (EOS between documents)."""
    return np.asarray(load_validation_split(corpus, **kwargs)).reshape(-1)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.data CORPUS --tokenizer T --tokens N``: build shards ahead of training."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.data", description=main.__doc__)
    parser.add_argument("corpus", help="registered corpus name or local files")
    parser.add_argument("--tokenizer", default=LLAMA2_TOKENIZER)
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--val-sequences", type=int, default=2048)
    parser.add_argument("--tokens", type=float, default=1e8, help="training tokens to build")
    parser.add_argument("--text-field", default=None)
    parser.add_argument("--hub-mirror", default=None)
    args = parser.parse_args(argv)
    tok = load_tokenizer(args.tokenizer)
    try:
        built = build_corpus(args.corpus, tok, tokenizer_name=args.tokenizer,
                             data_dir=args.data_dir, seq_len=args.seq_len,
                             val_sequences=args.val_sequences, train_tokens=int(args.tokens),
                             text_field=args.text_field, hub_mirror=args.hub_mirror)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{built.root}: {built.num_val_sequences} validation and "
          f"{built.num_train_sequences} training sequences of {built.seq_len} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
