"""A cheap behavioural check after SFT: greedy-decode the assistant turns of gold chats,
each given the gold history, and count well-formed tool calls and answers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tirl.core.agent.protocol import (ANSWER_CLOSE, ANSWER_OPEN, IM_END, TOOL_CALL_CLOSE,
                                      TOOL_CALL_OPEN, render)


def _wellformed_search_call(text: str) -> str | None:
    """The query of a lone, well-formed search call in ``text`` (think allowed before), else None."""
    body = text.split(TOOL_CALL_OPEN, 1)
    if len(body) != 2 or TOOL_CALL_CLOSE not in body[1]:
        return None
    inner, after = body[1].split(TOOL_CALL_CLOSE, 1)
    if after.strip():
        return None
    try:
        call = json.loads(inner)
    except json.JSONDecodeError:
        return None
    args = call.get("arguments") if isinstance(call, dict) else None
    if call.get("name") != "search" or not isinstance(args, dict) or not isinstance(args.get("query"), str):
        return None
    return args["query"]


def _answer_of(text: str) -> str | None:
    if ANSWER_OPEN not in text or ANSWER_CLOSE not in text.split(ANSWER_OPEN, 1)[1]:
        return None
    return text.split(ANSWER_OPEN, 1)[1].split(ANSWER_CLOSE, 1)[0].strip()


@torch.no_grad()
def probe_generation(model: Any, tokenizer: Any, chats: Sequence[Sequence[Mapping[str, str]]], *,
                     tools: Sequence[Mapping[str, Any]] | None = None,
                     max_new_tokens: int = 64) -> dict[str, float]:
    """Greedy-decode every assistant turn of some gold chats, each given the gold history.

    Teacher-forced history isolates per-turn skill from compounding errors. Returns fractions:
    ``probe/toolcall_wellformed`` (tool-call turns that produced a well-formed search call),
    ``probe/query_match`` (its query equals the gold query), ``probe/answer_em`` (final
    answers matching gold, case- and space-insensitive), ``probe/answer_wellformed``.
    """
    model.eval()
    device = next(model.parameters()).device
    stops = [tokenizer.convert_tokens_to_ids(IM_END)]
    counts = {"toolcall_turns": 0, "toolcall_wellformed": 0, "query_match": 0,
              "answer_turns": 0, "answer_wellformed": 0, "answer_em": 0}
    for chat in chats:
        for i, msg in enumerate(chat):
            if msg["role"] != "assistant":
                continue
            prompt = render(tokenizer, chat[:i], tools, add_generation_prompt=True)
            out = model.generate(torch.tensor([prompt], device=device), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                                 attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=device))
            text = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)
            gold_answer = _answer_of(msg["content"])
            if gold_answer is None:
                counts["toolcall_turns"] += 1
                query = _wellformed_search_call(text)
                counts["toolcall_wellformed"] += query is not None
                counts["query_match"] += query is not None and query == _wellformed_search_call(msg["content"])
            else:
                counts["answer_turns"] += 1
                answer = _answer_of(text)
                counts["answer_wellformed"] += answer is not None
                counts["answer_em"] += answer is not None and " ".join(answer.lower().split()) == \
                    " ".join(gold_answer.lower().split())
    tc, an = max(1, counts["toolcall_turns"]), max(1, counts["answer_turns"])
    return {"probe/toolcall_wellformed": counts["toolcall_wellformed"] / tc,
            "probe/query_match": counts["query_match"] / tc,
            "probe/answer_wellformed": counts["answer_wellformed"] / an,
            "probe/answer_em": counts["answer_em"] / an,
            "probe/turns": float(counts["toolcall_turns"] + counts["answer_turns"])}
