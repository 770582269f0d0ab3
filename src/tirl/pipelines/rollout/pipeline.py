"""``rollout``: model + questions + corpus -> validated trajectories, stats and a sample."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.rollout.nodes import generate_rollouts, validate_rollouts


def create_pipeline(model_dataset: str = "sft_model", **kwargs) -> Pipeline:
    """``model_dataset`` names the catalog model to roll out (``sft_model`` by default; e.g.
    ``base_model`` or ``rl_model``). ``params:rollout.model`` (an HF id or path) overrides it at
    run time without changing the graph."""
    return pipeline([
        node(generate_rollouts, inputs=[model_dataset, "questions", "corpus", "params:rollout", "params:agent"],
             outputs=["rollout_trajectories_unvalidated", "rollout_stats_unvalidated", "rollout_sample"],
             name="generate_rollouts"),
        node(validate_rollouts,
             inputs=["rollout_trajectories_unvalidated", "rollout_stats_unvalidated", "params:rollout"],
             outputs=["rollout_trajectories", "rollout_stats"], name="validate_rollouts"),
    ])
