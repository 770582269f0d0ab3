"""Gold trajectories for the SFT warm start: search as planned, read, answer.

A gold trajectory is a chat in the agent protocol (docs/protocol.md) *without* the system
message: the SFT and rollout code add the system prompt and tool schemas through the chat
template, so the stored chat stays valid whatever prompt or tool set is configured later.

    user       <question>
    assistant  <tool_call>\n{"name": "search", "arguments": {"query": "..."}}\n</tool_call>
    tool       <search(query) text>
    ...        (one call + response per planned query)
    assistant  <answer> ANSWER</answer>
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from tirl.core.agent.protocol import format_answer, format_tool_call
from tirl.core.types import GOLD_COLUMNS, Message

log = logging.getLogger(__name__)

SEARCH_TOOL_NAME = "search"


def gold_messages(question: str, queries: Iterable[str], answer: str,
                  search: Callable[[str], str]) -> list[Message]:
    """The gold chat for one question (no system message).

    Tool calls and the answer are the protocol's own spellings (``format_tool_call``,
    ``format_answer``): non-ASCII is written as is, not ``\\u`` escaped, so a query is a plain
    copy of the question's entity, as the rollout's rendering writes it.
    """
    messages: list[Message] = [{"role": "user", "content": question}]
    for query in queries:
        call = format_tool_call(SEARCH_TOOL_NAME, {"query": query})
        messages.append({"role": "assistant", "content": call})
        messages.append({"role": "tool", "content": search(query)})
    messages.append({"role": "assistant", "content": format_answer(answer)})
    return messages


def _first_answer(answers: Any) -> str | None:
    for a in list(answers) if answers is not None else []:
        if isinstance(a, str) and a.strip():
            return a
    return None


def build_gold_trajectories(questions: pd.DataFrame,
                            plans: Mapping[str, Mapping[str, Any]],
                            search: Callable[[str], str], *,
                            splits: Iterable[str] = ("train", "val"),
                            fallback_to_question: bool = True) -> pd.DataFrame:
    """One gold trajectory per question of ``splits`` (a DataFrame with GOLD_COLUMNS).

    ``plans[question_id]`` gives ``{"queries": [...], "answer": str}`` (the world's plans).
    A question without a plan (external data) searches its own text once and answers its
    first gold answer when ``fallback_to_question``; otherwise it is skipped. Questions
    with no non-empty answer are skipped (validation reports them; a gold chat cannot be
    made for them). ``messages`` is stored as a JSON string so that parquet keeps one
    flat column. Long-form questions answer their reference (``answers[0]``).
    """
    wanted = set(splits)
    rows, skipped = [], 0
    for q in questions.itertuples(index=False):
        if q.split not in wanted:
            continue
        plan = plans.get(q.id)
        if plan is not None:
            queries, answer = list(plan["queries"]), plan["answer"]
        elif fallback_to_question:
            queries, answer = [q.question], _first_answer(q.answers)
        else:
            skipped += 1
            continue
        if not answer:
            skipped += 1
            continue
        messages = gold_messages(q.question, queries, answer, search)
        rows.append({"id": f"gold-{q.id}", "question_id": q.id,
                     "messages": json.dumps(messages, ensure_ascii=False)})
    if skipped:
        log.warning("gold trajectories: skipped %d questions without a plan or an answer",
                    skipped)
    return pd.DataFrame(rows, columns=list(GOLD_COLUMNS))


def searched_gold_trajectories(questions: pd.DataFrame, plans: Mapping[str, Mapping[str, Any]],
                               tool: Any, *, splits: Iterable[str] = ("train", "val"),
                               fallback_to_question: bool = True) -> pd.DataFrame:
    """:func:`build_gold_trajectories` with ``tool`` (a search tool with ``search_batch``)
    run once, batched, over every distinct query the chats need, instead of once per turn."""
    wanted = questions[questions["split"].isin(list(splits))]
    queries = {q for qid in wanted["id"] if qid in plans for q in plans[qid]["queries"]}
    if fallback_to_question:
        queries |= {q for qid, q in zip(wanted["id"], wanted["question"]) if qid not in plans}
    queries = sorted(queries)
    found = dict(zip(queries, tool.search_batch(queries))) if queries else {}
    return build_gold_trajectories(questions, plans, found.__getitem__, splits=splits,
                                   fallback_to_question=fallback_to_question)


def answer_coverage(gold: pd.DataFrame, questions: pd.DataFrame) -> float:
    """Fraction of short-form gold chats whose tool responses contain a gold answer.

    A sanity figure for the world and the retriever: gold SFT data whose searches do not
    surface the answer teaches the model to answer without evidence.
    """
    short = questions.set_index("id")
    hits = total = 0
    for g in gold.itertuples(index=False):
        q = short.loc[g.question_id]
        if q["task"] != "short":
            continue
        seen = " ".join(m["content"] for m in json.loads(g.messages) if m["role"] == "tool")
        total += 1
        hits += any(a and a.lower() in seen.lower() for a in q["answers"])
    return hits / total if total else float("nan")
