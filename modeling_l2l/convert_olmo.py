"""Convert a released OLMo-fork checkpoint of the loss-to-loss paper into a ``from_pretrained`` folder.

Each run folder of ``KempnerInstituteAI/loss-to-loss`` holds ``config.json`` (the OLMo
``ModelConfig`` dict) and an fp32 ``model.safetensors`` with OLMo's tensor names::

    transformer.wte.weight                      [V, d]
    transformer.blocks.{i}.attn_norm.weight     [d]
    transformer.blocks.{i}.att_proj.weight      [3d, d]   rows: q | k | v
    transformer.blocks.{i}.q_norm.weight        [d]
    transformer.blocks.{i}.k_norm.weight        [d]
    transformer.blocks.{i}.attn_out.weight      [d, d]
    transformer.blocks.{i}.ff_norm.weight       [d]
    transformer.blocks.{i}.ff_proj.weight       [4d, d]
    transformer.blocks.{i}.ff_out.weight        [d, 4d]
    transformer.ln_f.weight                     [d]
    transformer.ff_out_last.weight              [V, d]    untied head (upstream OLMo: ff_out)

The config is validated against the architecture this package implements (every unsupported
setting is reported at once), every tensor must be present with its shape and nothing else may be
left over (never a silent random init), and the output folder is written atomically. An existing
destination is replaced only with ``--overwrite`` and only if it holds a previous conversion and
nothing else; never the source or a folder containing it.

Usage: ``python -m modeling_l2l.convert_olmo SRC DST [--overwrite]``. Not imported by the modeling files, which
are copied beside the weights for remote code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

# torch, safetensors and the model are imported by the functions that use them, so that `--help`
# and a refused destination do not wait seconds for them.
if TYPE_CHECKING:
    import torch

    from .configuration_l2l import L2LConfig
    from .modeling_l2l import L2LForCausalLM

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# What save_pretrained writes besides the Python files of this package (copied for remote code):
# the only files that `overwrite` may delete.
CONVERSION_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, "generation_config.json",
                              "model.safetensors.index.json"})
_WEIGHT_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_PACKAGE_DIR = Path(__file__).resolve().parent

# OLMo ModelConfig settings this architecture fixes: field -> (allowed values, default when absent,
# why). A value outside the allowed set cannot be represented by L2LForCausalLM.
_FIXED_SETTINGS: dict[str, tuple[tuple[Any, ...], Any, str]] = {
    "rope": ((True,), False, "the model uses rotary position embeddings"),
    "alibi": ((False,), False, "ALiBi is not implemented"),
    "attention_layer_norm": ((True,), False, "queries and keys are LayerNorm-ed"),
    "attention_layer_norm_with_affine": ((True,), True, "q_norm/k_norm carry a weight"),
    "layer_norm_with_affine": ((True,), True, "LayerNorms carry a weight"),
    # "low_precision" differs from "default" only under autocast; in fp32 both are F.layer_norm.
    "layer_norm_type": (("default", "low_precision"), "default", "LayerNorm, not RMSNorm"),
    "activation_type": (("gelu",), "swiglu", "the MLP is d -> 4d -> d with exact GELU"),
    "block_type": (("sequential",), "sequential", "pre-norm sequential blocks with fused qkv"),
    "weight_tying": ((False,), True, "the paper's models have an untied output head"),
    "include_bias": ((False,), True, "there are no biases"),
    "bias_for_layer_norm": ((None, False), None, "LayerNorms have no bias"),
    "scale_logits": ((False,), False, "logits are not scaled"),
    "clip_qkv": ((None,), None, "q, k, v are not clipped"),
    "norm_after": ((False,), False, "norms come before attention and MLP"),
    "embedding_layer_norm": ((False,), False, "embeddings are not normalised"),
    "multi_query_attention": ((None, False), None, "attention is multi-head"),
}


class OlmoCheckpointError(ValueError):
    """An OLMo-fork checkpoint that this architecture cannot represent exactly."""


def _require_int(olmo: dict, name: str, default: Any = None, problems: list[str] | None = None):
    value = olmo.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(f"{name} must be a positive int, got {value!r}")
        return None
    return value


def l2l_config_from_olmo(olmo: dict) -> L2LConfig:
    """``L2LConfig`` equivalent to an OLMo ``ModelConfig`` dict, or ``OlmoCheckpointError``."""
    from . import L2LConfig  # through the package: registers the Auto classes

    if isinstance(olmo.get("model"), dict) and "d_model" in olmo["model"]:
        olmo = olmo["model"]  # a full OLMo TrainConfig: the model part is under "model"
    problems: list[str] = []
    for name, (allowed, default, why) in _FIXED_SETTINGS.items():
        value = olmo.get(name, default)
        # bool is an int subclass: compare with type so that 0/1 never pass for False/True
        if not any(type(value) is type(ok) and value == ok for ok in allowed):
            shown = " or ".join(repr(ok) for ok in allowed)
            problems.append(f"{name}={value!r} (expected {shown}: {why})")

    d_model = _require_int(olmo, "d_model", problems=problems)
    n_heads = _require_int(olmo, "n_heads", problems=problems)
    n_layers = _require_int(olmo, "n_layers", problems=problems)
    context = _require_int(olmo, "max_sequence_length", problems=problems)
    vocab_size = _require_int(olmo, "vocab_size", problems=problems)
    embedding_size = olmo.get("embedding_size") or vocab_size
    if isinstance(embedding_size, bool) or not isinstance(embedding_size, int):
        problems.append(f"embedding_size must be an int or null, got {embedding_size!r}")
    elif vocab_size is not None and embedding_size < vocab_size:
        problems.append(f"embedding_size {embedding_size} is smaller than vocab_size {vocab_size}")
    if d_model and n_heads and d_model % n_heads:
        problems.append(f"n_heads={n_heads} does not divide d_model={d_model}")
    n_kv_heads = olmo.get("n_kv_heads")
    if n_kv_heads not in (None, n_heads):
        problems.append(f"n_kv_heads={n_kv_heads!r}: grouped-query attention is not implemented")

    if olmo.get("mlp_hidden_size") is not None:
        intermediate = _require_int(olmo, "mlp_hidden_size", problems=problems)
    else:
        ratio = _require_int(olmo, "mlp_ratio", default=4, problems=problems)
        intermediate = ratio * d_model if ratio and d_model else None

    rope_theta = olmo.get("rope_theta", 10000)
    eps = olmo.get("layer_norm_eps", 1e-5)
    for name, value in (("rope_theta", rope_theta), ("layer_norm_eps", eps)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            problems.append(f"{name} must be a positive number, got {value!r}")
    if problems:
        raise OlmoCheckpointError(
            "OLMo config does not match the loss-to-loss architecture:\n  - "
            + "\n  - ".join(problems)
        )

    token_ids = {
        key: olmo[key] for key in ("eos_token_id", "pad_token_id") if isinstance(olmo.get(key), int)
    }
    cutoff = olmo.get("init_cutoff_factor")
    return L2LConfig(
        vocab_size=embedding_size,
        hidden_size=d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        intermediate_size=intermediate,
        max_position_embeddings=context,
        rope_theta=float(rope_theta),
        layer_norm_eps=float(eps),
        initializer_cutoff_factor=float(cutoff) if isinstance(cutoff, (int, float)) else 3.0,
        **token_ids,
    )


def expected_olmo_shapes(config: L2LConfig) -> dict[str, tuple[int, ...]]:
    """OLMo tensor name -> shape for a checkpoint of this config."""
    d, ff, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    shapes = {"transformer.wte.weight": (vocab, d)}
    for i in range(config.num_hidden_layers):
        block = f"transformer.blocks.{i}"
        shapes.update(
            {
                f"{block}.attn_norm.weight": (d,),
                f"{block}.att_proj.weight": (3 * d, d),
                f"{block}.q_norm.weight": (d,),
                f"{block}.k_norm.weight": (d,),
                f"{block}.attn_out.weight": (d, d),
                f"{block}.ff_norm.weight": (d,),
                f"{block}.ff_proj.weight": (ff, d),
                f"{block}.ff_out.weight": (d, ff),
            }
        )
    shapes["transformer.ln_f.weight"] = (d,)
    shapes["transformer.ff_out_last.weight"] = (vocab, d)
    return shapes


def olmo_to_l2l_state_dict(
    tensors: dict[str, torch.Tensor], config: L2LConfig
) -> dict[str, torch.Tensor]:
    """Rename (and split the fused q|k|v projection of) an OLMo state dict; refuse any mismatch."""
    tensors = dict(tensors)
    # upstream OLMo calls the untied head transformer.ff_out; the paper's fork ff_out_last
    if "transformer.ff_out_last.weight" not in tensors and "transformer.ff_out.weight" in tensors:
        tensors["transformer.ff_out_last.weight"] = tensors.pop("transformer.ff_out.weight")
    expected = expected_olmo_shapes(config)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = [
        f"{name}: {tuple(tensors[name].shape)} (expected {expected[name]})"
        for name in expected
        if name in tensors and tuple(tensors[name].shape) != expected[name]
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for title, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong_shape),
        ):
            if names:
                parts.append(f"{len(names)} {title}:\n    " + "\n    ".join(names))
        raise OlmoCheckpointError(
            "checkpoint tensors do not match the config (refusing a partial conversion):\n  "
            + "\n  ".join(parts)
        )

    d = config.hidden_size
    state = {
        "model.embed_tokens.weight": tensors["transformer.wte.weight"],
        "model.norm.weight": tensors["transformer.ln_f.weight"],
        "lm_head.weight": tensors["transformer.ff_out_last.weight"],
    }
    for i in range(config.num_hidden_layers):
        olmo, ours = f"transformer.blocks.{i}", f"model.layers.{i}"
        # clone: row slices of one tensor share its storage, which safetensors refuses to save
        q, k, v = (part.clone() for part in tensors[f"{olmo}.att_proj.weight"].split(d, dim=0))
        state.update(
            {
                f"{ours}.input_layernorm.weight": tensors[f"{olmo}.attn_norm.weight"],
                f"{ours}.self_attn.q_proj.weight": q,
                f"{ours}.self_attn.k_proj.weight": k,
                f"{ours}.self_attn.v_proj.weight": v,
                f"{ours}.self_attn.q_norm.weight": tensors[f"{olmo}.q_norm.weight"],
                f"{ours}.self_attn.k_norm.weight": tensors[f"{olmo}.k_norm.weight"],
                f"{ours}.self_attn.o_proj.weight": tensors[f"{olmo}.attn_out.weight"],
                f"{ours}.post_attention_layernorm.weight": tensors[f"{olmo}.ff_norm.weight"],
                f"{ours}.mlp.up_proj.weight": tensors[f"{olmo}.ff_proj.weight"],
                f"{ours}.mlp.down_proj.weight": tensors[f"{olmo}.ff_out.weight"],
            }
        )
    return {name: tensor.contiguous() for name, tensor in state.items()}


def load_olmo_checkpoint(src_dir: str | Path) -> L2LForCausalLM:
    """Build the converted model in memory from an OLMo-fork run folder (safetensors only)."""
    import torch
    from safetensors import safe_open

    from . import L2LForCausalLM  # through the package: save_pretrained writes the code files

    src = Path(src_dir)
    config_path, weights_path = src / CONFIG_NAME, src / WEIGHTS_NAME
    if src.exists() and not src.is_dir():
        raise FileNotFoundError(f"OLMo checkpoint: {src} is a file, not a run folder")
    for path in (config_path, weights_path):
        if not path.is_file():
            present = sorted(p.name for p in src.iterdir()) if src.is_dir() else "no such folder"
            raise FileNotFoundError(f"OLMo checkpoint: {path} not found (folder holds: {present})")
    try:
        olmo_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise OlmoCheckpointError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(olmo_config, dict):
        raise OlmoCheckpointError(f"{config_path} must hold a JSON object")
    if olmo_config.get("model_type") == "l2l":  # else a list of every OLMo field it lacks
        raise OlmoCheckpointError(
            f"{src} is already a converted (transformers, model_type 'l2l') folder: load it with "
            "from_pretrained, there is nothing to convert"
        )
    config = l2l_config_from_olmo(olmo_config)

    try:
        with safe_open(weights_path, framework="pt") as weights:
            tensors = {name: weights.get_tensor(name) for name in weights.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise OlmoCheckpointError(f"cannot read {weights_path}: {error}") from error
    state = olmo_to_l2l_state_dict(tensors, config)

    # Build on the meta device and adopt the checkpoint's tensors: no random init to overwrite.
    with torch.device("meta"):
        model = L2LForCausalLM(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def foreign_entries(folder: str | Path) -> list[str] | None:
    """The entries of ``folder`` that a conversion did not write (sorted), or None when it holds
    no conversion at all (no ``config.json`` with ``model_type`` "l2l", or no weights)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    names = {p.name for p in folder.iterdir()}
    has_weights = WEIGHTS_NAME in names or "model.safetensors.index.json" in names
    if not isinstance(config, dict) or config.get("model_type") != "l2l" or not has_weights:
        return None
    ours = {
        name for name in names
        if (folder / name).is_file() and not (folder / name).is_symlink()
        and (name in CONVERSION_FILES or _WEIGHT_SHARD.fullmatch(name)
             or (name.endswith(".py") and (_PACKAGE_DIR / name).is_file()))
    }
    return sorted(names - ours)


