"""``inspect_rollouts``: model + questions + corpus -> validated trajectories, stats and a sample."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.inspect_rollouts.nodes import generate_rollouts, validate_rollouts


def create_pipeline(model_dataset: str = "sft_model", **kwargs) -> Pipeline:
    """``model_dataset`` names the catalog model to roll out (``sft_model`` by default; e.g.
    ``base_model`` or ``rl_model``). ``params:inspect_rollouts.model`` (an HF id or path) overrides it at
    run time without changing the graph."""
    return pipeline([
        node(generate_rollouts, inputs=[model_dataset, "questions", "corpus", "params:inspect_rollouts", "params:agent"],
             outputs=["inspect_rollouts_trajectories_unvalidated", "inspect_rollouts_stats_unvalidated", "inspect_rollouts_sample"],
             name="generate_rollouts"),
        node(validate_rollouts,
             inputs=["inspect_rollouts_trajectories_unvalidated", "inspect_rollouts_stats_unvalidated", "params:inspect_rollouts"],
             outputs=["inspect_rollouts_trajectories", "inspect_rollouts_stats"], name="validate_rollouts"),
    ])
