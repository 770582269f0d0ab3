from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.model_init.nodes import init_model


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(init_model, inputs=["corpus", "questions", "gold_trajectories", "params:model_init"],
             outputs="base_model", name="init_model"),
    ])
