"""Typed dataclass configs, read from and written to plain data (YAML): one mechanism for every
config of the package (``training.config.TrainingConfig``, ``l2l.spec.StudySpec``).

A config is a tree of dataclasses whose fields carry type annotations. ``from_plain(cls, data)``
builds one from nested dicts and lists, checking every value against its annotation (an int
where a float is expected is converted, a list becomes a tuple, ``"1e-3"`` a number) and naming
the field of the first problem: an unknown key with the closest known one, a wrong type, a
missing required field. ``set_dotted`` applies one ``section.field=value`` override from the
command line (YAML scalars, never ``eval``); ``to_plain`` turns a config back into plain data.
Supported annotations: bool, int, float, str, ``Literal`` of strings, ``X | None``, lists and
tuples (of any of these, or of dataclasses), ``dict[str, X]``, ``Any``, nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value is invalid; the message starts with the dotted field name."""


def from_plain(cls: type, data: Any, prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from a mapping; ``prefix`` names where it sits."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise _unknown(str(key), sorted(hints), prefix)
        kwargs[key] = coerce(value, hints[key], f"{prefix}{key}")
    required = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        raise ConfigError(f"{prefix}{required[0]}: missing (required)")
    return cls(**kwargs)


def to_plain(value: Any) -> Any:
    """Plain data (dicts, lists, scalars) of a config or any part of it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def get_dotted(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def set_dotted(cfg: Any, dotted: str, raw: str) -> None:
    """Apply ``dotted=raw`` (a command-line override) to ``cfg`` in place, type-checked."""
    parts = dotted.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        hints = _hints(type(obj))
        where = ".".join(parts[:i]) + ("." if i else "")
        if part not in hints:
            raise _unknown(part, sorted(hints), where)
        tp = hints[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                raise ConfigError(f"{dotted}: is a section; set one of its fields ({dotted}.x=...)")
            setattr(obj, part, coerce(_parse_raw(raw, tp), tp, dotted))
        else:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a section")
            obj = getattr(obj, part)


def flat_fields(data: dict, prefix: str = "") -> dict[str, Any]:
    """A config's plain data (``to_dict()``) as ``{dotted field: value}``, values that are not
    scalars as text: what two configs are compared by, and what trackers are given."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def check_types(obj: Any, prefix: str = "") -> None:
    """Check (and normalise in place) every field of a config built in Python, not read."""
    for f in dataclasses.fields(obj):
        tp = _hints(type(obj))[f.name]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, tp):
                raise ConfigError(f"{prefix}{f.name}: expected a {tp.__name__} section")
            check_types(value, f"{prefix}{f.name}.")
        else:
            setattr(obj, f.name, coerce(value, tp, f"{prefix}{f.name}"))


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it converted (int -> float, list ->
    tuple, "1e-3" -> 0.001, a mapping -> its dataclass); raise ``ConfigError`` naming the field
    otherwise."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            check_types(value, f"{name}.")
            return value
        return from_plain(tp, value, f"{name}.")
    options = _union_args(tp)
    if len(options) > 1:
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: expected {_describe(tp)}, got {value!r}")
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool):  # unquoted `mixed_precision: no` is False in YAML 1.1
            spelled = [c for c in choices if isinstance(c, str) and yaml.safe_load(c) is value]
            value = spelled[0] if len(spelled) == 1 else value
        if value not in choices:
            raise ConfigError(f"{name}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, str):
            value = _number(value, name, "an integer")
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)  # 2e9 tokens written in scientific notation
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):
            value = _number(value, name, "a number")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # no field means anything by nan or inf (null disables)
                raise ConfigError(f"{name}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if origin is list and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{name}: expected {len(args)} values, got {value!r}")
            return tuple(coerce(v, a, f"{name}[{i}]")
                         for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        if not args:
            return dict(value)
        return {coerce(k, args[0], f"{name} key {k!r}"): coerce(v, args[1], f"{name}.{k}")
                for k, v in value.items()}
    raise ConfigError(f"{name}: unsupported field type {_describe(tp)}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown(name: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{where}{close[0]}'?)" if close else f"; known: {', '.join(known)}"
    return ConfigError(f"{where}{name}: unknown field{hint}")


def _parse_raw(raw: str, tp: Any) -> Any:
    """Turn a command-line string into a value: YAML scalars/lists (safe_load, no eval), except
    that a field that can hold a string keeps the raw text (``data.corpus=123`` stays "123")."""
    raw = raw.strip()
    options = _union_args(tp)
    if raw.lower() in ("null", "none", "~") and type(None) in options:
        return None
    if str in options or _is_string_choice(tp):
        # YAML 1.1 would turn precision.mixed_precision=no into False.
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {raw!r}: {exc}") from None


def _is_string_choice(tp: Any) -> bool:
    return typing.get_origin(tp) is Literal and all(isinstance(c, str) for c in typing.get_args(tp))


def _union_args(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _number(text: str, name: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name}: expected {what}, got {text!r}") from None
