"""The inspect_rewards stage on an in-memory catalog and on the catalog's trajectory files, with
trajectories built here."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tirl.core.config import ConfigError, build_config
from tirl.core.types import Trajectory
from tirl.datasets.trajectories import TrajectoryDataset
from tirl.pipelines.inspect_rewards import create_pipeline
from tirl.pipelines.inspect_rewards.nodes import ScoringConfig, score_trajectories, stage_reward

ROOT = Path(__file__).resolve().parents[3]
REF = "Alvar Quen was born in Mirebrook and works as a blacksmith."
QUESTIONS = pd.DataFrame([
    {"id": "s1", "question": "Where was Alvar Quen born?", "answers": ["Mirebrook"],
     "split": "train", "task": "short", "qtype": "single_hop", "facts": [], "source": "world"},
    {"id": "l1", "question": "Describe Alvar Quen.", "answers": [REF], "split": "train",
     "task": "long", "qtype": "description", "source": "world",
     "facts": ["Alvar Quen was born in Mirebrook.", "Alvar Quen works as a blacksmith."]},
])


def traj(qid: str, idx: int, answer: str | None, finish: str,
         errors: tuple[str, ...] = ()) -> Trajectory:
    return Trajectory(
        question_id=qid, sample_idx=idx, prompt_len=3, token_ids=[1, 2, 3, 4, 5],
        mask=[0, 0, 0, 1, 1], logprobs=[0.0, 0.0, 0.0, -0.5, -0.25],
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        turns=[{"role": "assistant", "start": 3, "end": 5, "parse_errors": list(errors)}],
        tool_calls=[{"name": "search", "arguments": {"query": "x"}, "ok": True, "error": None}],
        answer=answer, finish_reason=finish, parse_errors=list(errors))


TRAJECTORIES = [
    traj("s1", 0, "Mirebrook", "answer"),                    # stage 2, EM -> 1.0
    traj("s1", 1, "Mirebrook town", "answer"),               # stage 2, S = 0.5 -> 0.6
    traj("s1", 2, None, "max_turns"),                        # stage 1 -> 0.1
    traj("s1", 3, None, "invalid", ("invalid_json",)),       # stage 0 -> 0.0
    traj("l1", 0, REF, "answer"),                            # stage 2, judge 1.0 -> 1.0
    traj("l1", 1, "Alvar Quen was born in Mirebrook.", "answer"),  # judge 0.5 -> 0.6
]
EXPECTED_REWARD = [1.0, 0.6, 0.1, 0.0, 1.0, 0.6]
PARAMS = {"step": 0, "histogram_bins": 5}
# The reward is the RL stage's (params:rl.train): one place for its values.
RL = {"train": {"reward": "prs", "prs": {"schedule": False}, "judge": {"name": "rubric", "options": {}}}}


def rl(**train) -> dict:
    return {"train": {**RL["train"], **train}}


def _run(catalog_entries: dict) -> DataCatalog:
    catalog = DataCatalog({
        "questions": MemoryDataset(QUESTIONS),
        "params:inspect_rewards": MemoryDataset(PARAMS),
        "params:rl": MemoryDataset(RL),
        "inspect_rewards_stats": MemoryDataset(),
        "inspect_rewards_metrics": MemoryDataset(),
        **catalog_entries,
    })
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_pipeline_scores_and_summarises() -> None:
    catalog = _run({"inspect_rollouts_trajectories": MemoryDataset(TRAJECTORIES),
                    "inspect_rewards_trajectories": MemoryDataset()})
    scored = catalog["inspect_rewards_trajectories"].load()
    stats = catalog["inspect_rewards_stats"].load()
    metrics = catalog["inspect_rewards_metrics"].load()

    assert [t for t, _ in scored] == TRAJECTORIES
    rewards = [r for _, r in scored]
    assert [r.reward for r in rewards] == pytest.approx(EXPECTED_REWARD)
    assert [r.stage for r in rewards] == [2, 2, 1, 0, 2, 2]
    assert [r.exact_match for r in rewards] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert [r.outcome for r in rewards] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]

    assert stats["count"] == 6
    assert {s: stats["by_stage"][s]["count"] for s in "012"} == {"0": 1, "1": 1, "2": 4}
    assert stats["by_stage"]["2"]["reward"]["mean"] == pytest.approx(0.8)
    hist = stats["overall"]["reward"]["histogram"]
    assert hist["edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    # 0.0 and 0.1 in the first bin, the two 1.0 in the last (closed) one; 0.6 = 0.2 + 0.8 *
    # 0.5 sits on a bin edge, so only the total is asserted for it.
    assert (hist["counts"][0], hist["counts"][-1], sum(hist["counts"])) == (2, 2, 6)
    json.dumps(stats)  # JSON-serialisable as written by json.JSONDataset
    # The names RL logs every step (reward_stats), under this stage's prefix.
    assert metrics["inspect_rewards/reward/mean"] == {"value": pytest.approx(3.3 / 6), "step": 0}
    assert metrics["inspect_rewards/reward/stage_0_frac"]["value"] == pytest.approx(1 / 6)
    assert metrics["inspect_rewards/reward/exact_match"]["value"] == pytest.approx(2 / 6)


def test_pipeline_reads_and_writes_the_catalog_files(tmp_path: Path) -> None:
    rollouts = tmp_path / "rollouts.parquet"
    TrajectoryDataset(filepath=str(rollouts)).save(TRAJECTORIES)
    scored_path = tmp_path / "inspect_rewards_trajectories.parquet"
    _run({"inspect_rollouts_trajectories": TrajectoryDataset(filepath=str(rollouts)),
          "inspect_rewards_trajectories": TrajectoryDataset(filepath=str(scored_path), scored=True)})
    scored = TrajectoryDataset(filepath=str(scored_path), scored=True).load()
    assert [t for t, _ in scored] == TRAJECTORIES
    assert [r.reward for _, r in scored] == pytest.approx(EXPECTED_REWARD)
    table = pd.read_parquet(scored_path)  # a plain table for notebooks: trajectories + scores
    assert table["reward"].tolist() == pytest.approx(EXPECTED_REWARD)
    assert table["stage"].tolist() == [2, 2, 1, 0, 2, 2]


def test_binary_reward_and_schedule_step() -> None:
    scored, _, _ = score_trajectories(TRAJECTORIES, QUESTIONS, PARAMS, rl(reward="binary"))
    assert [r.reward for _, r in scored] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    scored, stats, _ = score_trajectories(TRAJECTORIES, QUESTIONS, {**PARAMS, "step": 50},
                                          rl(prs={"ramp_steps": 100}))
    # step 50 of 100: r_format 0.3, r_answer 0.5 -> S = 0.5 gives 0.75
    assert [r.reward for _, r in scored] == pytest.approx([1.0, 0.75, 0.3, 0.0, 1.0, 0.75])
    assert stats["config"]["step"] == 50


def test_unknown_question_and_bad_params() -> None:
    with pytest.raises(KeyError, match="'s1'"):
        score_trajectories(TRAJECTORIES, QUESTIONS[QUESTIONS["id"] == "l1"], PARAMS, RL)
    with pytest.raises(ConfigError, match="rl.train.reward"):
        score_trajectories(TRAJECTORIES, QUESTIONS, PARAMS, rl(reward="bleu"))
    with pytest.raises(ConfigError, match="rl.train.prs.r_answer"):
        score_trajectories(TRAJECTORIES, QUESTIONS, PARAMS, rl(prs={"r_answer": 2}))
    with pytest.raises(ConfigError, match="inspect_rewards.histogram_bins"):
        score_trajectories(TRAJECTORIES, QUESTIONS, {**PARAMS, "histogram_bins": 0}, RL)
    # The reward's keys are no longer this stage's: naming one here is an unknown key.
    with pytest.raises(ConfigError, match="inspect_rewards.*reward"):
        score_trajectories(TRAJECTORIES, QUESTIONS, {**PARAMS, "reward": "prs"}, RL)


@pytest.mark.parametrize("env", ["base", "test"])
def test_shipped_parameters_build(env: str) -> None:
    conf = ROOT / "conf" / env
    params = yaml.safe_load((conf / "parameters_inspect_rewards.yml").read_text())["inspect_rewards"]
    rl_file = conf / "parameters_rl.yml"
    rl_params = yaml.safe_load((rl_file if rl_file.exists() else ROOT / "conf/base/parameters_rl.yml").read_text())
    config, train = stage_reward(params, rl_params["rl"])
    assert isinstance(config, ScoringConfig)
    assert train.reward == "prs" and train.judge.name == "rubric"


def test_the_base_prs_table_is_the_dataclass_default():
    """One value per PRS setting: conf/base lists the built-in defaults, not other ones."""
    from tirl.core.config import to_dict
    from tirl.core.rewards.prs import PRSConfig

    listed = yaml.safe_load((ROOT / "conf/base/parameters_rl.yml").read_text())["rl"]["train"]["prs"]
    assert listed == to_dict(PRSConfig())
