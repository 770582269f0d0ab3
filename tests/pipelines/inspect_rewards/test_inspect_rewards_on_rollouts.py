"""inspect_rewards on real rollout-stage output: the tiny local model rolls out, the trajectories
go through the catalog's Parquet file, and every one gets a stage and a reward consistent with
it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tirl.core.rewards import PRSConfig, stage_values
from tirl.core.types import RewardBreakdown, Trajectory
from tirl.datasets.trajectories import TrajectoryDataset
from tirl.pipelines.inspect_rewards.nodes import score_trajectories

rollout_nodes = pytest.importorskip("tirl.pipelines.inspect_rollouts.nodes")

ROLLOUT_PARAMS = {
    "split": "train", "n_questions": 2, "group_size": 2, "progress": False, "sample_size": 1,
    "sampling": {"seed": 0},
}
AGENT = {"max_turns": 2, "max_new_tokens_per_turn": 16, "max_total_tokens": 512,
         "max_tool_response_tokens": 32, "search": {"kind": "bm25", "top_k": 1}}


def test_scores_tiny_model_rollouts(tiny_model, tiny_tokenizer, tiny_tables,
                                    tmp_path: Path) -> None:
    corpus, questions, _ = tiny_tables
    trajectories, _, _ = rollout_nodes.generate_rollouts(
        {"model": tiny_model, "tokenizer": tiny_tokenizer}, questions, corpus, ROLLOUT_PARAMS, AGENT)
    dataset = TrajectoryDataset(filepath=str(tmp_path / "rollouts.parquet"))
    dataset.save(trajectories)
    trajectories = dataset.load()

    r_invalid, r_format, r_answer = stage_values(PRSConfig(ramp_steps=10), 0)
    for reward in ("prs", "binary"):
        rl = {"train": {"reward": reward, "prs": {"ramp_steps": 10}}}
        scored, stats, _ = score_trajectories(trajectories, questions, {"step": 0}, rl)
        assert len(scored) == len(trajectories) == 4 and stats["count"] == 4
        _check_rows(scored, reward, r_invalid, r_format, r_answer)


def _check_rows(scored: list[tuple[Trajectory, RewardBreakdown]], reward: str,
                r_invalid: float, r_format: float, r_answer: float) -> None:
    for t, score in scored:
        expected = (0 if t.parse_errors or t.finish_reason == "invalid"
                    else 1 if not (t.answer or "").strip() else 2)
        assert score.stage == expected
        if reward == "prs":
            floor = {0: r_invalid, 1: r_format, 2: r_answer}[expected]
            assert floor <= score.reward <= (1.0 if expected == 2 else floor)
        else:
            assert score.reward in (0.0, 1.0)
