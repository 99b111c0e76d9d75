"""What is evaluated: a model, its tokenizer, and the run it belongs to (name, dataset, N, D, C).

``--model`` is a ``save_pretrained`` folder (a run folder of a study holds one at its top level),
a released run of the loss-to-loss paper by name (``L2L_{dataset}_N.._D.._C..``), or a Hub id.
A run's dataset, N, D and C come from its ``final.json`` (written by training), else from its
name; N falls back to the model's parameter count (embeddings included, the papers' N).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ModelLoadError(RuntimeError):
    """The model or its tokenizer cannot be loaded, or they do not fit together."""


@dataclass
class RunInfo:
    """The run columns of the results table, and where the run's data settings are."""

    run: str
    dataset: str | None = None
    N: float | None = None
    D: float | None = None
    C: float | None = None
    model: str = ""
    """The folder or Hub id the model is loaded from."""
    data_config: dict = field(default_factory=dict)
    """The ``data`` section of the run's ``training_config.yaml`` (tokenizer, seq_len, ...)."""

    def columns(self) -> dict:
        return {"run": self.run, "dataset": self.dataset, "N": self.N, "D": self.D, "C": self.C,
                "model": self.model}  # fmt: skip


def _parse_run_name(name: str):
    try:
        from analysis.run_names import parse_run_name

        return parse_run_name(name)
    except (ImportError, ValueError):
        return None


def run_info(model: str) -> RunInfo:
    """Run columns for a model folder, released run name or Hub id (without loading weights)."""
    path = Path(os.path.expanduser(model))
    name = path.name if path.is_dir() else model.rstrip("/").split("/")[-1]
    info = RunInfo(run=name, model=str(path) if path.is_dir() else model)
    parsed = _parse_run_name(name)
    if parsed is not None:
        info.dataset, info.N, info.D, info.C = parsed.dataset, parsed.N, parsed.D, parsed.C
    final = path / "final.json"
    if path.is_dir() and final.is_file():
        try:
            meta = json.loads(_read_text(final))
        except json.JSONDecodeError as err:
            raise ModelLoadError(f"{final}: not valid JSON ({err.msg})") from None
        if not isinstance(meta, dict):
            raise ModelLoadError(f"{final}: expected a JSON object, got {type(meta).__name__}")
        # These become the run's columns in every row: a wrong type or a NaN here would be
        # written silently into the table (and "run" keys resuming), so each is checked.
        for key in ("run", "dataset"):
            value = meta.get(key)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise ModelLoadError(f"{final}: {key!r} is {value!r}, not a name")
        info.run = meta.get("run") or info.run
        info.dataset = meta.get("dataset") or info.dataset
        for key in ("N", "D", "C"):
            if meta.get(key) is not None:
                setattr(info, key, _positive_number(meta[key], key, final))
    config = path / "training_config.yaml"
    if path.is_dir() and config.is_file():
        import yaml

        try:
            parsed = yaml.safe_load(_read_text(config))
        except yaml.YAMLError as err:
            raise ModelLoadError(f"{config}: not valid YAML ({err})") from None
        data = (parsed.get("data") if isinstance(parsed, dict) else None) or {}
        info.data_config = data if isinstance(data, dict) else {}
        if info.dataset is None and isinstance(info.data_config.get("corpus"), str):
            info.dataset = info.data_config["corpus"]
    return info


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"cannot read {path}: {err}") from None


