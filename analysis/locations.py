"""Where l2l keeps and finds things: its cache folder, and the Hub ids it uses by default.

One place for each, importable by every package without torch (``training``, ``evaluation`` and
``modeling_l2l`` read them too).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ROOT = "~/.cache/l2l"
"""The cache folder (converted runs, tokenizers, the papers' data); ``$L2L_CACHE`` moves it."""
DATA_DIR = f"{CACHE_ROOT}/data"
"""Default folder of tokenised training shards (``TrainingConfig.data.data_dir``). A run's
config records this path as written, so it does not follow ``$L2L_CACHE``: the evaluation of a
run reads the shards its config names."""
LLAMA2_TOKENIZER = "meta-llama/Llama-2-7b-hf"
"""The tokenizer of every run of the loss-to-loss paper (gated on the Hub: accept its licence,
then ``hf auth login``)."""


def cache_dir(name: str) -> Path:
    """``$L2L_CACHE/name`` (default ``~/.cache/l2l/name``)."""
    return Path(os.environ.get("L2L_CACHE") or CACHE_ROOT).expanduser() / name
