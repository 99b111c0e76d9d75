"""A saved folder loads without this package (trust_remote_code); activation checkpointing recomputes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import save_file

from modeling_l2l import L2LForCausalLM
from tests.modeling.conftest import tiny_config

# Runs in a fresh interpreter that cannot import modeling_l2l: the package is installed editable,
# so besides -I (no cwd, no PYTHONPATH, no user site) a meta-path finder refuses the name.
BLOCK_THE_PACKAGE = textwrap.dedent(
    """
    import sys

    class RefuseModelingL2L:
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_l2l" or name.startswith("modeling_l2l."):
                raise ImportError("modeling_l2l is blocked in this process")
            return None

    sys.meta_path.insert(0, RefuseModelingL2L())
    try:
        import modeling_l2l  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the package should not be importable here")
    """
)
REMOTE_LOAD_SCRIPT = BLOCK_THE_PACKAGE + textwrap.dedent(
    """

    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    path = sys.argv[1]
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    assert type(config).__name__ == "L2LConfig", type(config)
    assert type(config).__module__.startswith("transformers_modules"), type(config).__module__
    lm = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    assert type(lm).__name__ == "L2LForCausalLM"
    assert type(lm).__module__.startswith("transformers_modules"), type(lm).__module__
    base = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    assert type(base).__name__ == "L2LModel"
    expected = load_file(f"{path}/expected.safetensors")
    with torch.no_grad():
        logits = lm(expected["input_ids"]).logits
        hidden = base(expected["input_ids"]).last_hidden_state
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=0)
    torch.testing.assert_close(hidden, expected["hidden"], rtol=0, atol=0)
    print("REMOTE_OK", sum(p.numel() for p in lm.parameters()))
    """
)


def test_remote_code_load_without_the_package(tmp_path, tiny_model):
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    ids = torch.randint(0, 96, (2, 11))
    with torch.no_grad():
        expected = {
            "input_ids": ids,
            "logits": tiny_model(ids).logits.contiguous(),
            "hidden": tiny_model.model(ids).last_hidden_state.contiguous(),
        }
    save_file(expected, folder / "expected.safetensors")
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_LOAD_SCRIPT)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONSTARTUP"} and not key.startswith("HF_")
    }
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    n_params = sum(p.numel() for p in tiny_model.parameters())
    assert f"REMOTE_OK {n_params}" in result.stdout


def _attention_calls_during_step(model: L2LForCausalLM, ids: torch.Tensor) -> tuple[int, dict]:
    calls = []
    hook = model.model.layers[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    hook.remove()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return len(calls), grads


def test_activation_checkpointing_recomputes_layers():
    torch.manual_seed(0)
    model = L2LForCausalLM(tiny_config()).train()
    ids = torch.randint(0, 96, (2, 16))
    plain_calls, plain_grads = _attention_calls_during_step(model, ids)
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    checkpointed_calls, checkpointed_grads = _attention_calls_during_step(model, ids)
    # once in forward; with checkpointing once more when backward recomputes the block
    assert plain_calls == 1 and checkpointed_calls == 2
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-5, atol=1e-6)
