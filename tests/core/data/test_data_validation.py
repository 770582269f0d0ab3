"""GX validation with the suites declared in conf/base: the real NQ sample passes; each broken
variant fails naming the expectation and the offending rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tirl.core.data import loaders as L
from tirl.core.data import validation as V


def _questions_report(df, suites):
    return V.validate(V.derive_questions(df), suites["questions"], "questions")


def _failed(report):
    return [(e["expectation"], e["kwargs"].get("column")) for e in report["expectations"]
            if not e["success"]]


@pytest.fixture
def nq_df(nq_path):
    return L.load_flashrag_questions(nq_path)


def test_real_nq_sample_passes(nq_df, suites):
    report = _questions_report(nq_df, suites)
    assert report["success"], _failed(report)
    assert report["n_rows"] == len(nq_df)
    assert len(report["expectations"]) == len(suites["questions"])
    json.dumps(report)  # the report is saved as JSON


def test_empty_question_fails_naming_row_and_id(nq_df, nq_path, suites):
    nq_df.at[4, "question"] = "   "
    report = _questions_report(nq_df, suites)
    assert _failed(report) == [("ExpectColumnValuesToBeBetween", "question_len")]
    bad = next(e for e in report["expectations"] if not e["success"])
    assert bad["unexpected_count"] == 1
    assert bad["examples"] == [{"row": 4, "id": "test_4", "value": 0, "at": f"{nq_path}:5"}]
    with pytest.raises(V.DataValidationError) as err:
        V.raise_if_failed(report)
    msg = str(err.value)
    assert "ExpectColumnValuesToBeBetween(column='question_len')" in msg and "test_4" in msg
    assert f"at {nq_path}:5" in msg  # the file line, not only the table row
    assert err.value.report is not None and not err.value.report["success"]


def test_duplicate_id_fails_listing_both_rows(nq_df, suites):
    nq_df.at[7, "id"] = "test_3"
    report = _questions_report(nq_df, suites)
    assert _failed(report) == [("ExpectColumnValuesToBeUnique", "id")]
    bad = next(e for e in report["expectations"] if not e["success"])
    assert [e["row"] for e in bad["examples"]] == [3, 7]
    assert {e["id"] for e in bad["examples"]} == {"test_3"}


@pytest.mark.parametrize("answers", [[], [""], ["  ", ""]])
def test_no_non_empty_answer_fails(nq_df, suites, answers):
    nq_df.at[2, "answers"] = answers
    report = _questions_report(nq_df, suites)
    assert ("ExpectColumnValuesToBeBetween", "n_answers") in _failed(report)


def test_non_string_answer_fails_the_type_check(nq_df, suites):
    nq_df.at[1, "answers"] = [2018]
    report = _questions_report(nq_df, suites)
    assert ("ExpectColumnValuesToBeInSet", "answers_are_strings") in _failed(report)


def test_unknown_split_and_task(nq_df, suites):
    nq_df.at[0, "split"] = "dev"
    nq_df.at[1, "task"] = "medium"
    failed = _failed(_questions_report(nq_df, suites))
    assert ("ExpectColumnValuesToBeInSet", "split") in failed
    assert ("ExpectColumnValuesToBeInSet", "task") in failed


def test_same_question_in_two_splits_is_leakage(nq_df, suites):
    extra = nq_df.iloc[[0]].assign(id="copy", split="train")
    report = _questions_report(pd.concat([nq_df, extra], ignore_index=True), suites)
    assert _failed(report) == [("ExpectColumnValuesToBeInSet", "question_in_other_split")]


def test_empty_table_fails(nq_df, suites):
    report = _questions_report(nq_df.iloc[:0], suites)
    assert ("ExpectTableRowCountToBeBetween", None) in _failed(report)


def test_corpus_duplicate_id_and_empty_passage(suites):
    corpus = pd.DataFrame({"id": ["a", "b", "b"], "title": ["A", "B", "C"],
                           "text": ["some text", "", "more text"]})
    report = V.validate(V.derive_corpus(corpus), suites["corpus"], "corpus")
    failed = _failed(report)
    assert ("ExpectColumnValuesToBeUnique", "id") in failed
    assert ("ExpectColumnValuesToBeBetween", "text_len") in failed


def test_gold_checks(suites):
    good = json.dumps([{"role": "user", "content": "q"},
                       {"role": "assistant", "content": "<tool_call>\n{}\n</tool_call>"},
                       {"role": "tool", "content": "Doc 1"},
                       {"role": "assistant", "content": "<answer>x</answer>"}])
    no_answer = json.dumps([{"role": "user", "content": "q"}])
    gold = pd.DataFrame({"id": ["g1", "g2", "g3"], "question_id": ["q1", "q2", "zz"],
                         "messages": [good, no_answer, "not json"]})
    report = V.validate(V.derive_gold(gold, ["q1", "q2"]), suites["gold"], "gold")
    failed = dict((c, [e["row"] for e in r["examples"]]) for r in report["expectations"]
                  if not r["success"] for c in [r["kwargs"].get("column")])
    assert failed["messages_ok"] == [2]
    assert failed["question_known"] == [2]
    assert failed["ends_with_answer"] == [1, 2]


def test_unknown_expectation_lists_known_names(nq_df):
    match = (r"validation.questions\[0\]: unknown expectation 'ExpectNothing' "
             r"\(known: .*ExpectColumnValuesToBeUnique")
    with pytest.raises(ValueError, match=match):
        V.validate(nq_df, [{"expectation": "ExpectNothing"}], "questions")


def test_bad_kwargs_name_the_item(nq_df):
    with pytest.raises(ValueError, match=r"validation.questions\[0\]: bad kwargs"):
        V.validate(nq_df, [{"expectation": "ExpectColumnValuesToBeUnique",
                            "kwargs": {"colum": "id"}}], "questions")


def test_missing_column_is_a_failure_not_a_crash(nq_df):
    report = V.validate(nq_df, [{"expectation": "ExpectColumnValuesToBeUnique",
                                 "kwargs": {"column": "nope"}}], "questions")
    assert not report["success"]
    assert "nope" in V.failure_message(report)


# --- file lines and hints (issue 15, item 10) ------------------------------------------------


def test_corpus_row_without_title_line_names_its_file_line_and_says_why(tmp_path, suites,
                                                                         write_jsonl):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"id": "p1", "contents": '"Paris"\nParis is in France.'})
                    + "\n\n" + json.dumps({"id": "p2", "contents": "Rome is in Italy."}) + "\n")
    corpus = L.load_flashrag_corpus(path)
    report = V.validate(V.derive_corpus(corpus), suites["corpus"], "corpus")
    bad = next(e for e in report["expectations"] if e["kwargs"].get("column") == "text_len")
    assert bad["examples"] == [{"row": 1, "id": "p2", "value": 0, "at": f"{path}:3"}]
    assert "first line of 'contents' is the title" in bad["hint"]
    msg = V.failure_message({"success": False, "tables": {"corpus": report}})
    line = next(ln for ln in msg.splitlines() if "column='text_len'" in ln)
    assert f"row 1 (id='p2', value=0) at {path}:3" in line and "hint: " in line


def test_rows_not_read_from_a_file_cite_no_line(nq_df, suites):
    """A table changed after loading (rows dropped) no longer matches the loader's lines: no
    line is cited rather than a wrong one."""
    changed = nq_df.drop(index=[0]).copy()
    changed.at[4, "question"] = ""
    report = _questions_report(changed, suites)
    bad = next(e for e in report["expectations"] if not e["success"])
    assert bad["examples"] == [{"row": 3, "id": "test_4", "value": 0, "at": None}]


def test_concatenated_tables_keep_each_rows_file_line(nq_df, nq_path):
    world = pd.DataFrame({"id": ["w1"], "question": ["q?"]})
    both = L.concat_tables([world, nq_df[["id", "question"]]])
    assert L.row_origins(both)[:3] == [None, f"{nq_path}:1", f"{nq_path}:2"]
