"""Project pipelines: one per stage plus the experiment chains built from them."""

from __future__ import annotations

from collections.abc import Callable

from kedro.pipeline import Pipeline

from tirl.experiments import experiment_pipelines
from tirl.pipelines import (
    data_prep,
    evaluation,
    model_init,
    pretrain,
    inspect_rewards,
    report,
    inspect_rollouts,
    sft,
    rl,
)
from tirl.variants import configured_seeds

#: Stage pipelines, in the order data flows through them. Listed explicitly (not discovered):
#: Kedro 1.7's ``find_pipelines`` only loads the pipeline named on the command line, and the
#: experiment chains need every stage.
STAGE_BUILDERS: dict[str, Callable[[], Pipeline]] = {
    "pretrain": pretrain.create_pipeline,
    "data_prep": data_prep.create_pipeline,
    "model_init": model_init.create_pipeline,
    "sft": sft.create_pipeline,
    "inspect_rollouts": inspect_rollouts.create_pipeline,
    "inspect_rewards": inspect_rewards.create_pipeline,
    "rl": rl.create_pipeline,
    "evaluation": evaluation.create_pipeline,
    "report": report.create_pipeline,
}
STAGES = tuple(STAGE_BUILDERS)


def stage_pipelines() -> dict[str, Pipeline]:
    return {name: build() for name, build in STAGE_BUILDERS.items()}


def register_pipelines() -> dict[str, Pipeline]:
    """Stages (``data_prep``, ``sft``, ``rl``, ...) and chains (``vspo_prs``, the
    baselines, ``compare``, ``vspo_ablation``). The default is the method: ``vspo_prs``."""
    pipelines = stage_pipelines()
    pipelines.update(experiment_pipelines(pipelines, configured_seeds(),
                                          configured_seeds(key="ablation_seeds")))
    pipelines["__default__"] = pipelines["vspo_prs"]
    return pipelines
