"""data_prep: sources -> validate -> gold trajectories -> validate -> publish.

Catalog outputs (conf/base/catalog_data_prep.yml): ``questions``, ``corpus``,
``gold_trajectories``, ``practice_trajectories``, ``world_kb`` (written only by ``publish``, i.e. only when every
expectation passed) and ``data_validation_report`` (always written, pass or fail).
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.data_prep import nodes as n


def create_pipeline(**kwargs: Any) -> Pipeline:
    return pipeline([
        node(n.load_sources, inputs="params:data_prep",
             outputs=["data_prep_raw_questions", "data_prep_raw_corpus", "data_prep_raw_world"],
             name="load_sources"),
        node(n.validate_sources,
             inputs=["data_prep_raw_questions", "data_prep_raw_corpus", "params:data_prep"],
             outputs="data_prep_source_report", name="validate_sources"),
        node(n.build_gold,
             inputs=["data_prep_raw_questions", "data_prep_raw_corpus", "data_prep_raw_world",
                     "data_prep_source_report", "params:data_prep", "params:agent.search"],
             outputs="data_prep_raw_gold", name="build_gold"),
        node(n.validate_gold,
             inputs=["data_prep_raw_gold", "data_prep_raw_questions", "data_prep_source_report",
                     "params:data_prep"],
             outputs="data_validation_report", name="validate_gold"),
        node(n.build_practice, inputs=["data_prep_raw_world", "params:data_prep", "params:agent.search"],
             outputs="data_prep_raw_practice", name="build_practice"),
        node(n.publish,
             inputs=["data_prep_raw_questions", "data_prep_raw_corpus", "data_prep_raw_gold",
                     "data_prep_raw_practice", "data_prep_raw_world", "data_validation_report"],
             outputs=["questions", "corpus", "gold_trajectories", "practice_trajectories",
                      "world_kb"],
             name="publish"),
    ], tags=["data_prep"])
