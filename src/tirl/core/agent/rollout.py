"""The multi-turn rollout engine: B questions x G samples, token-in token-out.

All live trajectories advance together, one assistant turn per round:

1. every live trajectory's token ids go to the backend in one batched ``generate`` call, which
   stops each row at ``</tool_call>``, ``</answer>``, ``<|im_end|>`` or eos (or its budget);
2. each turn is parsed (:mod:`tirl.core.agent.parsers`); an answer, an invalid turn or a turn
   that stopped without acting ends the episode;
3. the tool calls of all trajectories execute together (:func:`call_tools_batch`, BM25 scores
   all queries in one call); a failing tool gives an error text, the trajectory goes on;
4. each observation is appended as tokens rendered exactly as the chat template renders a tool
   message, preceded by the close of the assistant turn when the model did not write it.

Sampled tokens carry mask 1 and their sampling log-probabilities; every other token (prompt,
turn closes, tool responses) carries mask 0 and log-prob 0.0. docs/protocol.md describes the
finish reasons and when the ids differ from a fresh render of the finished chat.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tirl.core.agent import protocol as P
from tirl.core.agent.generation import GenerationBackend, GenOut
from tirl.core.agent.parsers import get_parser
from tirl.core.config import field_
from tirl.core.progress import progress as progress_bar
from tirl.core.tools.base import call_tools_batch, tool_schemas
from tirl.core.types import FINISH_REASONS, Message, ParsedTurn, Tool, Trajectory, valid_utf8

log = logging.getLogger(__name__)

#: Parse rules that only say "the model stopped without acting" (finish reason ``eos``);
#: any other rule is a malformed turn (finish reason ``invalid``).
NO_ACTION_RULES = frozenset({"empty_turn", "no_action"})

#: Placeholder used to split the chat template's tool-message rendering around the content.
_SENTINEL = "\x00TIRL_TOOL_CONTENT\x00"


@dataclass(frozen=True)
class RolloutConfig:
    """Budgets and sampling of the rollout engine (``params:inspect_rollouts.engine``)."""

    max_turns: int = field_(4, doc="assistant turns per episode", ge=1)
    max_new_tokens_per_turn: int = field_(64, doc="sampled tokens per assistant turn", ge=1)
    max_total_tokens: int = field_(1024, doc="prompt + generated + observation tokens", ge=8)
    max_tool_response_tokens: int = field_(256, doc="tool output kept per call (tokens)", ge=1)
    temperature: float = field_(1.0, doc="sampling temperature; 0 = greedy", ge=0.0)
    top_p: float = field_(1.0, doc="nucleus sampling mass", gt=0.0, le=1.0)
    seed: int = field_(0, doc="sampling seed (same seed, same trajectories on CPU)")
    parser: str = field_("hermes", doc="turn format", choices=("hermes", "search_r1"))
    backend: str = field_("hf", doc="generation backend", choices=("hf", "vllm"))
    max_batch: int = field_(256, doc="rows per backend forward pass", ge=1)
    tool_timeout_s: float | None = field_(30.0, doc="per tool call, seconds (> 0); null = no limit",
                                          gt=0.0)
    system_prompt: str | None = field_(None, doc="null = the protocol's SYSTEM_PROMPT")


@dataclass
class _State:
    """A trajectory under construction."""

    question_id: str
    sample_idx: int
    token_ids: list[int]
    messages: list[Message]
    prompt_len: int
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)
    answer: str | None = None
    finish_reason: str | None = None

    def extend(self, ids: Sequence[int], *, sampled: bool, logprobs: Sequence[float] | None = None) -> None:
        self.token_ids.extend(ids)
        self.mask.extend([1 if sampled else 0] * len(ids))
        self.logprobs.extend(logprobs if sampled and logprobs is not None else [0.0] * len(ids))

    def to_trajectory(self) -> Trajectory:
        return Trajectory(question_id=self.question_id, sample_idx=self.sample_idx,
                          prompt_len=self.prompt_len, token_ids=self.token_ids, mask=self.mask,
                          logprobs=self.logprobs, messages=self.messages, turns=self.turns,
                          tool_calls=self.tool_calls, answer=self.answer,
                          finish_reason=self.finish_reason or "max_turns",
                          parse_errors=self.parse_errors)


class _Codec:
    """Token-level pieces of the chat template that the engine appends itself."""

    def __init__(self, tokenizer: Any, stop_tags: Sequence[str]) -> None:
        self.tok = tokenizer
        self.im_end = self._single(P.IM_END)
        self.terminators = {i for i in (self.im_end, self._single(P.ENDOFTEXT),
                                        tokenizer.eos_token_id) if i is not None}
        self.newline = self.encode("\n")
        stop_ids, stop_strings = set(self.terminators), []
        for tag in stop_tags:
            tag_id = self._single(tag)
            if tag_id is not None:
                stop_ids.add(tag_id)
            else:  # a tokenizer without the tag as one token: stop on the text instead
                stop_strings.append(tag)
        self.stop_token_ids, self.stop_strings = stop_ids, stop_strings
        self._tool_pre, self._tool_post = self._split_tool_render()

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        # Model text enters here: made valid UTF-8 once, whatever a tokenizer's decoder hands
        # back, so nothing downstream (re-encoding, Parquet) can refuse it (tirl.core.types.valid_utf8).
        return valid_utf8(self.tok.decode(list(ids), skip_special_tokens=False))

    def _single(self, text: str) -> int | None:
        ids = self.encode(text)
        return ids[0] if len(ids) == 1 else None

    def _split_tool_render(self) -> tuple[str, str]:
        # The template's rendering of a tool turn after an assistant turn, with the content
        # cut out; rendering it this way costs nothing per call and is the template's own text.
        base = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        before = P.render_text(self.tok, base)
        after = P.render_text(self.tok, base + [{"role": "tool", "content": _SENTINEL}],
                              add_generation_prompt=True)
        if not after.startswith(before) or after.count(_SENTINEL) != 1:
            raise ValueError("the tokenizer's chat template does not render a tool message after "
                             "an assistant message as an appended block; cannot append observations")
        pre, post = after[len(before):].split(_SENTINEL)
        return pre, post

    def observation(self, contents: Sequence[str]) -> list[int]:
        """Tokens of the tool messages ``contents`` plus the next assistant header.

        Consecutive tool messages share one user turn in Qwen's template, so a turn with several
        calls is rendered as the template does: one header, one ``<tool_response>`` per call.
        """
        if len(contents) == 1:
            return self.encode(self._tool_pre + contents[0] + self._tool_post)
        base = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        before = P.render_text(self.tok, base)
        after = P.render_text(self.tok, base + [{"role": "tool", "content": c} for c in contents],
                              add_generation_prompt=True)
        return self.encode(after[len(before):])

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.encode(text)
        return text if len(ids) <= max_tokens else self.decode(ids[:max_tokens])


def _turn_seed(base: int, turn: int) -> int:
    # Distinct, reproducible streams per turn; a large odd multiplier keeps seeds apart.
    return (base * 1_000_003 + turn) % (2**63)


def run_rollouts(*, backend: GenerationBackend, tokenizer: Any, tools: Mapping[str, Tool],
                 questions: Sequence[Mapping[str, Any]], group_size: int, config: RolloutConfig,
                 progress: bool = False, seed: int | None = None,
                 on_metrics: Callable[[dict[str, float], int], None] | None = None) -> list[Trajectory]:
    """Roll out ``group_size`` episodes for every question record; return them ordered by
    (question order, sample_idx).

    ``questions`` are mappings with at least ``id`` and ``question`` (QUESTION_COLUMNS).
    ``seed`` overrides ``config.seed`` (the RL loop passes its step). ``on_metrics`` receives
    :func:`rollout_stats` once at the end (step 0).
    """
    t0 = time.perf_counter()
    parser = get_parser(config.parser)
    codec = _Codec(tokenizer, parser.stop_tags)
    schemas = tool_schemas(tools) if tools else None
    system = config.system_prompt if config.system_prompt is not None else P.SYSTEM_PROMPT
    base_seed = config.seed if seed is None else seed
    reserve = 1 + len(codec.newline)  # room to close the last assistant turn

    states = _initial_states(tokenizer, questions, group_size, system, schemas,
                             max_total_tokens=config.max_total_tokens, reserve=reserve)

    bar = progress_bar(total=len(states), desc="rollout", unit="traj") if progress else None
    live = list(states)
    generated = 0
    # Backends that can keep a row's KV between turns get a stable id per trajectory.
    reuse_ids = "cache_ids" in inspect.signature(backend.generate).parameters
    slot = {id(s): k for k, s in enumerate(states)}
    for turn in range(config.max_turns):
        if not live:
            break
        budgets = [min(config.max_new_tokens_per_turn,
                       config.max_total_tokens - reserve - len(s.token_ids)) for s in live]
        extra = {"cache_ids": [slot[id(s)] for s in live]} if reuse_ids else {}
        outs = backend.generate([s.token_ids for s in live], max_new_tokens=budgets,
                                stop_token_ids=codec.stop_token_ids, stop_strings=codec.stop_strings,
                                temperature=config.temperature, top_p=config.top_p,
                                seed=_turn_seed(base_seed, turn), **extra)
        pending: list[tuple[_State, ParsedTurn]] = []
        for s, out, budget in zip(live, outs, budgets):
            generated += len(out.token_ids)
            parsed = _record_turn(s, out, budget, config, codec, parser, tools)
            if s.finish_reason is None:
                if turn == config.max_turns - 1:
                    s.finish_reason = "max_turns"  # a call on the last turn gets no response
                else:
                    pending.append((s, parsed))
        _run_tools(pending, tools, config, codec)
        live = _retire_finished(live, codec, bar)
    for s in live:  # only reachable when max_turns rounds ran with tool calls pending
        s.finish_reason = s.finish_reason or "max_turns"
    _retire_finished(live, codec, bar)
    if bar is not None:
        bar.close()
    if hasattr(backend, "forget"):
        backend.forget()  # kept KV is only valid within this call
    trajectories = [s.to_trajectory() for s in states]
    elapsed = time.perf_counter() - t0
    log.info("rollout: %d trajectories, %d generated tokens in %.1f s", len(trajectories), generated,
             elapsed)
    if on_metrics is not None:
        on_metrics(rollout_stats(trajectories, elapsed_s=elapsed), 0)
    return trajectories


def _initial_states(tokenizer: Any, questions: Sequence[Mapping[str, Any]], group_size: int,
                    system: str, schemas: Any, *, max_total_tokens: int,
                    reserve: int) -> list[_State]:
    """``group_size`` fresh episodes per question, each holding its rendered prompt."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    for i, q in enumerate(questions):
        for key in ("id", "question"):
            if key not in q:
                raise KeyError(f"questions[{i}]: missing key {key!r} (has {sorted(q)})")
    states: list[_State] = []
    for q in questions:
        messages = P.initial_messages(str(q["question"]), system)
        prompt = P.render(tokenizer, messages, schemas, add_generation_prompt=True)
        if len(prompt) + reserve >= max_total_tokens:
            raise ValueError(f"question {q['id']!r}: the prompt has {len(prompt)} tokens, no room "
                             f"under rollout max_total_tokens={max_total_tokens}")
        for g in range(group_size):
            s = _State(question_id=str(q["id"]), sample_idx=g, token_ids=[], messages=list(messages),
                       prompt_len=len(prompt))
            s.extend(prompt, sampled=False)
            states.append(s)
    return states