def check_destination(
    src_dir: str | Path, dst_dir: str | Path, *, overwrite: bool = False,
    overwrite_hint: str = "pass overwrite=True",
) -> None:
    """Refuse (``FileExistsError``, naming what is there) a destination whose replacement would
    lose data: the source itself or a folder that contains it (paths compared after resolving
    symbolic links), an existing file, or a non-empty folder unless ``overwrite`` is set and the
    folder holds a previous conversion and nothing else."""
    src, dst = Path(src_dir), Path(dst_dir)
    real_src, real_dst = Path(os.path.realpath(src)), Path(os.path.realpath(dst))
    if real_dst == real_src:
        raise FileExistsError(f"destination {dst} is the source folder {src}; choose another one")
    if real_dst in real_src.parents:
        raise FileExistsError(
            f"destination {dst} contains the source folder {src}; replacing it would delete the "
            "source: choose another one"
        )
    if not os.path.lexists(dst):
        return
    if not dst.is_dir():
        what = "a broken symbolic link" if not dst.exists() else "a file"
        raise FileExistsError(f"destination {dst} exists and is {what}, not a folder; choose "
                              "another one")
    if not any(dst.iterdir()):
        return
    foreign = foreign_entries(dst)
    if foreign is None:
        held = sorted(p.name for p in dst.iterdir())
        shown = ", ".join(held[:8]) + (f" and {len(held) - 8} more" if len(held) > 8 else "")
        raise FileExistsError(
            f"destination {dst} exists and is not empty, and is not a previous conversion (no "
            f"config.json of model_type 'l2l' with {WEIGHTS_NAME}); it holds {shown}: choose "
            "another one"
        )
    if foreign:
        raise FileExistsError(
            f"destination {dst} holds a previous conversion and files it did not write "
            f"({', '.join(foreign)}); move them away or choose another one"
        )
    if not overwrite:
        raise FileExistsError(
            f"destination {dst} exists and is not empty (a previous conversion); "
            f"{overwrite_hint} to replace it"
        )


