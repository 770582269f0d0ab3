"""``inspect_rewards``: rollout trajectories -> scored trajectories + reward distribution."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.inspect_rewards.nodes import score_trajectories


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(score_trajectories,
             inputs=["inspect_rollouts_trajectories", "questions", "params:inspect_rewards", "params:rl"],
             outputs=["inspect_rewards_trajectories", "inspect_rewards_stats", "inspect_rewards_metrics"],
             name="score_trajectories"),
    ])
