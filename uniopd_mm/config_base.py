"""Typed, self-validating configuration: dataclasses loaded from YAML with dotted overrides.

Each field documents itself through ``cfg(default, help)`` and may declare a numeric ``range``
(inclusive bounds, ``None`` for open); a fixed set of values is a ``Literal`` annotation. Loading walks the
dataclass tree, so an unknown key or a value of the wrong type fails with the dotted name of
the field (``algo.margin.delta: expected float, got 'abc'``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def cfg(default: Any = dataclasses.MISSING, help: str = "", range=None, factory=None):
    """A dataclass field carrying its documentation and its range check."""
    meta = {"help": help, "range": range}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp) -> str:
    if get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Checks ``value`` against the annotation ``tp``; returns it converted where lossless."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:  # Optional[X]: X's own error names the exact field
            return _coerce(value, non_none[0], name)
        for arg in non_none:
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{name}: must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) if origin is dict else (Any, Any)
        return {k: _coerce(v, val_tp, f"{name}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=name)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # NOTE: PyYAML reads "5e-2" (no dot) as a string; accept any numeric spelling.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected float, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    raise ConfigError(f"{name}: unsupported annotation {tp!r}")


def _check_meta(value: Any, f: dataclasses.Field, name: str) -> None:
    rng = f.metadata.get("range")
    if value is None:
        return
    if rng is not None:
        lo, hi = rng
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{name}: must lie in [{lo}, {hi}], got {value!r}")


def from_dict(cls, data: dict, prefix: str = ""):
    """Builds dataclass ``cls`` from a mapping, checking every key, type and range."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (known keys of {prefix or 'the config'}: {sorted(fields)})"
        )
    kwargs = {}
    for key, f in fields.items():
        name = f"{prefix}.{key}" if prefix else key
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{name}: required field is missing ({f.metadata.get('help', '')})")
            continue
        value = _coerce(data[key], hints[key], name)
        _check_meta(value, f, name)
        kwargs[key] = value
    try:
        obj = cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(f"{prefix}.{msg}" if prefix and not msg.startswith(prefix) else msg) from None
    return obj


def parse_overrides(overrides: list[str]) -> dict:
    """``["algo.margin.delta=0.4", "data.paths=[a,b]"]`` -> nested dict; values parsed as YAML."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = nested
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def describe(cls, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted name, type, default, help) for every field: the config's own documentation."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, name + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "<required>")
        rows.append((name, _type_name(tp), default, f.metadata.get("help", "")))
    return rows
