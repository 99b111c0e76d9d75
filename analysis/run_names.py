"""Names of the paper's released runs: ``L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}``.

Each run of the loss-to-loss sweep is one subfolder of the Hub repository
``KempnerInstituteAI/loss-to-loss``, e.g. ``L2L_starcoder_N1.1e08_D3.0e08_C2.0e17``: the training
corpus, the parameter count N (embeddings included), the training tokens D and the compute C = 6ND,
each with two significant digits and the exponent written without its "+".

Pure Python (no torch import), so analysis code can parse names cheaply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

RUN_NAME_PREFIX = "L2L"

_NUMBER = r"\d+(?:\.\d+)?e[+-]?\d+"
_RUN_NAME = re.compile(
    rf"^{RUN_NAME_PREFIX}_(?P<dataset>.+)_N(?P<N>{_NUMBER})_D(?P<D>{_NUMBER})_C(?P<C>{_NUMBER})$"
)


@dataclass(frozen=True)
class RunName:
    """One run of the sweep: its training corpus, N parameters, D tokens and C FLOPs."""

    dataset: str
    N: float
    D: float
    C: float

    def __str__(self) -> str:
        return format_run_name(self.dataset, self.N, self.D, self.C)


def _format_number(value: float, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"run name: {name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"run name: {name} must be positive and finite, got {value!r}")
    return f"{value:.1e}".replace("e+", "e")


def format_run_name(dataset: str, N: float, D: float, C: float) -> str:
    """``L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}`` with the exponent's "+" dropped.

    >>> format_run_name("starcoder", 1.1e8, 3.0e8, 2.0e17)
    'L2L_starcoder_N1.1e08_D3.0e08_C2.0e17'
    """
    if not isinstance(dataset, str) or not dataset or "/" in dataset or dataset != dataset.strip():
        raise ValueError(f"run name: dataset must be a non-empty name without '/', got {dataset!r}")
    n, d, c = _format_number(N, "N"), _format_number(D, "D"), _format_number(C, "C")
    return f"{RUN_NAME_PREFIX}_{dataset}_N{n}_D{d}_C{c}"


def parse_run_name(name: str) -> RunName:
    """Inverse of ``format_run_name``; dataset names may contain '-' and '_'.

    N, D and C come back as the rounded values written in the name (two significant digits).
    >>> parse_run_name("L2L_fineweb-edu-100b_N5.8e07_D5.8e08_C2.0e17").dataset
    'fineweb-edu-100b'
    """
    match = _RUN_NAME.match(name.strip().strip("/")) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"not a loss-to-loss run name: {name!r}; expected "
            "'L2L_{dataset}_N{N:.1e}_D{D:.1e}_C{C:.1e}', e.g. 'L2L_starcoder_N1.1e08_D3.0e08_C2.0e17'"
        )
    return RunName(
        dataset=match["dataset"], N=float(match["N"]), D=float(match["D"]), C=float(match["C"])
    )


__all__ = ["RUN_NAME_PREFIX", "RunName", "format_run_name", "parse_run_name"]
