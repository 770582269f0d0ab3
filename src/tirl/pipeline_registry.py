"""Project pipelines: one per stage plus the experiment chains built from them."""

from __future__ import annotations

import importlib

from kedro.pipeline import Pipeline

from tirl.experiments import configured_seeds, experiment_pipelines

#: Stage pipelines, in the order data flows through them. Listed explicitly (not discovered):
#: Kedro 1.7's ``find_pipelines`` only loads the pipeline named on the command line, and the
#: experiment chains need every stage.
STAGES = ("pretrain", "data_prep", "model_init", "sft", "rollout", "prs_scoring", "vspo_update",
          "evaluation", "report")


def stage_pipelines() -> dict[str, Pipeline]:
    return {name: importlib.import_module(f"tirl.pipelines.{name}").create_pipeline()
            for name in STAGES}


def register_pipelines() -> dict[str, Pipeline]:
    """Stages (``data_prep``, ``sft``, ``vspo_update``, ...) and chains (``vspo_prs``, the
    baselines, ``compare``, ``vspo_ablation``). The default is the method: ``vspo_prs``."""
    pipelines = stage_pipelines()
    pipelines.update(experiment_pipelines(pipelines, configured_seeds(),
                                          configured_seeds(key="ablation_seeds")))
    pipelines["__default__"] = pipelines["vspo_prs"]
    return pipelines
