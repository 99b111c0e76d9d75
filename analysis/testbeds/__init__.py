"""The papers' released data, each read from its published format into one tidy table.

>>> from analysis.testbeds import load_testbed, wide
>>> table = load_testbed("l2l", "../shared/data/l2l")      # or no path: the study's repository
>>> sweep = wide(table, ["val_loss"])                      # one row per run, one column per metric
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pandas as pd

from analysis.results_table import wide
from analysis.testbeds.chinchilla import load_chinchilla
from analysis.testbeds.gadre import load_gadre
from analysis.testbeds.l2l import load_l2l
from analysis.testbeds.ladder import load_ladder
from analysis.testbeds.sources import GitHubFolder, LocalFolder, TestbedUnavailableError
from analysis.testbeds.table import TIDY_COLUMNS, validate_tidy

LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "l2l": load_l2l,
    "gadre": load_gadre,
    "ladder": load_ladder,
    "chinchilla": load_chinchilla,
}


def load_testbed(name: str, source: str | os.PathLike | LocalFolder | GitHubFolder | None = None):
    """The tidy table of testbed ``name`` (one of ``LOADERS``) from ``source`` (a local folder, a
    file, a ``GitHubFolder``, or ``None`` for the study's own repository)."""
    if name not in LOADERS:
        raise ValueError(f"unknown testbed {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](source)


__all__ = [
    "LOADERS",
    "TIDY_COLUMNS",
    "GitHubFolder",
    "LocalFolder",
    "TestbedUnavailableError",
    "load_chinchilla",
    "load_gadre",
    "load_ladder",
    "load_l2l",
    "load_testbed",
    "validate_tidy",
    "wide",
]
