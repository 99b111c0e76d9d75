"""The loss-to-loss decoder as a Hub-native transformers model.

Importing this package registers ``model_type="l2l"`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM``, and marks the classes for ``register_for_auto_class`` so that
``save_pretrained`` writes the code and ``auto_map`` beside the weights: a user without this
package loads the folder with ``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``.

One exception, and why: ``python -m modeling_l2l.convert_olmo --help`` must answer at once, but
Python imports this package before it runs any module of it, and the registration needs the model
classes, hence torch and transformers (seconds on a small machine). So while Python is only
locating one of this package's modules to run it (``_located_for_a_command``), nothing is
imported or registered here: the model attributes below load, and the Auto classes register, on
first use (``__getattr__``), which the command reaches only when it has work to do. Every other
import (``import modeling_l2l``, ``from modeling_l2l import ...``) registers at once, as above.
"""

import importlib
import sys

from analysis.run_names import RunName, format_run_name, parse_run_name  # pure Python


def _located_for_a_command() -> bool:
    """True while Python imports this package only to find one of its modules to run with
    ``python -m modeling_l2l.MODULE``: ``sys.argv[0]`` is ``"-m"`` while the module is located
    (documented for ``-m``) and ``sys.orig_argv`` names it. The command imports the model itself
    when it has work, so its ``--help`` and argument errors need neither torch nor transformers
    (seconds on a small machine)."""
    argv = getattr(sys, "orig_argv", [])
    if sys.argv[:1] != ["-m"] or "-m" not in argv[:-1]:
        return False
    return argv[argv.index("-m") + 1].startswith(__name__ + ".")


_MODEL_ATTRIBUTES = {
    "AUTO_MAP": ".configuration_l2l",
    "PAPER_DEPTHS": ".configuration_l2l",
    "L2LConfig": ".configuration_l2l",
    "PEAK_FLOPS_BY_DEVICE": ".modeling_l2l",
    "L2LForCausalLM": ".modeling_l2l",
    "L2LModel": ".modeling_l2l",
    "L2LPreTrainedModel": ".modeling_l2l",
    "peak_flops_for_device": ".modeling_l2l",
}


def _register_auto_classes() -> None:
    """Register ``model_type="l2l"`` with the Auto classes and mark the classes for
    ``register_for_auto_class`` (``save_pretrained`` then writes the code and ``auto_map``)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .configuration_l2l import L2LConfig
    from .modeling_l2l import L2LForCausalLM, L2LModel

    AutoConfig.register(L2LConfig.model_type, L2LConfig, exist_ok=True)
    AutoModel.register(L2LConfig, L2LModel, exist_ok=True)
    AutoModelForCausalLM.register(L2LConfig, L2LForCausalLM, exist_ok=True)
    L2LConfig.register_for_auto_class("AutoConfig")
    L2LModel.register_for_auto_class("AutoModel")
    L2LForCausalLM.register_for_auto_class("AutoModelForCausalLM")



if not _located_for_a_command():
    from .configuration_l2l import AUTO_MAP, PAPER_DEPTHS, L2LConfig
    from .modeling_l2l import (
        PEAK_FLOPS_BY_DEVICE,
        L2LForCausalLM,
        L2LModel,
        L2LPreTrainedModel,
        peak_flops_for_device,
    )

    _register_auto_classes()

# Loaded on first use: they are not needed to build a model, and a module run with `python -m`
# must not be imported by its package first.
_LAZY_ATTRIBUTES = {
    "paper_param_count": "analysis.sizes",  # the closed form, torch-free (analysis.sizes)
    "convert_olmo_checkpoint": ".convert_olmo",
    "L2L_HUB_REPO": ".hub",
    "download_run": ".hub",
    "load_l2l_run": ".hub",
    "prepare_l2l_run": ".hub",
    "LLAMA2_TOKENIZER": ".tokenizer",
    "load_tokenizer": ".tokenizer",
    "train_offline_tokenizer": ".tokenizer",
    "resolve_run": ".hub",
}


def __getattr__(name: str):
    if name in _MODEL_ATTRIBUTES:  # only reached when a command located the package lazily
        value = getattr(importlib.import_module(_MODEL_ATTRIBUTES[name], __name__), name)
        _register_auto_classes()
        globals()[name] = value
        return value
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUTO_MAP",
    "L2L_HUB_REPO",
    "LLAMA2_TOKENIZER",
    "PAPER_DEPTHS",
    "PEAK_FLOPS_BY_DEVICE",
    "L2LConfig",
    "L2LForCausalLM",
    "L2LModel",
    "L2LPreTrainedModel",
    "RunName",
    "convert_olmo_checkpoint",
    "download_run",
    "load_l2l_run",
    "load_tokenizer",
    "format_run_name",
    "paper_param_count",
    "parse_run_name",
    "prepare_l2l_run",
    "peak_flops_for_device",
    "resolve_run",
    "train_offline_tokenizer",
]
