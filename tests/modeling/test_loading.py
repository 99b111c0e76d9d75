"""Loading refuses what would give a wrong or unsafe model (pickles, configs that do not match the
weights) and follows transformers elsewhere: unknown config keys are kept, a misspelt field is
named in a warning, a base checkpoint loads into the causal LM and the reverse; out-of-vocabulary
ids are a clear error."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as transformers_logging

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


def test_a_misspelt_field_in_config_json_is_kept_and_named_in_a_warning(saved, monkeypatch):
    """It was an error, but transformers' configs keep keys they do not know and its tools set
    them (its test harness sets `layer_norm_epsilon` on every config): what they save must load.
    The key changes nothing, so the warning names the field that was meant."""
    messages = []
    monkeypatch.setattr(configuration.logger, "warning", messages.append)
    _edit_config(saved, num_hiden_layers=3)
    for loader in (AutoConfig, L2LForCausalLM):
        loaded = loader.from_pretrained(saved)
        config = loaded if loader is AutoConfig else loaded.config
        assert config.num_hiden_layers == 3 and config.num_hidden_layers == 2
        assert any("'num_hiden_layers' (did you mean 'num_hidden_layers'?) is not a field" in m
                   for m in messages), messages
        messages.clear()
    config = L2LConfig(hiden_size=64)
    assert config.hiden_size == 64 and config.hidden_size == 256
    assert "'hiden_size' (did you mean 'hidden_size'?)" in messages[0]


def test_what_transformers_test_harness_writes_loads(saved, monkeypatch):
    """transformers.testing_utils.set_config_for_less_flaky_test sets every model family's
    epsilon name on the config; saved and loaded again, L2LConfig refused `layer_norm_epsilon`."""
    from transformers.testing_utils import set_config_for_less_flaky_test

    messages = []
    monkeypatch.setattr(configuration.logger, "warning", messages.append)
    model = L2LForCausalLM.from_pretrained(saved)
    set_config_for_less_flaky_test(model.config)
    model.save_pretrained(saved / "again")
    config = L2LForCausalLM.from_pretrained(saved / "again").config
    assert config.layer_norm_eps == 1.0 and config.layer_norm_epsilon == 1.0
    assert any("'layer_norm_epsilon' (did you mean 'layer_norm_eps'?)" in m for m in messages)


def test_a_config_with_more_layers_than_the_weights_is_an_error(saved):
    _edit_config(saved, num_hidden_layers=3)
    with pytest.raises(ValueError, match=r"10 parameter\(s\) of the model are not in the checkpoint "
                       r"\(model\.layers\.2\..*num_hidden_layers=3"):
        AutoModelForCausalLM.from_pretrained(saved)


def test_a_config_with_fewer_layers_than_the_weights_is_an_error(saved):
    _edit_config(saved, num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"10 tensor\(s\) of the checkpoint have no place"):
        L2LForCausalLM.from_pretrained(saved)


def test_a_checkpoint_matching_no_parameter_is_an_error(saved):
    save_file({"tensor": torch.tensor([1, 2])}, saved / "model.safetensors",
              metadata={"format": "pt"})
    for loader in (L2LForCausalLM, L2LModel):
        for info in (False, True):
            with pytest.raises(ValueError, match=r"none of the checkpoint's tensors is a parameter "
                               r"of this model \(it holds tensor\).*l2l convert"):
                loader.from_pretrained(saved, output_loading_info=info)


def test_a_config_of_another_width_is_an_error(saved):
    _edit_config(saved, hidden_size=64, num_attention_heads=1, head_dim=64,
                 intermediate_size=256)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        L2LForCausalLM.from_pretrained(saved)


def _load_report():
    """What transformers' loader logs (its load report), whether or not its logs propagate."""
    return CaptureLogger(transformers_logging.get_logger("transformers.modeling_utils"))


def test_a_base_checkpoint_loads_into_the_causal_lm_with_a_new_head(tmp_path, saved, tiny_model):
    """transformers' contract (base_model_prefix): a base model's weights load into the head
    model, the head is initialised, and the report says so (a warning and the loading info).
    It was an error."""
    tiny_model.model.save_pretrained(tmp_path / "base")
    with _load_report() as report:
        model, info = L2LForCausalLM.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["missing_keys"] == {"lm_head.weight"} and not info["unexpected_keys"]
    assert "lm_head.weight" in report.out and "MISSING" in report.out
    for name, tensor in tiny_model.model.state_dict().items():
        assert torch.equal(model.model.state_dict()[name], tensor), name
    # the new head is the model's own init (std 1/sqrt(d)), not zeros or the old head
    assert not torch.equal(model.lm_head.weight, tiny_model.lm_head.weight)
    assert model.lm_head.weight.std().item() == pytest.approx(128**-0.5, rel=0.1)
    L2LForCausalLM.from_pretrained(tmp_path / "base")  # without the info too


def test_a_causal_lm_checkpoint_loads_into_the_base_model(saved, tiny_model):
    with _load_report() as report:
        base, info = L2LModel.from_pretrained(saved, output_loading_info=True)
    assert info["unexpected_keys"] == {"lm_head.weight"} and not info["missing_keys"]
    assert "lm_head.weight" in report.out and "UNEXPECTED" in report.out
    ids = torch.randint(0, 96, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(base(ids).last_hidden_state,
                                   tiny_model.model(ids).last_hidden_state, rtol=0, atol=0)


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