def _retire_finished(live: list[_State], codec: _Codec, bar: Any) -> list[_State]:
    """Close the assistant turn of every finished episode (a cut-off one stays as it was cut);
    return those still running."""
    still = []
    for s in live:
        if s.finish_reason is None:
            still.append(s)
            continue
        if s.finish_reason != "max_tokens":
            _close_assistant_turn(s, codec)
        if bar is not None:
            bar.update(1)
    return still


def _record_turn(s: _State, out: GenOut, budget: int, config: RolloutConfig, codec: _Codec,
                 parser: Any, tools: Mapping[str, Tool]) -> ParsedTurn:
    start = len(s.token_ids)
    s.extend(out.token_ids, sampled=True, logprobs=out.logprobs)
    ids = list(out.token_ids)
    ended_by_terminator = bool(ids) and ids[-1] in codec.terminators and out.stop_reason != "length"
    text = codec.decode(ids[:-1] if ended_by_terminator else ids)
    parsed = parser.parse(text, tools)
    # Cut by the *total* budget (not the per-turn one): the episode ran out of room, which is
    # max_tokens, and the cut turn is not judged (PRS: "formatted, budget ran out").
    cut_by_total = (out.stop_reason == "length" and budget < config.max_new_tokens_per_turn
                    and not (parsed.valid and parsed.answer is not None))
    rules = [] if cut_by_total else [e.rule for e in parsed.errors]
    s.turns.append({"role": "assistant", "start": start, "end": len(s.token_ids),
                    "parse_errors": rules, "stop_reason": out.stop_reason,
                    "truncated": out.stop_reason == "length", "ended_by_terminator": ended_by_terminator})
    s.messages.append({"role": "assistant", "content": text})
    if cut_by_total:
        s.finish_reason = "max_tokens"
    elif parsed.errors:
        s.parse_errors.extend(rules)
        only_silence = set(rules) <= NO_ACTION_RULES and out.stop_reason != "length"
        s.finish_reason = "eos" if only_silence else "invalid"
    elif parsed.answer is not None:
        s.answer = parsed.answer
        s.finish_reason = "answer"
    return parsed


