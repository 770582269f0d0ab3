"""The options each registered judge takes, known before it is built.

A judge is built when the reward or the evaluation first needs it, after the model is loaded
(evaluation: after every rollout), so an option it does not take would fail late, as a raw
``TypeError``. :class:`~tirl.core.rewards.prs.JudgeSpec` checks its options here when the
stage config is built instead. That matters most when ``judge.name`` is switched (``--params
rl.train.judge.name=openai``): the options set for the rubric judge do not carry over to
another judge, and the message says so.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any


def _judge_class(factory: Callable[..., Any]) -> Any:
    """The class a registry entry builds: the entry itself, or the class a lazily registered
    entry imports on first use (``judges._lazy``: ``module`` and ``attr`` in its closure)."""
    if inspect.isclass(factory):
        return factory
    names = inspect.getclosurevars(factory).nonlocals
    module, attr = names.get("module"), names.get("attr")
    if isinstance(module, str) and isinstance(attr, str):
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
    return None


def _config_class(cls: Any) -> Any:
    """The dataclass annotated as ``cls.__init__``'s ``config`` (``RubricJudge(config:
    RubricConfig | None = None, **options)`` takes the config's fields as options)."""
    try:
        hint = typing.get_type_hints(cls.__init__).get("config")
    except (NameError, TypeError):
        return None
    for tp in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(tp):
            return tp
    return None


def _config_fields(cls: Any) -> tuple[str, ...] | None:
    config = _config_class(cls)
    return None if config is None else tuple(f.name for f in dataclasses.fields(config))


def judge_options(name: str) -> tuple[str, ...] | None:
    """The keyword options judge ``name`` takes, or None when they cannot be known before it
    is built (a plain ``**options`` callable). Raises KeyError for an unregistered name.

    >>> "threshold" in judge_options("rubric")
    True
    """
    from tirl.core.rewards.judges import JUDGES

    cls = _judge_class(JUDGES[name])
    if cls is None:
        return None
    params = inspect.signature(cls).parameters.values()
    named = tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name != "config")
    if any(p.kind is p.VAR_KEYWORD for p in params):
        fields = _config_fields(cls)
        return None if fields is None else named + fields
    return named


def check_judge_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ValueError (``options.<key>: ...``) for an option judge ``name`` does not take."""
    known = judge_options(name)
    if known is None:
        return
    for key in sorted(set(options) - set(known)):
        from tirl.core.rewards.judges import JUDGES

        others = sorted(n for n in JUDGES if n != name and key in (judge_options(n) or ()))
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = (f"; it is an option of {others} (options of one judge do not carry over when "
                f"judge.name changes: set options for {name!r})" if others else "")
        hint += f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"options.{key}: not an option of judge {name!r}{hint} "
                         f"(its options: {sorted(known)})")
    from tirl.core.config import build_config
    from tirl.core.rewards.judges import JUDGES

    config = _config_class(_judge_class(JUDGES[name]))
    if config is not None:  # a judge configured by a dataclass: its values are checked too
        build_config(config, dict(options), "options")
