"""Typed dataclasses from plain dicts: each value checked against its annotation, unknown keys answered with the
closest valid ones. What `config.from_dict` and the `key.sub=value` overrides are built on."""
from __future__ import annotations

import difflib
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any

import yaml

from .errors import ConfigError


def all_keys(cls, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass type, sections included."""
    keys = []
    for f in fields(cls):
        name = prefix + f.name
        keys.append(name)
        ftype = typing.get_type_hints(cls)[f.name]
        if is_dataclass(ftype):
            keys.extend(all_keys(ftype, name + "."))
    return keys


def unknown_key(key: str, root_cls) -> ConfigError:
    """An error for an unknown key that suggests the closest valid keys."""
    candidates = all_keys(root_cls)
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
    if not close:  # try matching the last component anywhere in the tree
        leaf = key.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:3]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def coerce(value: Any, tp, key: str, root=None) -> Any:
    """Check `value` against the annotation `tp`, converting where it is lossless (`root`: for key suggestions)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key, root)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            try:  # "[1, 2]" or the shell-friendly "1,2"
                value = yaml.safe_load(value if value.strip().startswith("[") else f"[{value}]")
            except yaml.YAMLError as exc:
                raise ConfigError(f"{key} expects a list like [1, 2], got {value!r}") from exc
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} expects a list like [1, 2], got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]", root) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} expects {len(args)} values, got {len(value)}: {value!r}")
        return tuple(coerce(v, a, f"{key}[{i}]", root) for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} expects true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                pass
        raise ConfigError(f"{key} expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} expects a string, got {value!r}")
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} is a section; set its fields as {key}.<field>=value")
        return typed_from_dict(tp, value, key + ".", root)
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def typed_from_dict(cls, data: dict, prefix: str = "", root=None):
    """Build dataclass `cls` from a nested dict, rejecting unknown keys (suggesting keys of `root`, default `cls`)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in data:
        if key not in names:
            raise unknown_key(prefix + str(key), root or cls)
    kwargs = {k: coerce(v, hints[k], prefix + k, root or cls) for k, v in data.items()}
    return cls(**kwargs)
