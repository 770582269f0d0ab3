from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.vspo_update.nodes import run_vspo_update


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(run_vspo_update,
             inputs=["sft_model", "questions", "corpus", "params:vspo_update", "params:agent"],
             outputs=["rl_model", "rl_history"], name="run_vspo_update"),
    ])
