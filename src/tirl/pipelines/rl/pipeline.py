from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.rl.nodes import run_rl


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(run_rl,
             inputs=["sft_model", "questions", "corpus", "params:rl", "params:agent"],
             outputs=["rl_model", "rl_history", "rl_timings"], name="rl"),
    ])
