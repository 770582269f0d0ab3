"""Tables -> chats and texts: the one place stages and scripts build them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tirl.core.agent import protocol as P
from tirl.core.data.chats import (
    chats_by_split, gold_chats, parse_messages, passage_texts, tokenizer_texts,
)
from tirl.core.tools.search import format_passages
from tirl.core.tools.search_backends import Passage


def test_passages_are_written_as_the_search_tool_lists_a_top_hit(tiny_tables):
    corpus, _, _ = tiny_tables
    texts = passage_texts(corpus)
    assert texts[2] == "Doc 1 (Title: Ostmark) The capital of Ostmark is Velden, a river city."
    assert texts == [format_passages([Passage(i, t, x)])
                     for i, t, x in zip(corpus["id"], corpus["title"], corpus["text"])]


def test_passages_stay_whole_and_as_stored():
    corpus = pd.DataFrame({"id": ["p"], "title": ["T"], "text": ["line one\nline  two " + "w " * 500]})
    assert passage_texts(corpus) == ["Doc 1 (Title: T) line one\nline  two " + "w " * 500]


def test_gold_chats_get_the_system_prompt_once(tiny_tables):
    _, _, gold = tiny_tables
    stored = gold.assign(messages=[json.dumps(json.loads(m)[1:]) for m in gold["messages"]])
    for table in (gold, stored):  # with and without a stored system turn
        chats = gold_chats(table)
        assert len(chats) == len(gold)
        assert all(c[0] == {"role": "system", "content": P.SYSTEM_PROMPT} for c in chats)
        assert all(c[1]["role"] == "user" for c in chats)


def test_a_broken_row_names_its_table_and_id(tiny_tables):
    _, _, gold = tiny_tables
    gold.loc[1, "messages"] = "{not json"
    with pytest.raises(ValueError, match="practice row id='g1': messages is not valid JSON"):
        gold_chats(gold, "practice")
    with pytest.raises(ValueError, match="list of {role, content}"):
        parse_messages([{"role": "user"}], "row")
    assert parse_messages([{"role": "user", "content": 3, "extra": 1}], "row") == \
        [{"role": "user", "content": "3"}]


def test_chats_by_split_keeps_row_order_and_rejects_unknown_questions(tiny_tables):
    _, questions, gold = tiny_tables
    questions.loc[0, "split"] = "val"
    by_split = chats_by_split(gold, questions)
    assert len(by_split["val"]) == 1 and len(by_split["train"]) == len(gold) - 1
    assert by_split["val"][0] == gold_chats(gold)[0]
    assert by_split["train"] == gold_chats(gold)[1:]
    gold.loc[0, "question_id"] = "nope"
    with pytest.raises(ValueError, match="unknown question ids"):
        chats_by_split(gold, questions)


def test_tokenizer_texts_hold_passages_questions_answers_chats_and_the_prompt(tiny_tables):
    corpus, questions, gold = tiny_tables
    texts = tokenizer_texts(corpus, questions, gold)
    n = len(corpus)
    assert texts[:n] == passage_texts(corpus)
    assert texts[n:2 * n] == list(questions["question"])
    assert texts[2 * n:3 * n] == [" ".join(a) for a in questions["answers"]]
    rendered = texts[3 * n:-1]
    assert len(rendered) == len(gold)
    assert all(t.startswith("<|im_start|>system\n") and "<tool_response>" in t for t in rendered)
    assert texts[-1] == P.SYSTEM_PROMPT


@pytest.mark.parametrize("table, column", [("corpus", "text"), ("questions", "answers"),
                                           ("gold_trajectories", "messages")])
def test_a_missing_column_names_the_table(tiny_tables, table, column):
    corpus, questions, gold = tiny_tables
    tables = {"corpus": corpus, "questions": questions, "gold_trajectories": gold}
    tables[table] = tables[table].drop(columns=[column])
    with pytest.raises(ValueError, match=f"^{table}: missing columns"):
        tokenizer_texts(tables["corpus"], tables["questions"], tables["gold_trajectories"])
