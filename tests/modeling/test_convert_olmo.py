"""OLMo-fork checkpoints convert to a from_pretrained folder with the paper's logits, or refuse."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from modeling_l2l import L2LForCausalLM, convert_olmo_checkpoint
from modeling_l2l.convert_olmo import OlmoCheckpointError, main
from tests.modeling.olmo_checkpoint import (
    olmo_model_config,
    random_olmo_tensors,
    reference_forward,
    write_olmo_checkpoint,
)


def test_converted_logits_match_independent_forward(tmp_path):
    config = olmo_model_config(d_model=128, n_heads=2, n_layers=3)
    tensors = random_olmo_tensors(config, seed=1)
    src = write_olmo_checkpoint(tmp_path / "olmo", config, tensors)
    dst = convert_olmo_checkpoint(src, tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(dst).eval()
    assert isinstance(model, L2LForCausalLM)
    assert model.config.max_position_embeddings == 32 and model.config.eos_token_id == 2
    ids = torch.randint(0, 96, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
    expected = reference_forward(tensors, config, ids)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=2e-5)
    # the head and the split projections are copies of the checkpoint's tensors, bit for bit
    assert torch.equal(model.lm_head.weight, tensors["transformer.ff_out_last.weight"])
    att_proj = tensors["transformer.blocks.2.att_proj.weight"]
    assert torch.equal(model.model.layers[2].self_attn.v_proj.weight, att_proj[256:])


def test_command_line(tmp_path, capsys):
    src = write_olmo_checkpoint(tmp_path / "olmo")
    main([str(src), str(tmp_path / "hf")])
    assert "depth 2, width 128" in capsys.readouterr().out
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    # errors are one line naming the CLI flag or the file, not a traceback
    with pytest.raises(SystemExit) as exit_info:
        main([str(src), str(tmp_path / "hf")])
    assert exit_info.value.code == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
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
    # a run folder may hold the whole OLMo TrainConfig, with the model under "model"
    config = {"run_name": "x", "model": olmo_model_config()}
    src = write_olmo_checkpoint(tmp_path / "olmo", config, random_olmo_tensors(olmo_model_config()))
    assert (convert_olmo_checkpoint(src, tmp_path / "hf") / "config.json").is_file()
