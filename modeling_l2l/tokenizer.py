"""Tokenizers: the paper's Llama-2 tokenizer when reachable, and an offline byte-level BPE.

The paper tokenised every corpus with the Llama-2 tokenizer (32000 tokens: ``<unk>`` 0, ``<s>`` 1,
``</s>`` 2). ``load_tokenizer()`` loads it by Hub id (default ``LLAMA2_TOKENIZER``, a gated
repository: log in first) or from a local folder. Nothing of it is vendored here.

Offline (CI, a laptop without Hub access), ``train_offline_tokenizer(vocab_size)`` trains a
byte-level BPE with ``tokenizers`` on text every Python install carries (the standard library's
``.py`` sources: code and English docstrings), with the same special tokens at the same ids, and
caches it on disk. It runs the pipeline end to end, but its losses are not comparable with the
paper's: only the Llama-2 tokenizer reproduces the paper's numbers.

Special tokens, as in the paper's OLMo-fork training:

- training: documents are concatenated with the EOS id (``tokenizer.eos_token_id``, 2) after
  each document, then cut into 512-token sequences; no BOS is inserted.
- evaluation: text is encoded with ``add_special_tokens=False`` (the Llama-2 tokenizer would
  otherwise prepend ``<s>``, which the models never saw); the offline tokenizer adds none anyway.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from analysis.locations import LLAMA2_TOKENIZER, cache_dir

# Llama-2's special tokens and ids, reused by the offline tokenizer so that eos_token_id = 2 holds.
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
UNK, BOS, EOS = SPECIAL_TOKENS


OFFLINE_PREFIX = "offline:"


def load_tokenizer(
    name_or_path: str | os.PathLike = LLAMA2_TOKENIZER, **from_pretrained_kwargs
) -> PreTrainedTokenizerBase:
    """The tokenizer at a Hub id or local folder (default: the paper's Llama-2 tokenizer), or
    ``offline:V``: the package's byte-level BPE of V tokens (``train_offline_tokenizer(V)``), for
    runs without the Hub. Its losses are not comparable with the paper's Llama-2 ones.

    Raises ``OSError`` naming the offline alternative when it cannot be loaded.
    """
    name = os.path.expanduser(str(name_or_path))
    if name.startswith(OFFLINE_PREFIX):
        size = name[len(OFFLINE_PREFIX) :]
        if not size.isdigit():
            raise ValueError(f"offline tokenizer: expected offline:<vocab size>, got {name!r}")
        return train_offline_tokenizer(int(size))
    try:
        return AutoTokenizer.from_pretrained(name, **from_pretrained_kwargs)
    except (OSError, ValueError) as error:
        raise OSError(
            f"cannot load the tokenizer {name!r} ({error}). Offline, use 'offline:<vocab size>' "
            "(modeling_l2l.train_offline_tokenizer; not the paper's tokenizer: its losses are not "
            "comparable with the paper's), or pass a local folder."
        ) from error


def stdlib_text_files() -> list[Path]:
    """The standard library's ``.py`` sources (tests and site-packages left out), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.parts))


def default_tokenizer_cache() -> Path:
    """``$L2L_CACHE/tokenizers`` (default ``~/.cache/l2l/tokenizers``)."""
    return cache_dir("tokenizers")


def _corpus_fingerprint(files: Sequence[Path], vocab_size: int, max_bytes: int | None) -> str:
    import tokenizers

    digest = hashlib.sha256(f"{vocab_size}|{max_bytes}|{tokenizers.__version__}".encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _read_texts(files: Sequence[Path], max_bytes: int | None) -> Iterable[str]:
    remaining = max_bytes
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if remaining is not None:
            text = text[:remaining]
            remaining -= len(text)
        yield text
        if remaining is not None and remaining <= 0:
            return


def train_offline_tokenizer(
    vocab_size: int = 32000,
    *,
    files: Sequence[str | os.PathLike] | None = None,
    max_bytes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE of ``vocab_size`` tokens trained on local text, cached on disk.

    ``files`` default to the standard library's sources (``stdlib_text_files()``); ``max_bytes``
    caps the characters read (small test tokenizers train in well under a second). The cache file
    is keyed by the corpus contents, the vocabulary size and the ``tokenizers`` version, so the
    same machine always gets the same tokenizer. ``<unk>``, ``<s>``, ``</s>`` take ids 0, 1, 2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {vocab_size!r}")
    minimum = 256 + len(SPECIAL_TOKENS)  # every byte, plus the special tokens
    if vocab_size < minimum:
        raise ValueError(f"a byte-level BPE needs vocab_size >= {minimum}, got {vocab_size}")
    paths = [Path(f) for f in files] if files is not None else stdlib_text_files()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise FileNotFoundError(f"tokenizer training text not found: {missing or 'no files given'}")

    cache = Path(cache_dir) if cache_dir is not None else default_tokenizer_cache()
    cached = (
        cache
        / f"bytelevel-bpe-{vocab_size}-{_corpus_fingerprint(paths, vocab_size, max_bytes)}.json"
    )
    if cached.is_file():
        tokenizer = Tokenizer.from_file(str(cached))
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(_read_texts(paths, max_bytes), trainer)
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache, suffix=".tmp", delete=False) as tmp:
            tmp.write(tokenizer.to_str())
        os.replace(tmp.name, cached)  # atomic: concurrent trainers never see a partial file

    if tokenizer.get_vocab_size() != vocab_size:
        raise ValueError(
            f"the training text yields only {tokenizer.get_vocab_size()} tokens, fewer than "
            f"vocab_size={vocab_size}: pass more files or a larger max_bytes"
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=model_max_length,
    )


__all__ = [
    "LLAMA2_TOKENIZER",
    "OFFLINE_PREFIX",
    "SPECIAL_TOKENS",
    "default_tokenizer_cache",
    "load_tokenizer",
    "stdlib_text_files",
    "train_offline_tokenizer",
]
