"""Held-out losses: cross-entropy per token and bits per byte on a corpus' validation split.

The held-out split is training's (``training.data.load_validation_split``): the first documents
of the corpus stream, tokenized without special tokens, each followed by EOS, cut into sequences
of ``seq_len`` tokens, never trained on. It is a function of (corpus, tokenizer, seq_len,
val_sequences), so evaluation reads exactly the split its runs held out when it is given the
run's data settings (the sweep reads them from each run's ``training_config.yaml``). A
pre-tokenized ``.npy`` stream of token ids can be given instead.

Losses are computed over a fixed, deterministic number of tokens: the first ``n_tokens //
seq_len`` sequences of the split, the same for every model. In each sequence every position
predicts the next token, as OLMo's evaluator and the training loss do: ``seq_len - 1`` scored
tokens per sequence, the first token only conditions. Those predicted tokens are what the loss
averages over, so they are what a loss row's ``n`` counts: sequences x (seq_len - 1), in tokens.

Bits per byte divide the summed loss (in bits) by the UTF-8 bytes of the scored tokens. Each
token's bytes come from the vocabulary (``token_byte_lengths``): exact for byte-level BPE; for
SentencePiece the space marker counts as one byte (so the dummy prefix before a document's first
word counts too); special tokens (EOS) count zero bytes.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from analysis.locations import DATA_DIR

from .scorer import model_max_length

logger = logging.getLogger(__name__)

DEFAULT_LOSS_TOKENS = 1 << 20

# The loss-to-loss sweep's column spellings of the corpora it evaluates (``eval/<key>_val/...``).
PAPER_CORPUS_KEYS = {
    "fineweb-100b": "fineweb_100b",
    "fineweb-edu-100b": "fineweb_edu_100b",
    "proof-pile-2": "proof_pile_2",
    "slimpajama-chunk1": "slimpajama",
    "slimpajama": "slimpajama",
    "smollm-corpus": "smollm",
    "smollm": "smollm",
    "starcoder": "starcoder",
    "c4": "c4",
    "fineweb-1T": "fineweb_1T",
}


def corpus_key(corpus: str) -> str:
    return PAPER_CORPUS_KEYS.get(corpus, re.sub(r"[^0-9A-Za-z]+", "_", corpus).strip("_"))


def loss_metric_names(corpus: str) -> dict[str, str]:
    key = corpus_key(corpus)
    return {
        "ce": f"eval/{key}_val/CrossEntropyLoss",
        "ppl": f"eval/{key}_val/Perplexity",
        "bpb": f"eval/{key}_val/BitsPerByte",
    }


class HeldOutDataError(ValueError):
    """The held-out data is missing, empty, malformed or too short."""


# ---------------------------------------------------------------------------- held-out tokens
def load_token_file(path: str | Path, n_tokens: int) -> np.ndarray:
    """Pre-tokenized held-out data: a ``.npy`` array of token ids (memory-mapped, never pickled)."""
    path = Path(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise HeldOutDataError(f"{path}: not a readable .npy token array ({err})") from None
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise HeldOutDataError(
            f"{path}: expected a 1-D integer array, got {array.dtype}{array.shape}"
        )
    return np.asarray(array[:n_tokens], dtype=np.int64)


# ---------------------------------------------------------------------------- bytes per token
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 bytes of the text each token id stands for (0 for special tokens)."""
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    lengths = np.zeros(size, dtype=np.int64)
    special = set(tokenizer.all_special_ids)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and '"ByteLevel"' in backend.to_str()
    byte_chars = set(_bytes_to_unicode().values())
    for token, idx in vocab.items():
        if idx in special:
            continue
        if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):  # SentencePiece byte fallback
            lengths[idx] = 1
        elif byte_level and all(c in byte_chars for c in token):
            lengths[idx] = len(token)  # one character per byte
        else:
            lengths[idx] = len(token.replace("\u2581", " ").encode("utf-8"))
    return lengths


# ---------------------------------------------------------------------------- the evaluation
@dataclass(frozen=True)
class HeldOutLoss:
    ce: float
    """Mean cross-entropy per scored token, in nats."""
    bpb: float | None
    """Bits per UTF-8 byte of the scored tokens (None without a tokenizer to count bytes)."""
    n_tokens: int
    """Tokens read (windows x seq_len)."""
    n_scored: int
    """Tokens predicted (windows x (seq_len - 1)): ``ce`` is their mean, the rows' ``n``."""
    seq_len: int


