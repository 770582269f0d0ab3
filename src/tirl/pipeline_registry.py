"""Project pipelines: one per stage (auto-discovered) plus the experiment chains."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from tirl.experiments import configured_seeds, experiment_pipelines


def register_pipelines() -> dict[str, Pipeline]:
    """Stages (``data_prep``, ``sft``, ``vspo_update``, ...) and chains (``vspo_prs``, the
    baselines, ``compare``, ``vspo_ablation``). The default is the method: ``vspo_prs``."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines.update(experiment_pipelines(pipelines, configured_seeds()))
    pipelines["__default__"] = pipelines["vspo_prs"]
    return pipelines
