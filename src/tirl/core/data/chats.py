"""The data tables as the model reads them: gold chats, passages and tokenizer texts.

A stored gold chat has no system turn (docs/data.md): whoever trains on it prepends the
configured system prompt. The stages (``model_init``, ``sft``), the pretraining stream and
the scripts all turn tables into chats and texts here, so that the tokenizer, the LM phase
and SFT see the same text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

from tirl.core.agent.protocol import SYSTEM_PROMPT, default_tools, with_system
from tirl.core.modeling.factory import render_chats_as_text
from tirl.core.tools.search import passage_line
from tirl.core.types import Message

Chat = list[Message]


def require_columns(table: pd.DataFrame, name: str, columns: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the table and the columns it lacks."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing} (has {list(table.columns)})")


def parse_messages(value: Any, where: str) -> Chat:
    """A gold ``messages`` cell (JSON string, or already a list) as a list of messages.

    >>> parse_messages('[{"role": "user", "content": "Hi"}]', "row 0")
    [{'role': 'user', 'content': 'Hi'}]
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: messages is not valid JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                              for m in value):
        raise ValueError(f"{where}: messages must be a list of {{role, content}} objects")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


def gold_chats(gold_trajectories: pd.DataFrame, name: str = "gold_trajectories") -> list[Chat]:
    """The table's chats, in row order, with the system prompt prepended. A broken row
    names ``name`` and its id."""
    require_columns(gold_trajectories, name, ("id", "messages"))
    return [with_system(parse_messages(m, f"{name} row id={i!r}"))
            for i, m in zip(gold_trajectories["id"], gold_trajectories["messages"])]


def chats_by_split(gold_trajectories: pd.DataFrame, questions: pd.DataFrame) -> dict[str, list[Chat]]:
    """Gold chats grouped by their question's split (gold rows of unknown questions fail)."""
    require_columns(questions, "questions", ("id", "split"))
    require_columns(gold_trajectories, "gold_trajectories", ("question_id",))
    split_of = dict(zip(questions["id"], questions["split"]))
    unknown = sorted(set(gold_trajectories["question_id"]) - set(split_of))
    if unknown:
        raise ValueError(f"gold_trajectories: {len(unknown)} rows refer to unknown question ids, "
                         f"e.g. {unknown[:3]}")
    out: dict[str, list[Chat]] = {}
    for qid, chat in zip(gold_trajectories["question_id"], gold_chats(gold_trajectories)):
        out.setdefault(split_of[qid], []).append(chat)
    return out


def chats_with_qtype(gold_trajectories: pd.DataFrame,
                     questions: pd.DataFrame) -> list[tuple[str, Chat]]:
    """``(qtype, chat)`` for every gold row, in row order: the type of the row's question
    (for per-type metrics) and its chat as :func:`gold_chats` gives it."""
    require_columns(questions, "questions", ("id", "qtype"))
    require_columns(gold_trajectories, "gold_trajectories", ("question_id",))
    qtype_of = dict(zip(questions["id"], questions["qtype"]))
    return [(qtype_of[q], chat)
            for q, chat in zip(gold_trajectories["question_id"], gold_chats(gold_trajectories))]


def passage_texts(corpus: pd.DataFrame) -> list[str]:
    """Every corpus passage as the search tool lists a top hit, for LM and tokenizer training.

    Whole and as stored: the tool's whitespace squeezing and truncation are for the agent's
    context budget, not for these texts.
    """
    require_columns(corpus, "corpus", ("title", "text"))
    return [passage_line(1, t, x) for t, x in zip(corpus["title"], corpus["text"])]


def tokenizer_texts(corpus: pd.DataFrame, questions: pd.DataFrame,
                    gold_trajectories: pd.DataFrame) -> list[str]:
    """Everything a from-scratch tokenizer should compress well: passages as the search tool
    prints them, questions and answers, gold chats rendered by the chat template, and the
    system prompt."""
    require_columns(corpus, "corpus", ("title", "text"))
    require_columns(questions, "questions", ("question", "answers"))
    require_columns(gold_trajectories, "gold_trajectories", ("id", "messages"))
    texts = passage_texts(corpus)
    texts += [str(q) for q in questions["question"]]
    texts += [" ".join(map(str, a)) for a in questions["answers"]]
    texts += render_chats_as_text(gold_chats(gold_trajectories), default_tools())
    texts.append(SYSTEM_PROMPT)
    return texts
