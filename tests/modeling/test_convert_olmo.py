"""OLMo-fork checkpoints convert to a from_pretrained folder with the paper's logits, or refuse."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from modeling_l2l import L2LForCausalLM, convert_olmo_checkpoint
from modeling_l2l.convert_olmo import OlmoCheckpointError, main
from tests.modeling.olmo_checkpoint import (
    olmo_model_config,
    random_olmo_tensors,
    reference_forward,
    write_olmo_checkpoint,
)


def assert_converted(dst, config: dict, tensors: dict) -> None:
    """``dst`` is the conversion of an OLMo checkpoint: its config.json states the architecture of
    ``config``, every tensor of the checkpoint is in model.safetensors under transformers' name,
    bit for bit, and the loaded model's logits are the independent forward's."""
    saved = json.loads((dst / "config.json").read_text())
    d, layers = config["d_model"], config["n_layers"]
    expected = {
        "model_type": "l2l", "architectures": ["L2LForCausalLM"], "hidden_size": d,
        "num_hidden_layers": layers, "num_attention_heads": config["n_heads"],
        "head_dim": d // config["n_heads"], "intermediate_size": config["mlp_ratio"] * d,
        "vocab_size": config["vocab_size"], "max_position_embeddings": config["max_sequence_length"],
        "rope_theta": float(config["rope_theta"]), "layer_norm_eps": config["layer_norm_eps"],
        "hidden_act": "gelu", "tie_word_embeddings": False,
        "eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"],
    }
    assert {key: saved.get(key) for key in expected} == expected
    assert set(saved["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}

    renamed = {"model.embed_tokens.weight": "transformer.wte.weight",
               "model.norm.weight": "transformer.ln_f.weight",
               "lm_head.weight": "transformer.ff_out_last.weight"}
    for i in range(layers):
        ours, theirs = f"model.layers.{i}.", f"transformer.blocks.{i}."
        renamed.update({
            ours + "input_layernorm.weight": theirs + "attn_norm.weight",
            ours + "self_attn.q_norm.weight": theirs + "q_norm.weight",
            ours + "self_attn.k_norm.weight": theirs + "k_norm.weight",
            ours + "self_attn.o_proj.weight": theirs + "attn_out.weight",
            ours + "post_attention_layernorm.weight": theirs + "ff_norm.weight",
            ours + "mlp.up_proj.weight": theirs + "ff_proj.weight",
            ours + "mlp.down_proj.weight": theirs + "ff_out.weight",
        })
    weights = load_file(dst / "model.safetensors")
    expected_weights = {ours: tensors[theirs] for ours, theirs in renamed.items()}
    for i in range(layers):  # the fused q | k | v rows, split
        fused = tensors[f"transformer.blocks.{i}.att_proj.weight"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            expected_weights[f"model.layers.{i}.self_attn.{name}.weight"] = fused[j * d:(j + 1) * d]
    assert set(weights) == set(expected_weights)
    for name, tensor in expected_weights.items():
        assert torch.equal(weights[name], tensor), name

    model = AutoModelForCausalLM.from_pretrained(dst).eval()
    assert isinstance(model, L2LForCausalLM)
    context = config["max_sequence_length"]
    ids = torch.randint(0, config["vocab_size"], (2, context),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
    torch.testing.assert_close(logits.double(), reference_forward(tensors, config, ids),
                               rtol=1e-5, atol=2e-5)


def test_converted_logits_match_independent_forward(tmp_path):
    config = olmo_model_config(d_model=128, n_heads=2, n_layers=3)
    tensors = random_olmo_tensors(config, seed=1)
    src = write_olmo_checkpoint(tmp_path / "olmo", config, tensors)
    assert_converted(convert_olmo_checkpoint(src, tmp_path / "hf"), config, tensors)


def test_command_line(tmp_path, capsys):
    src = write_olmo_checkpoint(tmp_path / "olmo")
    main([str(src), str(tmp_path / "hf")])
    assert "depth 2, width 128" in capsys.readouterr().out
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    # errors are one line naming the CLI flag or the file, not a traceback
    with pytest.raises(SystemExit) as exit_info:
        main([str(src), str(tmp_path / "hf")])
    assert exit_info.value.code == 2
    assert "(a previous conversion); pass --overwrite to replace it" in capsys.readouterr().err
    main([str(src), str(tmp_path / "hf"), "--overwrite"])
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere"), str(tmp_path / "other")])
    assert "nowhere" in capsys.readouterr().err


def test_upstream_head_name_is_accepted(tmp_path):
    tensors = random_olmo_tensors(olmo_model_config())
    tensors["transformer.ff_out.weight"] = tensors.pop("transformer.ff_out_last.weight")
    src = write_olmo_checkpoint(tmp_path / "olmo", tensors=tensors)
    model = L2LForCausalLM.from_pretrained(convert_olmo_checkpoint(src, tmp_path / "hf"))
    assert torch.equal(model.lm_head.weight, tensors["transformer.ff_out.weight"])


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
    tensors = random_olmo_tensors(olmo_model_config())
    del tensors["transformer.blocks.1.k_norm.weight"]
    tensors["transformer.blocks.0.att_proj.bias"] = torch.zeros(384)
    src = write_olmo_checkpoint(tmp_path / "olmo", tensors=tensors)
    with pytest.raises(OlmoCheckpointError) as error:
        convert_olmo_checkpoint(src, tmp_path / "hf")
    message = str(error.value)
    assert "1 missing" in message and "transformer.blocks.1.k_norm.weight" in message
    assert "1 unexpected" in message and "transformer.blocks.0.att_proj.bias" in message
    assert not (tmp_path / "hf").exists()


def test_wrong_shape_is_listed(tmp_path):
    tensors = random_olmo_tensors(olmo_model_config())
    tensors["transformer.blocks.0.ff_proj.weight"] = torch.zeros(256, 128)
    src = write_olmo_checkpoint(tmp_path / "olmo", tensors=tensors)
    with pytest.raises(
        OlmoCheckpointError, match=r"ff_proj.weight: \(256, 128\) \(expected \(512, 128\)\)"
    ):
        convert_olmo_checkpoint(src, tmp_path / "hf")


def test_unsupported_config_lists_every_problem(tmp_path):
    config = olmo_model_config(
        activation_type="swiglu", rope=False, weight_tying=True, include_bias=1
    )
    src = write_olmo_checkpoint(tmp_path / "olmo", config, random_olmo_tensors(olmo_model_config()))
    with pytest.raises(OlmoCheckpointError) as error:
        convert_olmo_checkpoint(src, tmp_path / "hf")
    message = str(error.value)
    for field in ("activation_type='swiglu'", "rope=False", "weight_tying=True", "include_bias=1"):
        assert field in message


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(d_model="128"), "d_model must be a positive int"),
        (dict(n_heads=3), "n_heads=3 does not divide d_model=128"),
        (dict(n_kv_heads=1), "grouped-query"),
        (dict(layer_norm_type="rms"), "layer_norm_type='rms'"),
        (dict(rope_theta="10000"), "rope_theta must be a positive number"),
    ],
)
def test_bad_config_fields(tmp_path, changes, match):
    src = write_olmo_checkpoint(
        tmp_path / "olmo", olmo_model_config(**changes), random_olmo_tensors(olmo_model_config())
    )
    with pytest.raises(OlmoCheckpointError, match=match):
        convert_olmo_checkpoint(src, tmp_path / "hf")


def test_missing_or_corrupt_files(tmp_path):
    src = write_olmo_checkpoint(tmp_path / "olmo")
    (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(OlmoCheckpointError, match="cannot read"):
        convert_olmo_checkpoint(src, tmp_path / "hf")
    (src / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        convert_olmo_checkpoint(src, tmp_path / "hf")
    (src / "config.json").write_text("{")
    save_file({"x": torch.zeros(1)}, src / "model.safetensors")
    with pytest.raises(OlmoCheckpointError, match="not valid JSON"):
        convert_olmo_checkpoint(src, tmp_path / "hf")


def test_full_train_config_is_accepted(tmp_path):
    """A run folder may hold the whole OLMo TrainConfig, with the model under "model"; its fields
    (here not the defaults) are the ones converted. The test only checked that config.json was
    written."""
    model_config = olmo_model_config(n_layers=3, context=48, rope_theta=500000,
                                     layer_norm_eps=1e-6, eos_token_id=1, pad_token_id=3)
    tensors = random_olmo_tensors(model_config, seed=3)
    config = {"run_name": "x", "seed": 6198, "model": model_config}
    src = write_olmo_checkpoint(tmp_path / "olmo", config, tensors)
    assert_converted(convert_olmo_checkpoint(src, tmp_path / "hf"), model_config, tensors)


def _snapshot(folder):
    """Every file under ``folder`` with its bytes: what a refused command must leave untouched."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_destination_that_is_or_contains_the_source_is_refused(tmp_path, capsys):
    """--overwrite with DST = SRC replaced the source by its conversion; with DST = SRC's parent
    it deleted the parent, the source and the other results in it."""
    parent = tmp_path / "results"
    src = write_olmo_checkpoint(parent / "olmo")
    (parent / "other_run.csv").write_text("keep me\n")
    (tmp_path / "link_to_parent").symlink_to(parent)
    (tmp_path / "link_to_src").symlink_to(src)
    before = _snapshot(parent)
    for dst, words in ((src, "is the source folder"), (parent, "contains the source folder"),
                       (tmp_path / "link_to_src", "is the source folder"),
                       (tmp_path / "link_to_parent", "contains the source folder"),
                       (tmp_path, "contains the source folder")):
        for flags in ([], ["--overwrite"]):
            assert words in _refused(capsys, [str(src), str(dst), *flags])
        with pytest.raises(FileExistsError, match=words):
            convert_olmo_checkpoint(src, dst, overwrite=True)
    assert _snapshot(parent) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "link_to_parent", "link_to_src", "results"]


