"""sft on an in-memory catalog with the tiny model: outputs and metrics."""

from __future__ import annotations

import json

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tirl.pipelines.sft import create_pipeline
from tirl.pipelines.sft.nodes import run_sft


def _test_params():
    from pathlib import Path

    path = Path(__file__).parents[3] / "conf" / "test" / "parameters_sft.yml"
    return yaml.safe_load(path.read_text())["sft"]


def test_pipeline_runs_with_test_params(tiny_tables, fresh_tiny_model, tiny_tokenizer):
    corpus, questions, gold = tiny_tables
    catalog = DataCatalog({
        "base_model": MemoryDataset({"model": fresh_tiny_model, "tokenizer": tiny_tokenizer}, copy_mode="assign"),
        "gold_trajectories": MemoryDataset(gold), "practice_trajectories": MemoryDataset(gold.iloc[:0]),
        "corpus": MemoryDataset(corpus),
        "questions": MemoryDataset(questions), "params:sft": MemoryDataset(_test_params()),
        "sft_model": MemoryDataset(copy_mode="assign"), "sft_metrics": MemoryDataset(),
        "sft_timings": MemoryDataset()})
    SequentialRunner().run(create_pipeline(), catalog)
    out, metrics = catalog.load("sft_model"), catalog.load("sft_metrics")
    assert out["tokenizer"] is tiny_tokenizer and out["model"] is not None
    assert metrics["sft/steps"] == 4.0 and metrics["sft/pretrain_steps"] == 2.0
    assert [h["step"] for h in metrics["history"]] == [0, 1, 2, 3, 4, 5]
    assert "sft/probe/train/answer_em" in metrics
    json.dumps(metrics)  # the JSON dataset must be able to write it


def test_bad_param_names_the_key(tiny_tables, tiny_model, tiny_tokenizer):
    corpus, questions, gold = tiny_tables
    with pytest.raises(Exception, match="sft.batch_sise"):
        run_sft({"model": tiny_model, "tokenizer": tiny_tokenizer}, gold, gold.iloc[:0], corpus, questions,
                {"batch_sise": 2})


def test_only_train_split_is_trained_on(tiny_tables, tiny_model, tiny_tokenizer):
    import copy

    corpus, questions, gold = tiny_tables
    questions.loc[0, "split"] = "val"
    base = {"model": copy.deepcopy(tiny_model), "tokenizer": tiny_tokenizer}
    _, metrics, timings = run_sft(base, gold, gold.iloc[:0], corpus, questions,
                                  {**_test_params(), "probe_size": 0})
    assert metrics["sft/examples"] == len(gold) - 1
    # Seconds and tokens/s are measurements: in sft_timings, never in the metrics file.
    assert "sft/train_seconds" in timings and "sft/train_seconds" not in metrics
    assert not any("tokens_per_s" in k for row in metrics["history"] for k in row)
    assert all(any(k.endswith("tokens_per_s") for k in row) for row in timings["history"])


def test_practice_chats_join_the_phases_they_are_named_for(tiny_tables, tiny_model, tiny_tokenizer):
    """Practice chats (other worlds) add SFT examples and LM rows only where configured; a
    broken practice row names its table and id."""
    import copy

    corpus, questions, gold = tiny_tables
    practice = gold.assign(id=[f"practice-{i}" for i in gold["id"]],
                           question_id=[f"practice-{q}" for q in gold["question_id"]])
    params = {**_test_params(), "probe_size": 0}

    def run(phases, table):
        model = {"model": copy.deepcopy(tiny_model), "tokenizer": tiny_tokenizer}
        return run_sft(model, gold, table, corpus, questions, {**params, "practice_phases": phases})[1]

    alone, both, lm_only = run([], practice), run(["pretrain", "sft"], practice), run(["pretrain"], practice)
    assert both["sft/examples"] == 2 * alone["sft/examples"] == 2 * lm_only["sft/examples"]
    assert both["sft/pretrain/rows"] > alone["sft/pretrain/rows"]
    assert lm_only["sft/pretrain/rows"] == both["sft/pretrain/rows"]
    with pytest.raises(Exception, match="practice_phases"):
        run(["warmup"], practice)
    broken = practice.copy()
    broken.loc[0, "messages"] = "not json"
    with pytest.raises(ValueError, match="practice_trajectories row id='practice-"):
        run(["sft"], broken)
