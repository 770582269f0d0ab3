"""The inspect_rollouts stage on an in-memory catalog with the tiny model; the catalog's file round
trip; GX."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tirl.core.config import build_config
from tirl.core.data.validation import DataValidationError
from tirl.core.types import FINISH_REASONS
from tirl.datasets.trajectories import TrajectoryDataset
from tirl.pipelines.inspect_rollouts.nodes import RolloutStageConfig, generate_rollouts, validate_rollouts
from tirl.pipelines.inspect_rollouts.pipeline import create_pipeline

ROOT = Path(__file__).resolve().parents[3]

QUESTIONS = pd.DataFrame([
    {"id": f"q{i}", "question": q, "answers": [a], "split": split, "task": "short",
     "qtype": "single_hop", "facts": [], "source": "world"}
    for i, (q, a, split) in enumerate([
        ("Where was Alice Marlow born?", "Norvale", "train"),
        ("Who founded Kestrel Works?", "Brin Adler", "train"),
        ("What is the capital of Ostmark?", "Velden", "val"),
    ])])
CORPUS = pd.DataFrame({"id": ["1", "2"], "title": ["Alice Marlow", "Kestrel Works"],
                       "text": ["Alice Marlow was born in Norvale in 1931.",
                                "Kestrel Works was founded by Brin Adler in 1902."]})


def _params():
    return yaml.safe_load((ROOT / "conf/test/parameters_inspect_rollouts.yml").read_text())["inspect_rollouts"]


def _agent():
    return yaml.safe_load((ROOT / "conf/test/parameters_agent.yml").read_text())["agent"]


@pytest.fixture(scope="module")
def run(tiny_model, tiny_tokenizer):
    torch.set_num_threads(1)
    catalog = DataCatalog({
        "sft_model": MemoryDataset({"model": tiny_model, "tokenizer": tiny_tokenizer}, copy_mode="assign"),
        "questions": MemoryDataset(QUESTIONS),
        "corpus": MemoryDataset(CORPUS),
        "params:inspect_rollouts": MemoryDataset(_params()),
        "params:agent": MemoryDataset(_agent()),
        "inspect_rollouts_trajectories": MemoryDataset(),
        "inspect_rollouts_stats": MemoryDataset(),
        "inspect_rollouts_sample": MemoryDataset(),
    })
    SequentialRunner().run(create_pipeline(), catalog)
    return {k: catalog[k].load() for k in ("inspect_rollouts_trajectories", "inspect_rollouts_stats", "inspect_rollouts_sample")}


def test_pipeline_writes_validated_trajectories(run, tmp_path):
    trajectories, stats, sample = (run["inspect_rollouts_trajectories"], run["inspect_rollouts_stats"],
                                   run["inspect_rollouts_sample"])
    assert len(trajectories) == 2 * 2  # two train questions x group_size 2
    assert {t.question_id for t in trajectories} == {"q0", "q1"}
    assert stats["validation"]["success"] is True
    assert stats["rollout/trajectories"] == 4
    assert sum(stats[f"rollout/finish/{r}"] for r in FINISH_REASONS) == 4
    assert stats["rollout/generated_tokens"] == sum(sum(t.mask) for t in trajectories)
    assert "rollout/generated_tokens_per_s" in stats
    assert sample.startswith("# Rollout sample") and "**assistant**" in sample
    # the file round trip, as the catalog writes it
    dataset = TrajectoryDataset(filepath=str(tmp_path / "rollouts.parquet"))
    dataset.save(trajectories)
    back = dataset.load()
    assert back == trajectories
    assert back[0].messages[1]["role"] == "user" and isinstance(back[0].turns[0], dict)


def test_validation_names_the_broken_rows(run):
    broken = list(run["inspect_rollouts_trajectories"])
    broken[1] = dataclasses.replace(broken[1], mask=broken[1].mask[:-1])
    broken[2] = dataclasses.replace(broken[2], finish_reason="timeout")
    with pytest.raises(DataValidationError) as err:
        validate_rollouts(broken, {}, _params())
    msg = str(err.value)
    assert "ExpectColumnPairValuesToBeEqual failed: 1 offending rows; e.g. row 1" in msg
    assert "finish_reason" in msg and "q1#0" in msg


def test_stage_parameters_build():
    base = yaml.safe_load((ROOT / "conf/base/parameters_inspect_rollouts.yml").read_text())["inspect_rollouts"]
    config = build_config(RolloutStageConfig, base, "inspect_rollouts")
    assert config.group_size == 5 and config.sampling.temperature == 1.0
    build_config(RolloutStageConfig, _params(), "inspect_rollouts")


def test_unknown_split_is_a_clear_error(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="inspect_rollouts.split"):
        generate_rollouts({"model": tiny_model, "tokenizer": tiny_tokenizer}, QUESTIONS, CORPUS,
                          {**_params(), "split": "test_ood"}, _agent())
