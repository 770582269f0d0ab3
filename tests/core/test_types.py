"""tirl.core.types: text from the model or a tool is valid UTF-8 (issue 15, item 5)."""

from __future__ import annotations

import doctest

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

import tirl.core.types as types
from tirl.core.types import valid_utf8, valid_utf8_values


def test_doctests():
    failed, attempted = doctest.testmod(types)
    assert attempted and not failed


def test_valid_text_is_returned_as_is():
    text = "Zürich \U0001f600 ok"
    assert valid_utf8(text) is text


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=30))
def test_any_python_string_becomes_writable(text):
    """Whatever the code points (lone surrogates included), the result encodes, and Arrow,
    which is what failed on the rollout save, takes it."""
    clean = valid_utf8(text)
    clean.encode("utf-8")
    pa.array([clean], type=pa.string())
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert clean == text


def test_nested_values_keys_included():
    assert valid_utf8_values({"q\ud800": [1, "x\udfff", {"y": None}]}) == \
        {"q\ufffd": [1, "x\ufffd", {"y": None}]}
