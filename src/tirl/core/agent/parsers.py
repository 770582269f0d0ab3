"""Parsers: one assistant turn of model text -> :class:`~tirl.core.types.ParsedTurn`.

A parser never raises on model text. It returns the actions it found (tool calls, answer,
thought) and, for malformed text, the rules of :data:`~tirl.core.types.PARSE_RULES` that the
text broke. PRS reads these verdicts, so the rules are exact; docs/protocol.md lists each with
an example. In short, for a turn (after dropping trailing ``<|im_end|>``/``<|endoftext|>``):

- ``empty_turn``: only whitespace and ``<think>`` blocks.
- ``unclosed_tag``: an opening tag never closed, or a closing tag with no open tag.
- ``nested_tag``: a format tag opened while another is open (``<think>`` included).
- ``invalid_json``: a tool-call body that is not a JSON object with a string ``name`` and
  an object ``arguments``.
- ``unknown_tool`` / ``schema_mismatch``: checked only when ``tools`` is given.
- ``text_outside_tags``: non-whitespace text outside the format's tags.
- ``mixed_actions``: tool calls and an answer in one turn, or more than one answer.
- ``no_action``: text was written, no action tag was ever opened (reported together with
  the rule that says what the text was, typically ``text_outside_tags``).

Each rule is reported at most once per turn (first occurrence's detail), in the order first
met, so ``[e.rule for e in turn.errors]`` is a set in a stable order. Parsing is linear in the
length of the text, whatever its tags (a policy can write a megabyte of mismatched tags).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tirl.core.registry import getter
from tirl.core.tools.base import check_arguments
from tirl.core.types import ParsedTurn, ParseError, Tool, ToolCall, valid_utf8_values

#: Text the engine may leave at the end of a turn: the turn terminator and the eos token.
#: Only trailing copies are dropped; anywhere else they are ordinary text.
TERMINATORS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")


@dataclass(frozen=True)
class TagFormat:
    """The tags of one turn format.

    ``actions`` maps an action tag name to a function body -> (ToolCall | None, answer | None,
    error | None). ``think`` is the name of the free-text thought tag.
    """

    name: str
    think: str
    actions: tuple[str, ...]
    answer_tag: str
    tool_tag_to_call: Callable[[str, str], tuple[ToolCall | None, ParseError | None]]


def _hermes_tool_call(tag: str, body: str) -> tuple[ToolCall | None, ParseError | None]:
    try:
        obj = json.loads(body)
    except Exception as exc:  # JSONDecodeError, RecursionError on deep nesting, ...
        return None, ParseError("invalid_json", f"<{tag}> body is not JSON: {type(exc).__name__}")
    if not isinstance(obj, dict):
        return None, ParseError("invalid_json", f"<{tag}> body is a {type(obj).__name__}, not an object")
    # JSON escapes can spell lone surrogates ("\ud800"), which no tokenizer or Parquet file
    # takes: the decoded values are made valid UTF-8 here, where they enter.
    name, args = valid_utf8_values(obj.get("name")), valid_utf8_values(obj.get("arguments"))
    if not isinstance(name, str):
        return None, ParseError("invalid_json", f"<{tag}> body has no string \"name\"")
    if not isinstance(args, dict):
        return None, ParseError("invalid_json", f"<{tag}> body has no object \"arguments\"")
    return ToolCall(name=name, arguments=args), None


def _search_r1_call(tag: str, body: str) -> tuple[ToolCall | None, ParseError | None]:
    # Search-R1 writes the bare query between <search> tags; it is the "search" tool.
    return ToolCall(name="search", arguments={"query": body.strip()}), None


HERMES = TagFormat(name="hermes", think="think", actions=("tool_call", "answer"),
                   answer_tag="answer", tool_tag_to_call=_hermes_tool_call)
SEARCH_R1 = TagFormat(name="search_r1", think="think", actions=("search", "answer"),
                      answer_tag="answer", tool_tag_to_call=_search_r1_call)

#: Observation tags the engine writes around tool output, per format (for docs and renderers).
OBSERVATION_TAGS = {"hermes": "tool_response", "search_r1": "information"}


class _Errors:
    """Collects at most one error per rule, keeping the first detail and first-seen order."""

    def __init__(self) -> None:
        self.items: dict[str, ParseError] = {}

    def add(self, rule: str, detail: str) -> None:
        self.items.setdefault(rule, ParseError(rule, detail))

    def extend(self, err: ParseError | None) -> None:
        if err is not None:
            self.items.setdefault(err.rule, err)

    def tuple(self) -> tuple[ParseError, ...]:
        return tuple(self.items.values())


def _strip_terminators(text: str) -> str:
    # Moves an end index instead of slicing per terminator: a turn of 100,000 terminators
    # would otherwise copy the text 100,000 times.
    end = len(text)
    while True:
        while end and text[end - 1].isspace():
            end -= 1
        cut = next((t for t in TERMINATORS if text.endswith(t, 0, end)), None)
        if cut is None:
            return text[:end]
        end -= len(cut)


def _check_tool(call: ToolCall, tools: Mapping[str, Tool] | None) -> ParseError | None:
    if tools is None:
        return None
    tool = tools.get(call.name)
    if tool is None:
        known = sorted(tools)
        return ParseError("unknown_tool", f"tool {call.name!r} is not one of {known}")
    # The engine's own argument check (tirl.core.tools.base), so that what the parser lets
    # through is exactly what call_tools_batch runs: a blank query is refused here too.
    try:
        reason = check_arguments(getattr(tool, "parameters", None) or _ANY_OBJECT, call.arguments)
    except Exception as exc:  # a broken schema on the tool side must not crash parsing
        return ParseError("schema_mismatch", f"{call.name}: schema check failed: {exc}")
    return None if reason is None else ParseError("schema_mismatch", f"{call.name}: {reason}")


#: The schema of a tool that declares none (one object, so the validator cache stays small).
_ANY_OBJECT: dict[str, Any] = {}


def parse_with_format(fmt: TagFormat, text: str, tools: Mapping[str, Tool] | None = None) -> ParsedTurn:
    """Parse one assistant turn ``text`` in tag format ``fmt``. Never raises."""
    try:
        return _parse(fmt, text, tools)
    except Exception as exc:  # defensive: a parser bug must not kill a rollout batch
        return ParsedTurn(errors=(ParseError("no_action", f"parser failure: {type(exc).__name__}: {exc}"),))


def _parse(fmt: TagFormat, text: str, tools: Mapping[str, Tool] | None) -> ParsedTurn:
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    body = _strip_terminators(text)
    errors = _Errors()
    elements, stray, opened_action = _scan_tags(fmt, body, errors)
    if stray:
        errors.add("text_outside_tags", f"text outside tags: {stray[:40]!r}")

    thinks = [c for t, c in elements if t == fmt.think]
    answers = [c for t, c in elements if t == fmt.answer_tag]
    calls: list[ToolCall] = []
    for tag, content in elements:
        if tag == fmt.think or tag == fmt.answer_tag:
            continue
        call, err = fmt.tool_tag_to_call(tag, content)
        errors.extend(err)
        if call is not None:
            errors.extend(_check_tool(call, tools))
            calls.append(call)

    if (calls or any(t not in (fmt.think, fmt.answer_tag) for t, _ in elements)) and answers:
        errors.add("mixed_actions", "a turn holds both a tool call and an answer")
    if len(answers) > 1:
        errors.add("mixed_actions", f"{len(answers)} answers in one turn")

    if not opened_action:
        if not stray and not errors.items:
            errors.add("empty_turn", "no text besides whitespace or thoughts")
        elif stray or body.strip():
            errors.add("no_action", "neither a tool call nor an answer")

    think = "\n".join(c.strip() for c in thinks) if thinks else None
    answer = answers[0].strip() if answers else None
    return ParsedTurn(tool_calls=tuple(calls), answer=answer, think=think, errors=errors.tuple())


def _scan_tags(fmt: TagFormat, body: str, errors: _Errors) -> tuple[list[tuple[str, str]], str, bool]:
    """One pass over the tags of ``body``: the completed top-level ``(tag, content)`` elements,
    the stripped text outside every tag, and whether any action tag was opened. Nesting and
    closing faults go to ``errors``."""
    names = (fmt.think, *fmt.actions)
    tag_re = re.compile(r"<(/?)(" + "|".join(re.escape(n) for n in names) + r")>")
    stack: list[tuple[str, int]] = []  # (tag name, content start offset)
    # How many of each tag the stack holds: whether a closing tag matches anything open is
    # then one lookup, not a scan of the stack (which made mismatched tags quadratic).
    open_count: Counter[str] = Counter()
    elements: list[tuple[str, str]] = []  # completed top-level (tag, content)
    outside: list[str] = []  # text at depth 0
    opened_action = False
    pos = 0
    for m in tag_re.finditer(body):
        closing, tag = m.group(1) == "/", m.group(2)
        if not stack:
            outside.append(body[pos:m.start()])
        pos = m.end()
        if not closing:
            if tag in fmt.actions:
                opened_action = True
            if stack:
                errors.add("nested_tag", f"<{tag}> opened inside <{stack[-1][0]}>")
            stack.append((tag, m.end()))
            open_count[tag] += 1
            continue
        if not open_count[tag]:
            errors.add("unclosed_tag", f"</{tag}> has no opening <{tag}>")
            continue
        # Close the innermost open <tag>; everything opened after it was never closed. Each
        # open tag is popped once, so the loop is linear over the whole turn.
        inner, start = stack.pop()
        open_count[inner] -= 1
        while inner != tag:
            errors.add("unclosed_tag", f"<{inner}> is not closed")
            inner, start = stack.pop()
            open_count[inner] -= 1
        if not stack:
            elements.append((tag, body[start:m.start()]))
    if stack:
        errors.add("unclosed_tag", f"<{stack[0][0]}> is not closed")
    else:
        outside.append(body[pos:])

    return elements, "".join(outside).strip(), opened_action


class Parser:
    """A named turn parser: ``parser.parse(text, tools) -> ParsedTurn``."""

    def __init__(self, fmt: TagFormat) -> None:
        self.format = fmt
        self.name = fmt.name
        #: Tag names that end a turn when closed (the rollout engine stops generation there).
        self.stop_tags: tuple[str, ...] = tuple(f"</{a}>" for a in fmt.actions)
        self.observation_tag = OBSERVATION_TAGS[fmt.name]

    def parse(self, text: str, tools: Mapping[str, Tool] | None = None) -> ParsedTurn:
        return parse_with_format(self.format, text, tools)

    __call__ = parse

    def __repr__(self) -> str:
        return f"Parser({self.name!r})"


PARSERS: dict[str, Parser] = {"hermes": Parser(HERMES), "search_r1": Parser(SEARCH_R1)}


# ValueError listing the known names, like every other registry (tirl.core.registry).
get_parser: Callable[[str], Parser] = getter(PARSERS, "parser")  # type: ignore[arg-type]


def parse(text: str, tools: Mapping[str, Tool] | None = None, *, parser: str = "hermes") -> ParsedTurn:
    """Parse ``text`` with the registered parser ``parser`` (``hermes`` by default)."""
    return get_parser(parser).parse(text, tools)


def rule_names(turn: ParsedTurn) -> list[str]:
    """The broken rules of ``turn``, in first-seen order."""
    return [e.rule for e in turn.errors]


__all__ = ["PARSERS", "Parser", "TagFormat", "HERMES", "SEARCH_R1", "TERMINATORS",
           "OBSERVATION_TAGS", "get_parser", "parse", "parse_with_format", "rule_names"]

