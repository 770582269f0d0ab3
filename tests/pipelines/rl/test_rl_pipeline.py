"""rl on an in-memory catalog with the tiny model: outputs, history, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tirl.core.config import ConfigError, build_config
from tirl.pipelines.rl import create_pipeline
from tirl.pipelines.rl.nodes import RLStageConfig, question_records, run_rl

CONF = Path(__file__).parents[3] / "conf"


def _params(env: str) -> dict:
    return yaml.safe_load((CONF / env / "parameters_rl.yml").read_text())["rl"]


@pytest.mark.parametrize("env", ["base", "test"])
def test_parameter_files_build(env):
    cfg = build_config(RLStageConfig, _params(env), "rl")
    assert cfg.train.algorithm == "vspo"


def test_pipeline_runs_with_test_params(tiny_tables, fresh_tiny_model, tiny_tokenizer, tmp_path,
                                        agent_params):
    torch.set_num_threads(1)
    corpus, questions, _ = tiny_tables
    questions = questions.copy()
    questions.loc[questions.index[-1], "split"] = "val"  # validated on, never trained on
    params = {**_params("test"), "checkpoint_root": str(tmp_path)}
    params["train"] = {**params["train"], "checkpoint_every": 1}
    catalog = DataCatalog({
        "sft_model": MemoryDataset({"model": fresh_tiny_model, "tokenizer": tiny_tokenizer},
                                   copy_mode="assign"),
        "questions": MemoryDataset(questions), "corpus": MemoryDataset(corpus),
        "params:rl": MemoryDataset(params),
        "params:agent": MemoryDataset(agent_params),
        "rl_model": MemoryDataset(copy_mode="assign"), "rl_history": MemoryDataset(),
        "rl_timings": MemoryDataset()})
    SequentialRunner().run(create_pipeline(), catalog)
    out, history = catalog.load("rl_model"), catalog.load("rl_history")
    # Wall-clock figures go to rl_timings, never into the history a rerun reproduces.
    timings = catalog.load("rl_timings")
    assert not [c for c in history.columns if c.startswith(("time/", "perf/"))]
    assert timings["step"].tolist() == [0.0, 1.0] and (timings["time/step_s"] > 0).all()
    assert out["tokenizer"] is tiny_tokenizer and out["model"] is not None
    # val_every: 1 -> a validation row before RL (step -1), then one in every step's row.
    assert history["step"].tolist() == [-1.0, 0.0, 1.0]
    assert history["val/exact_match"].between(0.0, 1.0).all() and history["val/format_valid"].notna().all()
    trained = history.iloc[1]
    assert trained[["reward/mean", "vspo/zero_adv_frac", "reward/unscheduled"]].notna().all()
    assert history.iloc[0][["reward/mean"]].isna().all()  # no training before RL
    assert (tmp_path / params["run_name"] / "step_00000002").is_dir()


def test_validation_split_without_questions_is_named(tiny_tables, tiny_model, tiny_tokenizer,
                                                    agent_params):
    corpus, questions, _ = tiny_tables
    with pytest.raises(ValueError, match="rl.validation.split"):
        run_rl({"model": tiny_model, "tokenizer": tiny_tokenizer}, questions, corpus,
                        {**_params("test"), "checkpoint_root": "/nonexistent"}, agent_params)


def test_bad_param_names_the_key(tiny_tables, tiny_model, tiny_tokenizer, agent_params):
    corpus, questions, _ = tiny_tables
    with pytest.raises(ConfigError, match="rl.train.vspo.selection"):
        run_rl({"model": tiny_model, "tokenizer": tiny_tokenizer}, questions, corpus,
                        {"train": {"vspo": {"selection": "best"}}}, agent_params)


def test_rollout_budgets_come_from_the_agent_config_only(tiny_tables, tiny_model, tiny_tokenizer,
                                                         agent_params):
    from tirl.pipelines.rl.nodes import stage_config

    config, env = stage_config(_params("test"), {**agent_params, "max_turns": 3})
    assert config.train.rollout.max_turns == 3 and config.train.rollout.temperature == 1.0
    corpus, questions, _ = tiny_tables
    with pytest.raises(ConfigError, match="params:agent"):
        run_rl({"model": tiny_model, "tokenizer": tiny_tokenizer}, questions, corpus,
                        {"train": {"rollout": {"max_turns": 2}}}, agent_params)


def test_question_records_pick_the_split(tiny_tables):
    _, questions, _ = tiny_tables
    questions.loc[0, "split"] = "val"
    recs = question_records(questions, "train", None)
    assert [r["id"] for r in recs] == ["q1", "q2", "q3"]
    assert isinstance(recs[0]["answers"], list)
    with pytest.raises(ValueError, match="split 'test'"):
        question_records(questions, "test", None)