def _positive_number(value, key: str, path: Path) -> float:
    """A count (N, D) or compute (C) of ``path``: a finite number above zero."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ModelLoadError(f"{path}: {key!r} is {value!r}, not a positive number")
    return number


def parse_dtype(dtype: str) -> torch.dtype:
    """The floating-point torch dtype named ``dtype`` (weights and activations)."""
    torch_dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return torch_dtype


def check_device(device: str) -> None:
    """Refuse a device this machine lacks now, rather than as a traceback once a model is loaded:
    allocating an empty tensor there fails the same way moving a model would."""
    try:
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError, ValueError, TypeError) as err:
        # torch's first sentence says it; the rest lists backends over many lines.
        reason = (str(err).split("\n")[0].split(". ")[0] or type(err).__name__)[:200]
        raise ValueError(f"device {device!r} is not usable here: {reason}") from None


def load_model(
    model: str,
    *,
    device: str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
):
    """A causal LM in eval mode on ``device`` (default: CUDA when available)."""
    from transformers import AutoModelForCausalLM

    try:
        import modeling_l2l  # noqa: F401 - registers model_type "l2l" with the Auto classes
    except ImportError:
        pass
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = parse_dtype(dtype)
    path = Path(os.path.expanduser(model))
    source = str(path) if path.is_dir() else model
    if not path.is_dir() and _parse_run_name(model) is not None:
        source = _released_run_folder(model)
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except Exception as err:  # noqa: BLE001 - missing files, corrupt weights, unknown type, offline
        raise ModelLoadError(
            f"cannot load a causal LM from {source!r}: {type(err).__name__}: {err}"
        ) from err
    try:
        return lm.to(device).eval()
    except (RuntimeError, AssertionError) as err:  # out of memory, a device torch was not built for
        raise ModelLoadError(
            f"cannot move the model of {source!r} to {device}: {type(err).__name__}: {err}"
        ) from err


def _released_run_folder(name: str) -> str:
    """The converted local folder of a released loss-to-loss run (downloaded and converted once
    by ``modeling_l2l.prepare_l2l_run``)."""
    from modeling_l2l import prepare_l2l_run

    try:
        return str(prepare_l2l_run(name))
    except Exception as err:  # noqa: BLE001 - offline, unknown run, conversion failure
        raise ModelLoadError(
            f"cannot fetch released run {name!r}: {type(err).__name__}: {err}"
        ) from err


def load_tokenizer(name: str):
    """A tokenizer by Hub id, folder, or ``offline:V`` (the package's local BPE of V tokens), as
    training resolves its ``data.tokenizer``."""
    from modeling_l2l.tokenizer import load_tokenizer as load

    try:
        return load(name)
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot load tokenizer {name!r}: {type(err).__name__}: {err}"
        ) from err


def resolve_tokenizer(model: str, info: RunInfo, tokenizer: str | None = None):
    """The tokenizer for a model: ``tokenizer`` if given, else the files beside the weights, else
    the run's training tokenizer (``training_config.yaml``), else a clear error."""
    if tokenizer is not None:
        return load_tokenizer(tokenizer), tokenizer
    path = Path(os.path.expanduser(model))
    if path.is_dir() and any((path / f).is_file() for f in TOKENIZER_FILES):
        return load_tokenizer(str(path)), str(path)
    name = info.data_config.get("tokenizer")
    if isinstance(name, str):
        return load_tokenizer(name), name
    if not path.is_dir() and _parse_run_name(model) is not None:
        from modeling_l2l.tokenizer import LLAMA2_TOKENIZER  # the paper's released runs used it

        return load_tokenizer(LLAMA2_TOKENIZER), LLAMA2_TOKENIZER
    if not path.is_dir():
        return load_tokenizer(model), model
    raise ModelLoadError(
        f"no tokenizer for {model}: it has no tokenizer files and no training_config.yaml naming "
        "one; pass --tokenizer (a Hub id, a folder, or offline:V)"
    )


def check_tokenizer_fits(tokenizer, model) -> None:
    """Every token id of the tokenizer must index the model's embedding and output head."""
    model_vocab = model.get_output_embeddings().weight.shape[0]
    embed_vocab = model.get_input_embeddings().weight.shape[0]
    n_tokens = len(tokenizer)
    if n_tokens > min(model_vocab, embed_vocab):
        raise ModelLoadError(
            f"the tokenizer has {n_tokens} tokens but the model's vocabulary has "
            f"{min(model_vocab, embed_vocab)}: this tokenizer does not belong to this model"
        )


def count_parameters(model) -> int:
    """All parameters, embeddings and head included (the loss-to-loss paper's N)."""
    return sum(p.numel() for p in model.parameters())
