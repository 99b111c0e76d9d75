"""Names of a package that import their module on first use (PEP 562), so that importing the
package, or a light module of it, stays cheap: ``analysis`` (scipy, huggingface_hub behind its
API), ``training`` (its configs read by ``l2l --help``) and ``l2l.release`` (the Hub client)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_names(package: str, names: Mapping[str, str]) -> tuple[Callable, Callable]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` for ``names`` (name -> the
    module that defines it, absolute or relative to the package). A name, once imported, is bound
    in the package, so its module is looked up once."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
