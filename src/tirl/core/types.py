"""Shared records that cross module boundaries.

Every stage (data prep, rollouts, rewards, RL, evaluation) speaks these types, so they are
defined once here and kept free of Kedro, MLflow and file paths. Tabular datasets use the
column lists below; in-memory code uses the dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

# --- canonical tabular schemas (see docs/data.md) -------------------------------------

#: Question table. ``answers`` holds the gold answers (short-form) or one reference answer
#: (long-form); ``facts`` holds the reference's atomic facts (long-form only, else empty).
QUESTION_COLUMNS = (
    "id",  # str, unique within the table
    "question",  # str, non-empty
    "answers",  # list[str], at least one non-empty
    "split",  # str, one of SPLITS (or "test" for user data)
    "task",  # "short" | "long"
    "qtype",  # single_hop | bridge | comparison | composition | description | multi_question | external
    "facts",  # list[str]
    "source",  # "world" | "flashrag" | ...
)
SPLITS = ("train", "val", "test_in_domain", "test_ood", "test")
TASKS = ("short", "long")

#: Corpus table: one passage per row.
PASSAGE_COLUMNS = ("id", "title", "text")

#: Gold trajectory table (SFT): ``messages`` is a JSON-serialisable chat.
GOLD_COLUMNS = ("id", "question_id", "messages")

Message = dict[str, str]  # {"role": "system"|"user"|"assistant"|"tool", "content": str}


# --- agent protocol: what a parser returns for one assistant turn ---------------------

#: Rules a turn can break. Parsers return these names, PRS reads them.
PARSE_RULES = (
    "empty_turn",  # nothing (or only whitespace/think) was written
    "unclosed_tag",  # an opening tag without its closing tag, or a stray closing tag
    "nested_tag",  # an action tag opened inside another action tag
    "invalid_json",  # tool-call body is not a JSON object with "name" and "arguments"
    "unknown_tool",  # tool name is not in the tool registry
    "schema_mismatch",  # arguments do not validate against the tool's JSON schema
    "text_outside_tags",  # non-whitespace text outside <think>/<tool_call>/<answer>
    "mixed_actions",  # a turn holds both tool calls and an answer, or several answers
    "no_action",  # well-formed text but neither a tool call nor an answer
)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ParseError:
    rule: str  # one of PARSE_RULES
    detail: str = ""


@dataclass(frozen=True)
class ParsedTurn:
    """What a parser found in one assistant turn. Parsers never raise on model text."""

    tool_calls: tuple[ToolCall, ...] = ()
    answer: str | None = None
    think: str | None = None
    errors: tuple[ParseError, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def kind(self) -> Literal["tool_call", "answer", "invalid"]:
        if self.errors:
            return "invalid"
        return "answer" if self.answer is not None else "tool_call"


# --- tools -----------------------------------------------------------------------------


class Tool(Protocol):
    """A tool the agent may call. ``__call__`` returns text; it may raise, and the rollout
    engine turns any exception into an error observation."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object

    def __call__(self, **arguments: Any) -> str: ...


# --- rollouts --------------------------------------------------------------------------

FINISH_REASONS = (
    "answer",  # the agent wrote a final <answer>
    "invalid",  # a turn could not be parsed; the episode ends there
    "max_turns",  # turn budget ran out
    "max_tokens",  # total token budget ran out
    "eos",  # the model ended its turn with neither tool call nor answer
)


@dataclass
class Trajectory:
    """One finished multi-turn episode, token-in token-out.

    ``token_ids``/``mask``/``logprobs`` are aligned and cover the whole sequence (prompt,
    assistant turns, tool responses). ``mask[t] == 1`` exactly for tokens the policy sampled;
    ``logprobs[t]`` is the sampling log-probability there and 0.0 elsewhere.
    """

    question_id: str
    sample_idx: int
    prompt_len: int
    token_ids: list[int]
    mask: list[int]
    logprobs: list[float]
    messages: list[Message]  # decoded chat, for display, judging and rewards
    turns: list[dict[str, Any]]  # per turn: {"role", "start", "end", "parse_errors": [...]}
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name","arguments","ok","error"}
    answer: str | None = None
    finish_reason: str = "eos"
    parse_errors: list[str] = field(default_factory=list)  # rule names over all assistant turns

    @property
    def num_turns(self) -> int:
        return sum(1 for t in self.turns if t["role"] == "assistant")

    @property
    def num_tool_calls(self) -> int:
        return len(self.tool_calls)

    @property
    def num_tool_failures(self) -> int:
        return sum(1 for c in self.tool_calls if not c.get("ok", True))

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Trajectory":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in record.items() if k in names})


# --- rewards ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardBreakdown:
    """A trajectory's reward and its parts, kept so runs compare per component."""

    reward: float
    stage: int  # PRS stage reached: 0 invalid, 1 formatted, 2 answered
    format: float  # format part of the reward
    quality: float  # answer quality S in [0, 1] (0 when there is no answer)
    exact_match: float  # 0/1
    outcome: float  # correctness part alone (used by VSPO zero_signal="outcome")


@dataclass(frozen=True)
class JudgeVerdict:
    score: float  # in [0, 1]
    match: bool  # Match / Mismatch
    rationale: str = ""


class Judge(Protocol):
    """Scores a long-form answer against a reference (docs/rewards.md, "Judges")."""

    def judge(self, *, question: str, reference: str, answer: str,
              facts: tuple[str, ...] | list[str] = ()) -> JudgeVerdict: ...


class RewardFn(Protocol):
    """Scores one finished trajectory against its question record (QUESTION_COLUMNS)."""

    def __call__(self, trajectory: Trajectory, question: dict[str, Any], *,
                 step: int = 0) -> RewardBreakdown: ...


# --- text: every string a record holds can be written ---------------------------------
#
# Python strings may hold lone surrogates ("\ud800"): a JSON escape in a tool call decodes to
# one, and a tool can return one. Tokenizers and Parquet refuse them ("surrogates not
# allowed"), so one such character in one trajectory would crash the rollout or its save.
# Text is made valid once, where it enters: the engine's decoding of sampled tokens
# (tirl.core.agent.rollout), the parser's decoding of a tool call's JSON
# (tirl.core.agent.parsers), and a tool's result or error (tirl.core.tools.base).


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