def _close_assistant_turn(s: _State, codec: _Codec) -> None:
    """Append the template's end of the last assistant turn (mask 0) if the model left it open."""
    last = s.turns[-1] if s.turns else None
    if last is None or last["role"] != "assistant" or last.get("closed"):
        return
    # A sampled <|im_end|> already closes the turn but for the template's newline. A sampled
    # eos (<|endoftext|>) stays as sampled and the template's close follows it.
    ended_im_end = bool(last.get("ended_by_terminator")) and s.token_ids[last["end"] - 1] == codec.im_end
    ids = codec.newline if ended_im_end else [codec.im_end] + codec.newline
    s.extend(ids, sampled=False)
    last["closed"] = True


def _run_tools(pending: list[tuple[_State, ParsedTurn]], tools: Mapping[str, Tool],
               config: RolloutConfig, codec: _Codec) -> None:
    """Execute every pending call in one batch and append each trajectory's observation."""
    if not pending:
        return
    flat = [(s, call) for s, parsed in pending for call in parsed.tool_calls]
    results = call_tools_batch(tools, [c for _, c in flat], timeout_s=config.tool_timeout_s)
    by_state: dict[int, list[str]] = {}
    for (s, call), res in zip(flat, results):
        s.tool_calls.append({"turn": len([t for t in s.turns if t["role"] == "assistant"]) - 1,
                             "name": call.name, "arguments": dict(call.arguments), "ok": bool(res.ok),
                             "error": res.error})
        by_state.setdefault(id(s), []).append(codec.truncate(res.text, config.max_tool_response_tokens))
    for s, _ in pending:
        contents = by_state.get(id(s), [])
        _close_assistant_turn(s, codec)
        obs = codec.observation(contents)
        if len(s.token_ids) + len(obs) + 1 + len(codec.newline) + 1 > config.max_total_tokens:
            # No room for the observation and one more sampled token: the budget ends here.
            s.finish_reason = "max_tokens"
            continue
        start = len(s.token_ids)
        s.extend(obs, sampled=False)
        s.turns.append({"role": "tool", "start": start, "end": len(s.token_ids), "parse_errors": []})
        s.messages.extend({"role": "tool", "content": c} for c in contents)