def test_destination_file_is_a_one_line_error_and_untouched(tmp_path, capsys):
    """It was a NotADirectoryError traceback."""
    src = write_olmo_checkpoint(tmp_path / "olmo")
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    for flags in ([], ["--overwrite"]):
        assert "notes.txt exists and is a file, not a folder" in _refused(
            capsys, [str(src), str(target), *flags])
    assert target.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "olmo"]


def test_overwrite_replaces_only_a_previous_conversion(tmp_path, capsys):
    src = write_olmo_checkpoint(tmp_path / "olmo", tensors=random_olmo_tensors(
        olmo_model_config(), seed=1))
    # a folder of other things: refused even with --overwrite, and what it holds is named
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "llama"}')
    (other / "model.safetensors").write_bytes(b"not ours")
    err = _refused(capsys, [str(src), str(other), "--overwrite"])
    assert "is not a previous conversion" in err and "config.json, model.safetensors" in err
    assert (other / "model.safetensors").read_bytes() == b"not ours"

    dst = tmp_path / "hf"
    main([str(src), str(dst)])
    capsys.readouterr()
    # what the user put into a converted folder is not the converter's to delete
    (dst / "tokenizer.json").write_text("{}")
    err = _refused(capsys, [str(src), str(dst), "--overwrite"])
    assert "files it did not write (tokenizer.json)" in err
    (dst / "tokenizer.json").unlink()

    first = L2LForCausalLM.from_pretrained(dst).lm_head.weight.clone()
    newer = write_olmo_checkpoint(tmp_path / "olmo2", tensors=random_olmo_tensors(
        olmo_model_config(), seed=2))
    main([str(newer), str(dst), "--overwrite"])
    replaced = L2LForCausalLM.from_pretrained(dst).lm_head.weight
    assert torch.equal(replaced, random_olmo_tensors(olmo_model_config(), seed=2)[
        "transformer.ff_out_last.weight"])
    assert not torch.equal(replaced, first)
    # no staging or replaced folder is left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "olmo", "olmo2", "other"]


