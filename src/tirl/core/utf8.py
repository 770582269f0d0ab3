"""Text that can be written: every string from the model or a tool is valid UTF-8.

Python strings may hold lone surrogates (``"\\ud800"``): a JSON escape in a tool call decodes
to one, and a tool can return one. Tokenizers and Parquet refuse them (``UnicodeEncodeError:
surrogates not allowed``), so one such character in one trajectory would crash the rollout or
its save. Text is made valid once, where it enters: the engine's decoding of sampled tokens,
the parser's decoding of a tool call's JSON, and a tool's result or error
(``tirl.core.agent.rollout``, ``tirl.core.agent.parsers``, ``tirl.core.tools.base``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["valid_utf8", "valid_utf8_values"]


def valid_utf8(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD; a surrogate pair becomes the
    character it encodes. Valid text comes back as is (the same object).

    >>> valid_utf8("caf\\ud800")
    'caf\\ufffd'
    >>> valid_utf8("\\ud83d\\ude00") == "\\U0001f600"
    True
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def valid_utf8_values(value: Any) -> Any:
    """:func:`valid_utf8` applied to every string (keys included) in nested lists and dicts,
    such as decoded JSON.

    >>> valid_utf8_values({"query": ["a\\udcff"]})
    {'query': ['a\\ufffd']}
    """
    if isinstance(value, str):
        return valid_utf8(value)
    if isinstance(value, list):
        return [valid_utf8_values(v) for v in value]
    if isinstance(value, dict):
        return {valid_utf8_values(k): valid_utf8_values(v) for k, v in value.items()}
    return value
