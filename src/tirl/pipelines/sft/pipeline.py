from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.sft.nodes import run_sft


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(run_sft, inputs=["base_model", "gold_trajectories", "practice_trajectories", "corpus",
                     "questions", "params:sft"],
             outputs=["sft_model", "sft_metrics", "sft_timings"], name="run_sft"),
    ])
