"""Loading refuses what would give a wrong or unsafe model: pickles, misspelt config fields,
configs that do not match the weights; out-of-vocabulary ids are a clear error."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

import modeling_l2l.configuration_l2l as configuration
from modeling_l2l import L2LConfig, L2LForCausalLM, L2LModel
from tests.modeling.conftest import tiny_config


@pytest.fixture
def saved(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)


def test_a_folder_holding_only_a_pickle_is_refused_unread(saved, no_unpickling):
    state = load_file(saved / "model.safetensors")
    (saved / "model.safetensors").unlink()
    torch.save(state, saved / "pytorch_model.bin")
    for loader in (L2LForCausalLM, AutoModelForCausalLM):
        with pytest.raises(OSError, match="no safetensors weights.*safetensors only"):
            loader.from_pretrained(saved)
    with pytest.raises(ValueError, match="not a .safetensors file"):
        L2LForCausalLM.from_pretrained(saved / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors only"):
        L2LForCausalLM.from_pretrained(saved, use_safetensors=False)


def test_a_misspelt_field_in_config_json_is_refused_by_name(saved):
    _edit_config(saved, num_hiden_layers=3)
    for loader in (AutoConfig, L2LForCausalLM):
        with pytest.raises(ValueError, match="'num_hiden_layers' .did you mean 'num_hidden_layers'"):
            loader.from_pretrained(saved)
    with pytest.raises(ValueError, match="did you mean 'hidden_size'"):
        L2LConfig(hiden_size=64)


def test_other_unknown_keys_are_kept_and_named_in_a_warning(monkeypatch):
    messages = []
    monkeypatch.setattr(configuration.logger, "warning", messages.append)
    config = L2LConfig(study_note="ladder rung 3")
    assert config.study_note == "ladder rung 3"
    assert messages and "'study_note'" in messages[0]
    # what transformers itself writes and reads back never warns
    messages.clear()
    L2LConfig.from_dict(tiny_config().to_dict())
    assert messages == []


def test_a_config_with_more_layers_than_the_weights_is_an_error(saved):
    _edit_config(saved, num_hidden_layers=3)
    with pytest.raises(ValueError, match=r"10 parameter\(s\) of the model are not in the checkpoint "
                       r"\(model\.layers\.2\..*num_hidden_layers=3"):
        AutoModelForCausalLM.from_pretrained(saved)


def test_a_config_with_fewer_layers_than_the_weights_is_an_error(saved):
    _edit_config(saved, num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"10 tensor\(s\) of the checkpoint have no place"):
        L2LForCausalLM.from_pretrained(saved)


def test_the_headless_model_loads_from_a_causal_lm_but_not_the_reverse(tmp_path, saved):
    base = L2LModel.from_pretrained(saved)  # the head is simply not needed
    base.save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match=r"not in the checkpoint \(lm_head\.weight\)"):
        L2LForCausalLM.from_pretrained(tmp_path / "base")


def test_loading_info_is_still_returned_on_request(saved, tiny_model):
    model, info = L2LForCausalLM.from_pretrained(saved, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    ids = torch.randint(0, 96, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [96, 1000, -1])
def test_ids_outside_the_vocabulary_are_a_clear_error(tiny_model, bad):
    ids = torch.tensor([[1, 2, bad, 3]])
    with pytest.raises(ValueError, match=rf"input ids {bad} are outside the vocabulary "
                       r"\(vocab_size=96: ids 0 to 95\)"):
        tiny_model(ids)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny_model.generate(ids, max_new_tokens=2, pad_token_id=0)


def test_many_bad_ids_are_summarised():
    model = L2LForCausalLM(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"input ids 100, 101, 102, 103, 104 and 3 more"):
        model(torch.arange(100, 108)[None])


def test_loading_does_not_kernelize_unless_asked(saved):
    """transformers 5.25 kernelizes every model it loads unless told not to, which needs the
    `kernels` package (absent: every load failed) and runs Hub code for layers that name a
    kernel. Ours name none: loading leaves kernels off, and an explicit request goes through."""
    model = AutoModelForCausalLM.from_pretrained(saved)
    assert model.use_kernels is False
    if importlib.util.find_spec("kernels") is None:
        with pytest.raises(ValueError, match="[Kk]ernels"):
            L2LForCausalLM.from_pretrained(saved, use_kernels=True)
