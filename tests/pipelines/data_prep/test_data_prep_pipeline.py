"""The data_prep pipeline on a file-backed catalog: built-in world, the real NQ sample, and
broken variants that must stop the run without touching earlier outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tirl.core.config import ConfigError
from tirl.core.data.loaders import DataFormatError
from tirl.core.data.validation import DataValidationError
from tirl.core.types import GOLD_COLUMNS, PASSAGE_COLUMNS, QUESTION_COLUMNS
from tirl.pipelines.data_prep.nodes import build_data_prep_config

ROOT = Path(__file__).resolve().parents[3]
NQ_SAMPLE = ROOT / "tests" / "fixtures" / "flashrag_nq_test_sample.jsonl"
OUTPUTS = ("questions", "corpus", "gold_trajectories", "practice_trajectories", "world_kb",
           "data_validation_report")
PRIMARY = ("questions", "corpus", "gold_trajectories", "world_kb")


def test_world_run_writes_validated_tables(world_run):
    root, catalog, params = world_run
    report = catalog.load("data_validation_report")
    assert report["success"] and set(report["tables"]) == {"questions", "corpus", "gold"}
    questions = catalog.load("questions")
    corpus = catalog.load("corpus")
    gold = catalog.load("gold_trajectories")
    assert tuple(questions.columns) == QUESTION_COLUMNS
    assert tuple(corpus.columns) == PASSAGE_COLUMNS
    assert tuple(gold.columns) == GOLD_COLUMNS
    assert set(questions["split"]) == {"train", "val", "test_in_domain", "test_ood"}
    in_gold = questions.set_index("id").loc[gold["question_id"], "split"]
    assert set(in_gold) == {"train", "val"}
    n_wanted = sum(sum(params["world"]["questions"][s].values()) for s in ("train", "val"))
    assert len(gold) == n_wanted
    chat = json.loads(gold.iloc[0]["messages"])
    assert chat[0]["role"] == "user" and chat[-1]["content"].startswith("<answer>")
    assert chat[2]["role"] == "tool" and chat[2]["content"].startswith("Doc 1 (Title: ")
    kb = catalog.load("world_kb")
    assert set(kb["plans"]) == set(questions["id"])


def test_same_params_give_byte_identical_outputs(world_run, tmp_path, data_prep_runner,
                                                 output_paths):
    root, _, params = world_run
    data_prep_runner(tmp_path, params)
    first, again = output_paths(root), output_paths(tmp_path)
    for name in PRIMARY:
        assert first[name].read_bytes() == again[name].read_bytes(), name


def test_real_nq_sample_runs_as_a_flashrag_source(params, tmp_path, data_prep_runner):
    params["source"] = "flashrag"
    params["flashrag"]["questions_path"] = str(NQ_SAMPLE)
    catalog = data_prep_runner(tmp_path, params)
    assert catalog.load("data_validation_report")["success"]
    questions = catalog.load("questions")
    nq = questions[questions["source"] == "flashrag"]
    assert len(nq) == 17 and set(nq["split"]) == {"test"}
    # The world's questions are kept by default so that SFT/RL still have training data.
    assert (questions["split"] == "train").any()


def test_user_file_alone(params, tmp_path, data_prep_runner):
    params["source"] = "flashrag"
    params["flashrag"].update(questions_path=str(NQ_SAMPLE), keep_world_questions=False,
                              split="train")
    catalog = data_prep_runner(tmp_path, params)
    assert len(catalog.load("questions")) == 17
    gold = catalog.load("gold_trajectories")
    assert len(gold) == 17  # no plan: one search for the question text, answer the gold


def _lines(mutate):
    lines = NQ_SAMPLE.read_bytes().splitlines()
    recs = [json.loads(line) for line in lines]
    mutate(recs)
    return "\n".join(json.dumps(r) for r in recs).encode()


def _set(i, **kv):
    def mutate(recs):
        recs[i].update(kv)
    return mutate


BROKEN = {
    "missing_golden_answers": (_lines(lambda r: r[3].pop("golden_answers")), DataFormatError,
                               r"broken.jsonl:4: missing key 'golden_answers'"),
    "wrong_type": (_lines(_set(5, golden_answers=1)), DataFormatError,
                   r"broken.jsonl:6: key 'golden_answers' must be a string or a list"),
    "invalid_utf8": (NQ_SAMPLE.read_bytes().replace(b"deadpool", b"dead\xe9pool"),
                     DataFormatError, r"broken.jsonl:2: invalid UTF-8"),
    "empty_file": (b"", DataFormatError, r"broken.jsonl: empty file"),
    # Validation failures cite the file line too (issue 15, item 10), not only the table row
    # (the world's questions come first in the table).
    "empty_question": (_lines(_set(2, question="")), DataValidationError,
                       r"ExpectColumnValuesToBeBetween\(column='question_len'\).*id='test_2', "
                       r"value=0\) at \S*broken.jsonl:3"),
    "duplicate_id": (_lines(_set(9, id="test_8")), DataValidationError,
                     r"ExpectColumnValuesToBeUnique\(column='id'\).*id='test_8'.* at "
                     r"\S*broken.jsonl:9.*id='test_8'.* at \S*broken.jsonl:10"),
}


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_broken_variant_fails_and_leaves_outputs_untouched(world_run, tmp_path, params,
                                                           data_prep_runner, output_paths,
                                                           variant):
    content, error, match = BROKEN[variant]
    root, _, _ = world_run
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    paths = output_paths(tmp_path)
    before = {name: paths[name].read_bytes() for name in OUTPUTS}
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(content)
    params["source"] = "flashrag"
    params["flashrag"]["questions_path"] = str(broken)

    with pytest.raises(error, match=match):
        data_prep_runner(tmp_path, params)

    for name in PRIMARY:
        assert paths[name].read_bytes() == before[name], f"{name} was rewritten"
    report_now = paths["data_validation_report"].read_bytes()
    if error is DataValidationError:
        # The report of the failed run is saved: it says which expectation failed.
        report = json.loads(report_now)
        assert not report["success"] and not report["tables"]["questions"]["success"]
    else:
        # A file that cannot be read is refused before validation; no new report.
        assert report_now == before["data_validation_report"]


def test_flashrag_without_a_path_is_a_config_error(params):
    params["source"] = "flashrag"
    with pytest.raises(ConfigError, match="flashrag.questions_path is not set"):
        build_data_prep_config(params)


def test_unknown_corpus_source_is_a_config_error(params):
    params["corpus"] = "world+web"
    with pytest.raises(ConfigError, match="corpus: 'web' is not one of"):
        build_data_prep_config(params)


def test_test_env_keeps_the_base_validation_suites():
    import yaml

    base = yaml.safe_load((ROOT / "conf/base/parameters_data_prep.yml").read_text())
    test = yaml.safe_load((ROOT / "conf/test/parameters_data_prep.yml").read_text())
    assert test["data_prep"]["validation"] == base["data_prep"]["validation"]
    assert set(test["data_prep"]) == set(base["data_prep"])


def test_user_corpus_and_wiki_corpus_without_the_world(params, tmp_path, data_prep_runner):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "c1", "contents": '"Röntgen"\nRöntgen won the first '
                                  'Nobel Prize in Physics.'}) + "\n", encoding="utf-8")
    wiki = tmp_path / "summaries_en-us.json"
    wiki.write_text(json.dumps({"Physics": {"title": "Physics", "extract": "Physics is a "
                                            "science.", "topic": "Science"}}))
    params["source"] = "flashrag"
    params["corpus"] = "flashrag+wiki"
    params["flashrag"].update(questions_path=str(NQ_SAMPLE), corpus_path=str(corpus),
                              keep_world_questions=False, split="train")
    params["wiki"]["path"] = str(wiki)
    catalog = data_prep_runner(tmp_path / "out", params)
    assert catalog.load("corpus")["id"].tolist() == ["c1", "wiki-00000"]
    assert catalog.load("world_kb")["entities"] == []
    chat = json.loads(catalog.load("gold_trajectories").iloc[0]["messages"])
    assert chat[2]["content"].startswith("Doc 1 (Title: Röntgen) Röntgen won")


def test_corpus_row_without_a_title_line_says_so_at_its_file_line(params, tmp_path,
                                                                  data_prep_runner):
    """Issue 15, item 10: a FlashRAG contents of one line is a title with no text; the failure
    names the file line and says what is wrong, not only ``text_len value=0``."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "p1", "contents": '"Paris"\nParis is in France.'})
                      + "\n\n" + json.dumps({"id": "p2", "contents": "Rome is in Italy."}) + "\n")
    params["source"] = "flashrag"
    params["flashrag"].update(questions_path=str(NQ_SAMPLE), corpus_path=str(corpus))
    with pytest.raises(DataValidationError) as err:
        data_prep_runner(tmp_path, params)
    line = next(ln for ln in str(err.value).splitlines() if "column='text_len'" in ln)
    assert f"row 1 (id='p2', value=0) at {corpus}:3" in line
    assert "the first line of 'contents' is the title" in line
