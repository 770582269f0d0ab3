"""The rollout stage on an in-memory catalog with the tiny model; parquet round trip; GX."""

from __future__ import annotations

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
from tirl.pipelines.rollout.nodes import (
    RolloutStageConfig,
    frame_to_trajectories,
    trajectories_to_frame,
    validate_rollouts,
)
from tirl.pipelines.rollout.pipeline import create_pipeline

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
    return yaml.safe_load((ROOT / "conf/test/parameters_rollout.yml").read_text())["rollout"]


def _agent():
    return yaml.safe_load((ROOT / "conf/test/parameters_agent.yml").read_text())["agent"]


@pytest.fixture(scope="module")
def run(tiny_model, tiny_tokenizer):
    torch.set_num_threads(1)
    catalog = DataCatalog({
        "sft_model": MemoryDataset({"model": tiny_model, "tokenizer": tiny_tokenizer}, copy_mode="assign"),
        "questions": MemoryDataset(QUESTIONS),
        "corpus": MemoryDataset(CORPUS),
        "params:rollout": MemoryDataset(_params()),
        "params:agent": MemoryDataset(_agent()),
        "rollout_trajectories": MemoryDataset(),
        "rollout_stats": MemoryDataset(),
        "rollout_sample": MemoryDataset(),
    })
    SequentialRunner().run(create_pipeline(), catalog)
    return {k: catalog[k].load() for k in ("rollout_trajectories", "rollout_stats", "rollout_sample")}


def test_pipeline_writes_validated_trajectories(run, tmp_path):
    df, stats, sample = run["rollout_trajectories"], run["rollout_stats"], run["rollout_sample"]
    assert len(df) == 2 * 2  # two train questions x group_size 2
    assert set(df["question_id"]) == {"q0", "q1"}
    assert stats["validation"]["success"] is True
    assert stats["rollout/trajectories"] == 4
    assert sum(stats[f"rollout/finish/{r}"] for r in FINISH_REASONS) == 4
    assert stats["rollout/generated_tokens"] == sum(sum(m) for m in df["mask"])
    assert "rollout/generated_tokens_per_s" in stats
    assert sample.startswith("# Rollout sample") and "**assistant**" in sample
    # parquet round trip, as the catalog writes it
    path = tmp_path / "rollouts.parquet"
    df.to_parquet(path)
    back = frame_to_trajectories(pd.read_parquet(path))
    assert [t.token_ids for t in back] == [list(v) for v in df["token_ids"]]
    assert back[0].messages[1]["role"] == "user" and isinstance(back[0].turns[0], dict)
    assert trajectories_to_frame(back)["turns"].tolist() == df["turns"].tolist()


def test_validation_names_the_broken_rows(run):
    df = run["rollout_trajectories"].copy()
    df.at[1, "mask"] = list(df.at[1, "mask"])[:-1]
    df.at[2, "finish_reason"] = "timeout"
    with pytest.raises(DataValidationError) as err:
        validate_rollouts(df, {}, _params())
    msg = str(err.value)
    assert "ExpectColumnPairValuesToBeEqual failed: 1 offending rows; e.g. row 1" in msg
    assert "finish_reason" in msg and "q1#0" in msg


def test_stage_parameters_build():
    base = yaml.safe_load((ROOT / "conf/base/parameters_rollout.yml").read_text())["rollout"]
    config = build_config(RolloutStageConfig, base, "rollout")
    assert config.group_size == 5 and config.sampling.temperature == 1.0
    build_config(RolloutStageConfig, _params(), "rollout")


def test_unknown_split_is_a_clear_error(tiny_model, tiny_tokenizer):
    from tirl.pipelines.rollout.nodes import generate_rollouts

    with pytest.raises(ValueError, match="rollout.split"):
        generate_rollouts({"model": tiny_model, "tokenizer": tiny_tokenizer}, QUESTIONS, CORPUS,
                          {**_params(), "split": "test_ood"}, _agent())