def test_output_folder_has_the_umask_mode(tmp_path):
    """tempfile.mkdtemp made the converted folder 0700: unreadable to the rest of a group."""
    src = write_olmo_checkpoint(tmp_path / "olmo")
    umask = os.umask(0o022)
    try:
        dst = convert_olmo_checkpoint(src, tmp_path / "hf")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o755


def test_converted_or_misplaced_source_is_named(tmp_path, capsys):
    src = write_olmo_checkpoint(tmp_path / "olmo")
    dst = convert_olmo_checkpoint(src, tmp_path / "hf")
    capsys.readouterr()  # save_pretrained's progress bar
    # it listed every OLMo field a transformers config lacks
    assert "already a converted" in _refused(capsys, [str(dst), str(tmp_path / "again")])
    (tmp_path / "file").write_text("x")
    assert "is a file, not a run folder" in _refused(
        capsys, [str(tmp_path / "file"), str(tmp_path / "out")])


def test_module_needs_no_torch_for_help_or_a_refused_destination(tmp_path):
    """The package __init__ imports torch to register the Auto classes; this module itself must
    not, so that `--help` and argument errors are instant once the package allows it."""
    import modeling_l2l.convert_olmo as convert

    src = write_olmo_checkpoint(tmp_path / "olmo")
    (tmp_path / "file").write_text("x")
    code = (
        "import sys, types\n"
        "package = types.ModuleType('modeling_l2l')\n"  # the package without its __init__
        f"package.__path__ = [{os.path.dirname(convert.__file__)!r}]\n"
        "sys.modules['modeling_l2l'] = package\n"
        "sys.modules['torch'] = sys.modules['transformers'] = sys.modules['safetensors'] = None\n"
        "from modeling_l2l.convert_olmo import main\n"
        "for argv in (['--help'], [sys.argv[1], sys.argv[2]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        print('exit', exit.code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "file")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["exit 0", "exit 2"], out.stdout
    assert "is a file, not a folder" in out.stderr
