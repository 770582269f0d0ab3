"""YAML dict -> frozen dataclass, failing early with the offending key named.

Every stage builds its typed config with :func:`build_config` so that a typo or a bad value
stops the run before any work is done, with a message such as
``rl.vspo.selection: 'valu' is not one of ['none', 'random', 'value']``.

Field metadata understood here:
  ``choices``: allowed values; ``ge``/``gt``/``le``: numeric bounds.
Use :func:`field_` to declare them together with the default and a one-line ``doc``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range. The message names the key."""


def field_(default: Any = dataclasses.MISSING, *, doc: str = "", choices: Any = None,
           ge: float | None = None, gt: float | None = None, le: float | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    meta = {"doc": doc, "choices": tuple(choices) if choices is not None else None,
            "ge": ge, "gt": gt, "le": le}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return build_config(tp, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        # NaN passes no bound check (every comparison with it is False, so ``le`` alone
        # would let it through) and no setting means infinity: refuse both everywhere.
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def unknown_key_error(key: str, known: Any) -> ConfigError:
    """The error for an unknown ``key`` (a dotted path): the closest known names, then all."""
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return ConfigError(f"{key}: unknown key ({hint}known: {sorted(known)})")


#: A message that starts with a key path ("advantage: ...", "world.seed: ...").
_KEY_HEAD = re.compile(r"^([A-Za-z_]\w*)(?:\[\d+\])?(?:\.[A-Za-z_]\w*(?:\[\d+\])?)*:")


def _prefixed(prefix: str, message: str, fields: Any) -> str:
    """``message`` of a ``__post_init__`` check, under ``prefix``: a message that names one of
    the fields first becomes a dotted key (``rl.train.advantage: ...``)."""
    m = _KEY_HEAD.match(message)
    if m and m.group(1) in fields:
        return f"{prefix}.{message}" if prefix else message
    return f"{prefix}: {message}" if prefix else message


def build_config(cls: type[T], values: dict[str, Any] | None, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``values``; nested dataclasses are recursed.

    Unknown keys, wrong types, values outside ``choices`` or bounds raise :class:`ConfigError`
    naming the full dotted key.
    """
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise unknown_key_error(f"{prefix}.{unknown[0]}" if prefix else unknown[0], fields)
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: required key is missing")
            continue
        value = _check_type(values[name], hints[name], key)
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{key}: {value!r} is not one of {list(meta['choices'])}")
        for bound, ok in (("ge", lambda v, b: v >= b), ("gt", lambda v, b: v > b),
                          ("le", lambda v, b: v <= b)):
            b = meta.get(bound)
            if b is not None and value is not None and not ok(value, b):
                sym = {"ge": ">=", "gt": ">", "le": "<="}[bound]
                raise ConfigError(f"{key}: {value!r} must be {sym} {b}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ cross-field checks
        raise ConfigError(_prefixed(prefix, str(exc), fields) if prefix
                          else str(exc) if isinstance(exc, ConfigError)
                          else f"{cls.__name__}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config (for logging and checkpoints)."""
    return dataclasses.asdict(config)
