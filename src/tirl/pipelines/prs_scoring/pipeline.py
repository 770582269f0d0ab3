"""``prs_scoring``: rollout trajectories -> scored trajectories + reward distribution."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.prs_scoring.nodes import score_trajectories


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(score_trajectories,
             inputs=["rollout_trajectories", "questions", "params:prs_scoring"],
             outputs=["scored_trajectories", "reward_stats", "prs_scoring_metrics"],
             name="score_trajectories"),
    ])
