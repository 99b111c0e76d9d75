"""The fields of a saved law's ``config.json`` and ``bootstrap.csv``, checked as they are read:
each converter takes a JSON value and returns the field's value or raises ``TypeError`` /
``ValueError`` saying what was expected (``Law.from_dict`` names the field). Nothing here is
evaluated or unpickled: strict JSON and a CSV of floats.
"""

from __future__ import annotations

import csv
import json

import numpy as np


def read_config(path: str, where: str) -> dict:
    """The JSON object in ``path``; a ValueError beginning with ``where`` otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{where} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"{where} holds a JSON {json_kind(config)}, not an object: not a saved law"
        )
    return config


def json_kind(value) -> str:
    """What a JSON value is, in JSON's words."""
    kinds = ((dict, "object"), (list, "list"), (str, "string"), (bool, "boolean"))
    kinds += ((int | float, "number"), (type(None), "null"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_object(value) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"a JSON object is needed, not a {json_kind(value)}")
    return value


def as_mapping(convert):
    def mapping(value) -> dict:
        out = {}
        for key, item in as_object(value).items():
            try:
                out[str(key)] = convert(item)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{key!r}: {error}") from None
        return out

    return mapping


def as_finite(value) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"a finite number is needed, got {value!r}")
    return number


def as_bound(value) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise TypeError(f"a [low, high] pair is needed, got {short(value)}")
    return float(value[0]), float(value[1])


def as_strings(value) -> tuple[str, ...]:
    # tuple("alpha") would be five one-letter names
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("a list of strings is needed")
    return tuple(value)


def as_integer(value) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError("a whole number is needed")
    return int(value)


def as_boolean(value) -> bool:
    if not isinstance(value, bool):  # bool("false") is True
        raise TypeError("true or false is needed")
    return value


def strict_json(value):
    """``value`` with every non-finite float replaced by its JSON-safe string."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return "NaN" if np.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def read_samples(path: str, params: tuple[str, ...]) -> np.ndarray:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != tuple(params):
        raise ValueError(f"{path}: bootstrap samples header {rows[:1]} does not match {params}")
    if len(rows) < 2:  # an interval of no resamples would be NaN
        raise ValueError(f"{path}: no bootstrap samples below the header")
    try:
        values = [[float(v) for v in row] for row in rows[1:]]
        return np.array(values, dtype=float).reshape(-1, len(params))
    except ValueError as error:
        raise ValueError(f"{path}: malformed bootstrap samples ({error})") from None