def convert_olmo_checkpoint(
    src_dir: str | Path, dst_dir: str | Path, *, overwrite: bool = False
) -> Path:
    """Convert an OLMo-fork run folder into a ``save_pretrained`` folder with identical logits.

    The folder is written next to ``dst_dir`` under a temporary name and renamed into place, so an
    interrupted conversion never leaves a half-written model. ``overwrite`` replaces a previous
    conversion only (``check_destination``): never the source, a folder holding it, a file, or a
    folder with anything the converter did not write. Returns ``dst_dir``.
    """
    check_destination(src_dir, dst_dir, overwrite=overwrite)
    model = load_olmo_checkpoint(src_dir)
    # Work on the resolved path: a symbolic link to the output folder stays a link to it.
    dst = Path(os.path.realpath(dst_dir))
    dst.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not tempfile.mkdtemp, which makes it 0700) so the output gets the umask's mode.
    staging = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:12]}.tmp"
    staging.mkdir()
    try:
        model.save_pretrained(staging)
        # Again: the folder may have changed while the model was loaded and written.
        check_destination(src_dir, dst_dir, overwrite=overwrite)
        if dst.is_dir() and not any(dst.iterdir()):
            dst.rmdir()
        if dst.exists():  # a previous conversion, replaced only once the new one is complete
            old = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:12]}.old"
            dst.rename(old)
            try:
                staging.rename(dst)
            except OSError:
                old.rename(dst)
                raise
            shutil.rmtree(old)
        else:
            try:
                staging.rename(dst)
            except OSError as error:  # another writer finished first
                raise FileExistsError(f"{dst} was written by another process meanwhile") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Path(dst_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_l2l.convert_olmo",
        description="Convert a loss-to-loss OLMo-fork run folder (config.json + model.safetensors) "
        "into a transformers folder loadable with AutoModelForCausalLM.from_pretrained.",
    )
    parser.add_argument("src", help="run folder holding the OLMo config.json and model.safetensors")
    parser.add_argument("dst", help="output folder (must be empty or absent)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous conversion in dst (never any other folder)")
    args = parser.parse_args(argv)
    try:
        # first, with the flag's name, and before seconds of loading the checkpoint
        check_destination(args.src, args.dst, overwrite=args.overwrite,
                          overwrite_hint="pass --overwrite")
        dst = convert_olmo_checkpoint(args.src, args.dst, overwrite=args.overwrite)
    except (OSError, ValueError) as exc:  # each names the file, the folder or the tensors
        parser.exit(2, f"error: {exc}\n")
    from . import L2LConfig

    config = L2LConfig.from_pretrained(dst)
    print(
        f"wrote {dst}: depth {config.num_hidden_layers}, width {config.hidden_size}, "
        f"vocab {config.vocab_size}, context {config.max_position_embeddings}"
    )


if __name__ == "__main__":
    main()