# --- statistics ------------------------------------------------------------------------------


def rollout_stats(trajectories: Sequence[Trajectory], *, elapsed_s: float | None = None) -> dict[str, Any]:
    """Summary numbers of a rollout (namespaced ``rollout/...`` keys, plain floats/ints)."""
    n = len(trajectories)
    sampled = sum(sum(t.mask) for t in trajectories)
    total = sum(len(t.token_ids) for t in trajectories)
    reasons = Counter(t.finish_reason for t in trajectories)
    rules = Counter(r for t in trajectories for r in t.parse_errors)
    calls = sum(t.num_tool_calls for t in trajectories)
    fails = sum(t.num_tool_failures for t in trajectories)
    stats: dict[str, Any] = {
        "rollout/trajectories": n,
        "rollout/turns_mean": sum(t.num_turns for t in trajectories) / max(n, 1),
        "rollout/tool_calls": calls,
        "rollout/tool_calls_mean": calls / max(n, 1),
        "rollout/tool_failures": fails,
        "rollout/tool_failure_rate": fails / max(calls, 1),
        "rollout/answered_rate": reasons.get("answer", 0) / max(n, 1),
        "rollout/generated_tokens": sampled,
        "rollout/total_tokens": total,
        "rollout/generated_tokens_mean": sampled / max(n, 1),
        "rollout/length_mean": total / max(n, 1),
    }
    for reason in FINISH_REASONS:
        stats[f"rollout/finish/{reason}"] = reasons.get(reason, 0)
    for rule, count in sorted(rules.items()):
        stats[f"rollout/parse_error/{rule}"] = count
    if elapsed_s is not None:
        stats["rollout/seconds"] = elapsed_s
        stats["rollout/generated_tokens_per_s"] = sampled / max(elapsed_s, 1e-9)
        stats["rollout/trajectories_per_s"] = n / max(elapsed_s, 1e-9)
    return stats


__all__ = ["NO_ACTION_RULES", "RolloutConfig", "rollout_stats", "run_rollouts"]
