from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.pretrain.nodes import probe_pretrained, publish_base, run_pretrain


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([
        node(run_pretrain, inputs=["params:pretrain", "params:agent.search"], outputs=["pretrained_model", "pretrain_summary"],
             name="run_pretrain"),
        node(probe_pretrained, inputs=["pretrained_model", "pretrain_summary", "params:pretrain",
                                       "params:agent"],
             outputs="pretrain_probe", name="probe_pretrained"),
        node(publish_base, inputs=["pretrained_model", "pretrain_summary", "pretrain_probe"],
             outputs="builtin_base", name="publish_base"),
    ])
