"""Gold trajectories: exact protocol text, one call per planned query, no system message."""

from __future__ import annotations

import json

import pandas as pd

from tirl.core.agent.parsers import parse
from tirl.core.agent.protocol import format_tool_call
from tirl.core.data.gold import answer_coverage, build_gold_trajectories, gold_messages
from tirl.core.types import GOLD_COLUMNS, QUESTION_COLUMNS


def _questions(rows):
    base = {"split": "train", "task": "short", "qtype": "bridge", "facts": [], "source": "world"}
    return pd.DataFrame([{**base, **r} for r in rows], columns=list(QUESTION_COLUMNS))


def fake_search(query: str) -> str:
    return f"Doc 1 (Title: {query}) about {query}"


def test_bridge_plan_becomes_two_calls_then_answer():
    qs = _questions([{"id": "q1", "question": "In which country was Ana Bel born?",
                      "answers": ["Ostland"]}])
    plans = {"q1": {"queries": ["Ana Bel", "Norvale"], "answer": "Ostland"}}
    gold = build_gold_trajectories(qs, plans, fake_search)
    assert tuple(gold.columns) == GOLD_COLUMNS
    assert gold.iloc[0][["id", "question_id"]].tolist() == ["gold-q1", "q1"]
    assert json.loads(gold.iloc[0]["messages"]) == [
        {"role": "user", "content": "In which country was Ana Bel born?"},
        {"role": "assistant", "content":
            '<tool_call>\n{"name": "search", "arguments": {"query": "Ana Bel"}}\n</tool_call>'},
        {"role": "tool", "content": "Doc 1 (Title: Ana Bel) about Ana Bel"},
        {"role": "assistant", "content":
            '<tool_call>\n{"name": "search", "arguments": {"query": "Norvale"}}\n</tool_call>'},
        {"role": "tool", "content": "Doc 1 (Title: Norvale) about Norvale"},
        {"role": "assistant", "content": "<answer> Ostland</answer>"},
    ]


def test_tool_call_is_the_protocol_spelling_and_parses_back():
    for query in ('say "hi"', "Zoë Ørsted"):
        text = gold_messages("q?", [query], "a", fake_search)[1]["content"]
        assert text == format_tool_call("search", {"query": query})
        body = text.split("\n")[1]
        assert json.loads(body)["arguments"]["query"] == query
        turn = parse(text)
        assert [c.arguments["query"] for c in turn.tool_calls] == [query]
    # Non-ASCII is written as is, so the query is a plain copy of the question's entity.
    assert "Zoë Ørsted" in gold_messages("q?", ["Zoë Ørsted"], "a", fake_search)[1]["content"]


def test_only_requested_splits_and_fallback_for_external_questions():
    qs = _questions([
        {"id": "t", "question": "q train", "answers": ["a"]},
        {"id": "e", "question": "who wrote x", "answers": ["", "Y"], "split": "val",
         "qtype": "external"},
        {"id": "x", "question": "q test", "answers": ["b"], "split": "test"},
        {"id": "n", "question": "no answer", "answers": [""]},
    ])
    gold = build_gold_trajectories(qs, {"t": {"queries": ["k"], "answer": "a"}}, fake_search)
    assert gold["question_id"].tolist() == ["t", "e"]  # test split skipped; "n" has no answer
    ext = json.loads(gold.iloc[1]["messages"])
    assert '"query": "who wrote x"' in ext[1]["content"]
    assert ext[-1]["content"] == "<answer> Y</answer>"
    assert all(m["role"] != "system" for m in ext)


def test_answer_coverage():
    qs = _questions([{"id": "a", "question": "q", "answers": ["Norvale"]},
                     {"id": "b", "question": "q2", "answers": ["Zed"]}])
    plans = {"a": {"queries": ["Norvale"], "answer": "Norvale"},
             "b": {"queries": ["other"], "answer": "Zed"}}
    gold = build_gold_trajectories(qs, plans, fake_search)
    assert answer_coverage(gold, qs) == 0.5
