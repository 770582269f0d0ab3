"""Turn parsers: every rule by hand, and property-based robustness (>= 10,000 strings)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tirl.core.agent import protocol as P
from tirl.core.agent.parsers import PARSERS, get_parser, parse, rule_names
from tirl.core.types import PARSE_RULES, ParsedTurn, ParseError, ToolCall

SEARCH_SCHEMA = P.SEARCH_PARAMETERS


class _Search:
    name = "search"
    description = "search"
    parameters = SEARCH_SCHEMA

    def __call__(self, **arguments):  # pragma: no cover - parsers never call tools
        return ""


TOOLS = {"search": _Search()}
CALL = P.format_tool_call("search", {"query": "Alice Marlow"})

# (text, expected rule names in order, expected kind). One line per documented verdict: the
# same examples are the table in docs/protocol.md.
HERMES_CASES = [
    (P.format_think("I need to search.") + "\n" + CALL, [], "tool_call"),
    (CALL, [], "tool_call"),
    (CALL + "\n" + P.format_tool_call("search", {"query": "Norvale"}), [], "tool_call"),
    ("<answer>Norvale</answer>", [], "answer"),
    ("<think>easy</think>\n<answer> Norvale </answer><|im_end|>", [], "answer"),
    ("<answer>Norvale</answer><|endoftext|>\n", [], "answer"),
    ("", ["empty_turn"], "invalid"),
    ("  \n<|im_end|>", ["empty_turn"], "invalid"),
    ("<think>hmm</think>", ["empty_turn"], "invalid"),
    ("<answer>Norvale", ["unclosed_tag"], "invalid"),
    ("<tool_call>\n{\"name\": \"search\"", ["unclosed_tag"], "invalid"),
    ("Norvale</answer>", ["unclosed_tag", "text_outside_tags", "no_action"], "invalid"),
    ("<think>plan<tool_call>x</tool_call></think>", ["nested_tag"], "invalid"),
    ("<answer>a<answer>b</answer></answer>", ["nested_tag"], "invalid"),
    ("<think>a<answer>b</answer>", ["nested_tag", "unclosed_tag"], "invalid"),
    ("<tool_call>{\"name\": \"search\", \"arguments\": {\"query\": \"x\"}</tool_call>",
     ["invalid_json"], "invalid"),
    ("<tool_call>[1, 2]</tool_call>", ["invalid_json"], "invalid"),
    ("<tool_call>{\"arguments\": {\"query\": \"x\"}}</tool_call>", ["invalid_json"], "invalid"),
    ("<tool_call>{\"name\": \"search\", \"arguments\": \"x\"}</tool_call>", ["invalid_json"], "invalid"),
    (P.format_tool_call("browse", {"url": "x"}), ["unknown_tool"], "invalid"),
    (P.format_tool_call("search", {"q": "x"}), ["schema_mismatch"], "invalid"),
    (P.format_tool_call("search", {"query": 3}), ["schema_mismatch"], "invalid"),
    (P.format_tool_call("search", {"query": "x", "k": 2}), ["schema_mismatch"], "invalid"),
    (P.format_tool_call("search", {"query": "   "}), ["schema_mismatch"], "invalid"),
    ("<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call>", ["schema_mismatch"], "invalid"),
    ("Let me search. " + CALL, ["text_outside_tags"], "invalid"),
    ("<answer>Norvale</answer> I am sure.", ["text_outside_tags"], "invalid"),
    ("<tool_response>x</tool_response><answer>y</answer>", ["text_outside_tags"], "invalid"),
    ("<|im_end|><answer>y</answer>", ["text_outside_tags"], "invalid"),
    (CALL + "<answer>Norvale</answer>", ["mixed_actions"], "invalid"),
    ("<answer>a</answer><answer>b</answer>", ["mixed_actions"], "invalid"),
    ("Norvale", ["text_outside_tags", "no_action"], "invalid"),
    ("<think>hmm</think> Norvale", ["text_outside_tags", "no_action"], "invalid"),
    ("<search>Alice</search>", ["text_outside_tags", "no_action"], "invalid"),
]

SEARCH_R1_CASES = [
    ("<think>who?</think><search> Alice Marlow </search>", [], "tool_call"),
    ("<answer>Norvale</answer>", [], "answer"),
    ("<search>Alice", ["unclosed_tag"], "invalid"),
    ("<search>a</search><answer>b</answer>", ["mixed_actions"], "invalid"),
    (CALL, ["text_outside_tags", "no_action"], "invalid"),
    ("<think>a</think>", ["empty_turn"], "invalid"),
]


@pytest.mark.parametrize("text,rules,kind", HERMES_CASES)
def test_hermes_rules(text, rules, kind):
    turn = parse(text, TOOLS)
    assert rule_names(turn) == rules, turn.errors
    assert turn.kind == kind


@pytest.mark.parametrize("text,rules,kind", SEARCH_R1_CASES)
def test_search_r1_rules(text, rules, kind):
    turn = parse(text, TOOLS, parser="search_r1")
    assert rule_names(turn) == rules, turn.errors
    assert turn.kind == kind


def test_every_rule_has_a_hand_example():
    seen = {r for _, rules, _ in HERMES_CASES for r in rules}
    assert seen == set(PARSE_RULES)


def test_found_actions_are_returned():
    turn = parse(P.format_think(" plan ") + CALL, TOOLS)
    assert turn.tool_calls == (ToolCall("search", {"query": "Alice Marlow"}),)
    assert turn.think == "plan" and turn.answer is None
    assert parse("<answer>  Velden </answer>", TOOLS).answer == "Velden"
    # search_r1 queries become calls of the "search" tool.
    r1 = parse("<search> who </search>", TOOLS, parser="search_r1")
    assert r1.tool_calls == (ToolCall("search", {"query": "who"}),)
    # Malformed text still reports what was found, next to the broken rule.
    bad = parse("so <answer>x</answer>", TOOLS)
    assert bad.answer == "x" and bad.kind == "invalid"


def test_without_tools_names_and_schemas_are_not_checked():
    turn = parse(P.format_tool_call("browse", {"url": 1}), None)
    assert turn.valid and turn.tool_calls[0].name == "browse"


def test_unknown_parser_lists_known_names():
    with pytest.raises(ValueError, match="hermes"):
        get_parser("xml")


def test_stop_tags_close_each_action():
    assert get_parser("hermes").stop_tags == ("</tool_call>", "</answer>")
    assert get_parser("search_r1").stop_tags == ("</search>", "</answer>")


def test_deep_json_nesting_is_invalid_json_not_a_crash():
    body = "[" * 100_000
    assert rule_names(parse(f"<tool_call>{body}</tool_call>", TOOLS)) == ["invalid_json"]


def test_tool_with_broken_schema_is_schema_mismatch():
    class Broken(_Search):
        parameters = {"type": 12}

    turn = parse(CALL, {"search": Broken()})
    assert rule_names(turn) == ["schema_mismatch"]


# --- property-based --------------------------------------------------------------------------

TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>",
        "<search>", "</search>", "<tool_response>", "</tool_response>", "<|im_end|>",
        "<|endoftext|>", "<|im_start|>", "{", "}", "\"", ":", "\n", " ", "name", "arguments",
        "search", "query", "[", "]", "\\", "<", ">", "/"]
VALID_TURNS = [t for t, rules, _ in HERMES_CASES if not rules] + [
    t for t, rules, _ in SEARCH_R1_CASES if not rules]

pieces = st.one_of(st.sampled_from(TAGS), st.text(max_size=6))
random_text = st.one_of(st.text(max_size=200), st.lists(pieces, max_size=40).map("".join))


@st.composite
def mutated_turn(draw):
    text = draw(st.sampled_from(VALID_TURNS))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "tag", "cut"]))
        i = draw(st.integers(0, len(text)))
        if op == "delete" and text:
            j = draw(st.integers(i, min(len(text), i + 12)))
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.text(max_size=4)) + text[i:]
        elif op == "duplicate":
            j = draw(st.integers(i, min(len(text), i + 30)))
            text = text[:j] + text[i:j] + text[j:]
        elif op == "tag":
            text = text[:i] + draw(st.sampled_from(TAGS)) + text[i:]
        else:
            text = text[:i]
    return text


def _well_typed(turn: ParsedTurn) -> None:
    assert isinstance(turn, ParsedTurn)
    assert isinstance(turn.tool_calls, tuple) and isinstance(turn.errors, tuple)
    for call in turn.tool_calls:
        assert isinstance(call, ToolCall) and isinstance(call.name, str)
        assert isinstance(call.arguments, dict)
    assert turn.answer is None or isinstance(turn.answer, str)
    assert turn.think is None or isinstance(turn.think, str)
    rules = [e.rule for e in turn.errors]
    assert all(isinstance(e, ParseError) and e.rule in PARSE_RULES for e in turn.errors)
    assert len(rules) == len(set(rules))  # one error per rule
    assert turn.kind in ("tool_call", "answer", "invalid")
    assert turn.valid == (not turn.errors)
    if turn.valid:  # a valid turn is exactly one kind of action, and its calls are usable
        assert (turn.answer is not None) != bool(turn.tool_calls)
        for call in turn.tool_calls:
            assert call.name in TOOLS and isinstance(call.arguments.get("query"), str)
            assert set(call.arguments) == {"query"}


PROPERTY = settings(max_examples=2500, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(PARSERS))
@PROPERTY
@given(text=random_text)
def test_random_strings_never_raise(name, text):
    _well_typed(get_parser(name).parse(text, TOOLS))


@pytest.mark.parametrize("name", sorted(PARSERS))
@PROPERTY
@given(text=mutated_turn())
def test_mutated_valid_turns_never_raise(name, text):
    _well_typed(get_parser(name).parse(text, TOOLS))


_plain = st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None, database=None)
@given(think=_plain, query=_plain.filter(str.strip))  # the schema wants a non-blank query
def test_rendered_calls_parse_back(think, query):
    """Whatever the query text (quotes, backslashes, unicode), the tool-call text round-trips.
    (A query holding a literal closing tag cannot: docs/protocol.md, "Limits".)"""
    text = P.format_think(think) + "\n" + P.format_tool_call("search", {"query": query})
    turn = parse(text, TOOLS)
    assert turn.valid, turn.errors
    assert turn.tool_calls == (ToolCall("search", {"query": query}),)


@settings(max_examples=300, deadline=None, database=None)
@given(answer=_plain)
def test_answers_parse_back_stripped(answer):
    turn = parse(P.format_answer(answer) + "<|im_end|>", TOOLS)
    assert turn.valid and turn.answer == answer.strip()


def test_json_body_with_extra_keys_is_accepted():
    body = json.dumps({"name": "search", "arguments": {"query": "x"}, "id": 1})
    assert parse(f"<tool_call>{body}</tool_call>", TOOLS).valid


def _doc_table(name: str) -> list[tuple[str, list[str], str]]:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs/protocol.md").read_text()
    body = doc.split(f"<!-- parser-table:{name} -->")[1].split(f"<!-- /parser-table:{name} -->")[0]
    rows = []
    for line in body.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").replace("\\|", "\x00").split("|")]
        text, rules, kind = (c.replace("\x00", "|") for c in cells)
        text = "" if text == "(empty)" else text[1:-1].replace("\\n", "\n")
        rows.append((text, [] if rules == "none" else rules.split(", "), kind))
    return rows


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_docs_table_is_the_parsers_behaviour(name):
    rows = _doc_table(name)
    assert len(rows) >= 6
    for text, rules, kind in rows:
        turn = get_parser(name).parse(text, TOOLS)
        assert (rule_names(turn), turn.kind) == (rules, kind), text


# --- work is linear in the text (issue 15, item 9) ------------------------------------------


def _parser_lines_run(text: str, name: str = "hermes") -> int:
    """Python lines executed inside parsers.py while parsing ``text``: a count of work that
    does not depend on the machine's speed (a quadratic scan shows as quadratic lines)."""
    import sys

    from tirl.core.agent import parsers

    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename != parsers.__file__:
            return None
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        get_parser(name).parse(text, TOOLS)
    finally:
        sys.settrace(previous)
    return count


@pytest.mark.parametrize("name", sorted(PARSERS))
@pytest.mark.parametrize("unit", ["<think></answer>", "<answer></think>", "<think><|im_end|>",
                                  "<tool_call><think></answer>", "<|im_end|> "])
def test_parse_work_is_linear_on_mismatched_tags(name, unit):
    """Doubling a run of mismatched tags at most doubles the parser's work (plus a constant).
    Before the fix each stray closing tag scanned the whole stack of open tags: 1.1 MB of
    alternating <think> and </answer> took minutes."""
    n = 400
    small, large = (_parser_lines_run(unit * k, name) for k in (n, 2 * n))
    assert large <= 2 * small + 200, (small, large)


def test_parse_of_a_megabyte_of_mismatched_tags_gives_its_verdict():
    turn = parse("<think></answer>" * 70_000, TOOLS)  # 1.1 MB
    assert rule_names(turn) == ["unclosed_tag", "nested_tag", "no_action"]
    assert parse("<answer>x</answer>" + "<|im_end|>" * 100_000, TOOLS).answer == "x"
