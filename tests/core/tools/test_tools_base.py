"""call_tool / call_tools_batch never raise: every failure becomes an error text."""

from __future__ import annotations

import doctest
import logging
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tirl.core.tools.base import (
    FunctionTool,
    ToolResult,
    call_tool,
    call_tools_batch,
    tool_schema,
    tool_schemas,
    validate_arguments,
)
from tirl.core.types import ToolCall

QUERY_SCHEMA = {"type": "object", "properties": {"query": {"type": "string", "minLength": 1}},
                "required": ["query"], "additionalProperties": False}


def _boom(query: str) -> str:
    raise RuntimeError("index exploded")


@pytest.fixture
def release():
    """An event the slow tool waits on; set at teardown so no thread outlives the test."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def tools(release):
    def slow(query: str) -> str:
        release.wait(30)  # bounded even if teardown never came
        return "late"

    return {
        "echo": FunctionTool("echo", "Echo the query.", QUERY_SCHEMA, lambda query: f"got {query}"),
        "boom": FunctionTool("boom", "Always fails.", QUERY_SCHEMA, _boom),
        "slow": FunctionTool("slow", "Never returns in time.", QUERY_SCHEMA, slow),
        "nontext": FunctionTool("nontext", "Returns a number.", QUERY_SCHEMA, lambda query: 42),
    }


def test_tool_schema_is_the_openai_function_schema(tools):
    assert tool_schema(tools["echo"]) == {"type": "function", "function": {
        "name": "echo", "description": "Echo the query.", "parameters": QUERY_SCHEMA}}
    assert [s["function"]["name"] for s in tool_schemas(tools)] == ["boom", "echo", "nontext", "slow"]


def test_success(tools):
    result = call_tool(tools, ToolCall("echo", {"query": "x"}), timeout_s=5)
    assert result == ToolResult("got x", True, None)
    text, ok, error = result  # unpacks as (text, ok, error)
    assert (text, ok, error) == ("got x", True, None)


@pytest.mark.parametrize("call, reason", [
    (ToolCall("boom", {"query": "x"}), "RuntimeError: index exploded"),
    (ToolCall("nope", {"query": "x"}), "unknown tool 'nope'"),
    (ToolCall("echo", {}), "invalid arguments: 'query' is a required property"),
    (ToolCall("echo", {"query": 3}), "invalid arguments: at 'query': 3 is not of type 'string'"),
    (ToolCall("echo", {"query": ""}), "invalid arguments: at 'query'"),
    (ToolCall("echo", {"query": "x", "k": 2}), "invalid arguments: Additional properties"),
    (ToolCall("echo", ["x"]), "invalid arguments: expected an object, got list"),
    (ToolCall("nontext", {"query": "x"}), "tool returned int, not text"),
])
def test_failures_become_error_texts(tools, call, reason):
    text, ok, error = call_tool(tools, call, timeout_s=5)
    assert not ok
    assert reason in error
    assert text.startswith(f"Error: {call.name} failed: ") and reason in text


def test_timeout_is_an_error_not_a_hang(tools):
    text, ok, error = call_tool(tools, ToolCall("slow", {"query": "x"}), timeout_s=0.05)
    assert not ok and error == "timed out after 0.05 s"
    assert text == "Error: slow failed: timed out after 0.05 s"


def test_long_reasons_are_cut(tools):
    tools = {"big": FunctionTool("big", "", QUERY_SCHEMA,
                                 lambda query: (_ for _ in ()).throw(ValueError("x" * 5000)))}
    text, ok, error = call_tool(tools, ToolCall("big", {"query": "q"}))
    assert not ok and len(error) == 300 and error.endswith("...")


def test_validate_arguments():
    t = FunctionTool("f", "", QUERY_SCHEMA, str)
    assert validate_arguments(t, {"query": "a"}) is None
    assert validate_arguments(t, {"query": None}) == "at 'query': None is not of type 'string'"


class _Batched:
    """A tool with call_batch that records how it was called."""

    name = "bsearch"
    description = "batched"
    parameters = QUERY_SCHEMA

    def __init__(self, fail_on: str | None = None):
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, query: str) -> str:  # pragma: no cover - the batch path is used
        raise AssertionError("call_batch should have been used")

    def call_batch(self, arguments):
        queries = [a["query"] for a in arguments]
        self.batches.append(queries)
        if self.fail_on in queries:
            raise ConnectionError("backend down")
        return [q.upper() for q in queries]


def test_batch_keeps_order_groups_batched_tools_and_counts_failures(tools):
    batched = _Batched()
    tools = {**tools, "bsearch": batched}
    calls = [ToolCall("bsearch", {"query": "a"}), ToolCall("echo", {"query": "b"}),
             ToolCall("boom", {"query": "c"}), ToolCall("bsearch", {"query": "d"}),
             ToolCall("bsearch", {"bad": 1}), ToolCall("ghost", {}),
             ToolCall("slow", {"query": "e"})]
    results = call_tools_batch(tools, calls, timeout_s=0.2, max_workers=2)
    assert [r.text for r in results[:2]] == ["A", "got b"]
    assert results[3].text == "D"
    assert batched.batches == [["a", "d"]]  # one batched call, the invalid one left out
    assert [r.ok for r in results] == [True, True, False, True, False, False, False]
    assert sum(not r.ok for r in results) == 4
    assert "timed out" in results[6].error


def test_batch_failure_fails_only_that_tools_calls(tools):
    tools = {**tools, "bsearch": _Batched(fail_on="x")}
    results = call_tools_batch(tools, [ToolCall("bsearch", {"query": "x"}),
                                       ToolCall("bsearch", {"query": "y"}),
                                       ToolCall("echo", {"query": "z"})])
    assert [r.ok for r in results] == [False, False, True]
    assert results[0].text == "Error: bsearch failed: ConnectionError: backend down"


def test_batch_of_nothing():
    assert call_tools_batch({}, []) == []


def test_a_broken_schema_is_an_error_text_too():
    tools = {"bad": FunctionTool("bad", "", {"type": "no-such-type"}, lambda **kw: "x")}
    text, ok, error = call_tool(tools, ToolCall("bad", {}))
    assert not ok and error.startswith("cannot validate arguments")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["echo", "boom", "nontext", "ghost", ""]),
       arguments=st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values)
def test_call_tool_never_raises(name, arguments):
    tools = {"echo": FunctionTool("echo", "", QUERY_SCHEMA, lambda query: f"got {query}"),
             "boom": FunctionTool("boom", "", QUERY_SCHEMA, _boom),
             "nontext": FunctionTool("nontext", "", {"type": "object"}, lambda **kw: kw)}
    result = call_tool(tools, ToolCall(name, arguments))
    assert isinstance(result.text, str) and result.ok == (result.error is None)
    if not result.ok:
        assert result.text.startswith(f"Error: {name} failed: ")
    (batched,) = call_tools_batch(tools, [ToolCall(name, arguments)])
    assert batched == result


def test_doctests():
    import tirl.core.tools.base as base
    import tirl.core.tools.search as search

    # Log records are not part of the examples' output: with a stdout handler configured by
    # an earlier test (Kedro's logging), bm25s's DEBUG lines would land in it.
    logging.disable(logging.CRITICAL)
    try:
        for module in (base, search):
            failed, attempted = doctest.testmod(module)
            assert attempted > 0 and failed == 0, module.__name__
    finally:
        logging.disable(logging.NOTSET)


def test_blank_strings_are_refused_where_the_schema_wants_a_non_empty_one():
    t = FunctionTool("f", "", QUERY_SCHEMA, str)
    assert validate_arguments(t, {"query": "  "}) == "at 'query': '  ' is blank (only whitespace)"
    assert validate_arguments(t, {"query": " a "}) is None
    # Without minLength a blank string is a value like any other.
    free = FunctionTool("g", "", {"type": "object", "properties": {"sep": {"type": "string"}}}, str)
    assert validate_arguments(free, {"sep": " "}) is None


class _PerCall(_Batched):
    """call_batch that fails one call in its slot (an exception value), not the batch."""

    def call_batch(self, arguments):
        return [ValueError("no such page") if a["query"] == "x" else a["query"].upper()
                for a in arguments]


def test_an_exception_in_a_batch_slot_fails_that_call_only():
    results = call_tools_batch({"bsearch": _PerCall()}, [ToolCall("bsearch", {"query": q})
                                                          for q in ("a", "x", "b")])
    assert [r.text for r in results] == ["A", "Error: bsearch failed: ValueError: no such page", "B"]