@torch.no_grad()
def held_out_loss(
    model,
    windows: np.ndarray,
    *,
    byte_lengths: np.ndarray | None = None,
    max_batch_tokens: int = 4096,
    progress: bool = True,
    desc: str = "held-out loss",
) -> HeldOutLoss:
    """Cross-entropy (and bits per byte) of ``model`` on held-out sequences [n, seq_len]."""
    windows = np.asarray(windows)
    if windows.ndim != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise HeldOutDataError(
            f"expected held-out sequences [n >= 1, seq_len >= 2], got {windows.shape}"
        )
    n_windows, seq_len = windows.shape
    context = model_max_length(model)
    if seq_len > context:
        raise HeldOutDataError(
            f"held-out sequences of {seq_len} tokens are longer than the model's context {context}"
        )
    vocab = model.get_output_embeddings().weight.shape[0]
    if windows.min() < 0 or windows.max() >= vocab:
        raise HeldOutDataError(
            f"token id {int(windows.max())} is outside the model's vocabulary of {vocab}; the "
            "tokenizer does not fit this model"
        )
    model.eval()
    per_batch = max(1, max_batch_tokens // seq_len)
    total_nats = 0.0
    for start in tqdm(range(0, n_windows, per_batch), desc=desc, disable=not progress, leave=False):
        batch = torch.as_tensor(windows[start : start + per_batch], dtype=torch.long).to(
            model.device
        )
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1]
        total_nats += F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        ).item()
    n_scored = n_windows * (seq_len - 1)
    bpb = None
    if byte_lengths is not None:
        n_bytes = int(byte_lengths[windows[:, 1:]].sum())
        bpb = total_nats / math.log(2) / n_bytes if n_bytes else None
    return HeldOutLoss(total_nats / n_scored, bpb, n_windows * seq_len, n_scored, seq_len)


def held_out_windows(
    source: str,
    *,
    seq_len: int,
    n_tokens: int,
    tokenizer: str | None = None,
    data_dir: str = DATA_DIR,
    val_sequences: int = 2048,
    build: bool = True,
    text_field: str | None = None,
) -> np.ndarray:
    """The first ``n_tokens // seq_len`` held-out sequences of ``source``, shape [n, seq_len].

    ``text_field``: the documents' field for a local JSON or Parquet corpus (the run's
    ``data.text_field``); it is part of what keys the built split, as in training.

    ``source`` is a ``.npy`` token stream, or a corpus for ``training.data.load_validation_split``
    (a registered name such as ``fineweb-100b`` or ``c4``, or local text/JSONL/Parquet files)
    tokenized with ``tokenizer`` (a name or folder, as in a training config)."""
    n_windows = n_tokens // seq_len
    if n_windows < 1:
        raise HeldOutDataError(f"n_tokens={n_tokens} is less than one sequence of {seq_len} tokens")
    if str(source).endswith(".npy"):
        stream = load_token_file(source, n_windows * seq_len)
        have = len(stream) // seq_len
        if have == 0:
            raise HeldOutDataError(
                f"{source}: {len(stream)} tokens, fewer than one sequence of {seq_len}"
            )
        if have < n_windows:
            _warn_short(source, "token stream", have, n_windows, seq_len, n_tokens)
        return stream[: have * seq_len].reshape(have, seq_len)
    if tokenizer is None:
        raise HeldOutDataError(
            f"held-out corpus {source!r}: a tokenizer name is needed to build it"
        )
    from training.data import load_validation_split

    try:
        split = load_validation_split(
            source,
            tokenizer=tokenizer,
            data_dir=data_dir,
            seq_len=seq_len,
            val_sequences=val_sequences,
            build=build,
            text_field=text_field,
        )
    except (OSError, ValueError, KeyError) as err:  # OSError: missing files, offline Hub
        raise HeldOutDataError(f"held-out split of {source!r}: {err}") from None
    if n_windows > len(split):
        # Reading past the split would score documents the runs trained on.
        _warn_short(source, "held-out split", len(split), n_windows, seq_len, n_tokens)
    return np.asarray(split[:n_windows], dtype=np.int64)


def _warn_short(source, what: str, have: int, wanted: int, seq_len: int, n_tokens: int) -> None:
    """Fewer sequences than asked for: said in sequences and in tokens both, so that the message
    reads against the rows' n (the predicted tokens)."""
    logger.warning(
        "%s: the %s has %d sequences of %d tokens, fewer than the %d asked for (%d tokens // %d); "
        "the loss is over all of them: %d predicted tokens (%d per sequence), the n of its rows",
        source,
        what,
        have,
        seq_len,
        wanted,
        n_tokens,
        seq_len,
        have * (seq_len - 1),
        seq_len - 1,
    )
