"""Every parameter a run reads is checked before its first node (:class:`ParamsCheckHook`).

Kedro hands each node the parameters it names and ignores the rest, so a key that no node
reads (``--params vspo_updat.train.steps=3``, a typo of a top-level key) would run the
defaults without a word; and a stage builds its typed config only when its node starts, so
a bad ``rl.train`` value in ``kedro run --pipelines=vspo_prs`` would surface after data prep,
model init and SFT. Before the run starts, this hook

* refuses a top-level key that no registered pipeline reads (nor a catalog entry through
  ``${runtime_params:...}``), naming the closest known keys; and
* builds the config of every stage whose parameters the run's pipeline reads, with the same
  builders the nodes use (:data:`STAGE_CHECKS`), so a bad value anywhere in them stops the
  run naming its key. The experiment chains' per-variant ``rl`` parameters are built too.

It runs ``tryfirst`` in ``before_pipeline_run``, before kedro-mlflow opens the run, so a
refused configuration leaves no MLflow run behind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline

from tirl.core.config import ConfigError, build_config, unknown_key_error

_RUNTIME_PARAM = re.compile(r"\$\{\s*runtime_params:\s*([A-Za-z_][\w]*)")


def param_keys(pipeline: Pipeline) -> set[str]:
    """Top-level parameter keys the nodes of ``pipeline`` read (``params:rl.train`` -> rl)."""
    return {name[len("params:"):].split(".", 1)[0] for name in pipeline.inputs()
            if name.startswith("params:")} | ({"*"} if "parameters" in pipeline.inputs() else set())


def consumed_keys(pipelines: Iterable[Pipeline]) -> set[str]:
    """Top-level parameter keys read by any of ``pipelines``."""
    return set().union(*(param_keys(p) for p in pipelines))


def runtime_param_names(conf_source: str | Path) -> set[str]:
    """Names that configuration files read through ``${runtime_params:<name>}`` (e.g. the
    catalog's ``eval_model_path``): legitimate ``--params`` keys that no node reads."""
    names: set[str] = set()
    for path in Path(conf_source).rglob("*.yml"):
        names.update(_RUNTIME_PARAM.findall(path.read_text(encoding="utf-8")))
    return names


def _experiments(params: Mapping[str, Any]) -> None:
    """Each variant's ``rl`` parameters as the chains build them (``experiments.overrides``
    merged over the variant's options and ``params:rl``)."""
    from tirl.experiments import variant_params
    from tirl.pipelines.rl.nodes import stage_config
    from tirl.variants import ABLATION, VARIANTS, RunKey

    variants = {**VARIANTS, **ABLATION}
    experiments = params.get("experiments") or {}
    overrides = experiments.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise ConfigError("experiments.overrides: expected a mapping of variant -> rl options")
    for name in overrides:
        if name not in variants:
            raise unknown_key_error(f"experiments.overrides.{name}", variants)
    for name, options in variants.items():
        stage_config(variant_params(RunKey(name, 0), options, params.get("rl") or {}, experiments),
                     params.get("agent") or {})


def _stage(key: str) -> Callable[[Mapping[str, Any]], Any]:
    """The check of stage ``key``: its node's config builder on ``params[key]``."""
    def check(params: Mapping[str, Any]) -> Any:
        # Imported when checked: the stage modules import torch-heavy core code.
        from tirl.core.agent.env import AgentConfig
        from tirl.core.modeling.factory import ModelInitConfig
        from tirl.core.pretrain.config import PretrainConfig
        from tirl.core.sft.config import SFTConfig
        from tirl.pipelines.data_prep.nodes import build_data_prep_config
        from tirl.pipelines.evaluation.nodes import eval_config
        from tirl.pipelines.inspect_rewards.nodes import stage_reward
        from tirl.pipelines.inspect_rollouts.nodes import RolloutStageConfig
        from tirl.pipelines.report.nodes import ReportConfig
        from tirl.pipelines.rl.nodes import stage_config

        own, agent = params.get(key) or {}, params.get("agent") or {}
        builders: dict[str, Callable[[], Any]] = {
            "agent": lambda: build_config(AgentConfig, own, "agent"),
            "data_prep": lambda: build_data_prep_config(own),
            "model_init": lambda: build_config(ModelInitConfig, own, "model_init"),
            "pretrain": lambda: build_config(PretrainConfig, own, "pretrain"),
            "sft": lambda: build_config(SFTConfig, own, "sft"),
            "rl": lambda: stage_config(own, agent),
            "evaluation": lambda: eval_config(own, agent),
            "inspect_rollouts": lambda: build_config(RolloutStageConfig, own, "inspect_rollouts"),
            "inspect_rewards": lambda: stage_reward(own, params.get("rl") or {}),
            "report": lambda: build_config(ReportConfig, own, "report"),
            "experiments": lambda: _experiments(params),
        }
        return builders[key]()
    return check


#: Top-level parameter key -> the check of its stage (every key a pipeline reads has one).
STAGE_CHECKS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    key: _stage(key) for key in ("agent", "data_prep", "model_init", "pretrain", "sft", "rl",
                                 "evaluation", "inspect_rollouts", "inspect_rewards", "report",
                                 "experiments")}


def check_parameters(params: Mapping[str, Any], pipeline: Pipeline, known: Iterable[str]) -> None:
    """Raise :class:`ConfigError` for a top-level key not in ``known``, or for a bad value in
    the parameters of any stage ``pipeline`` reads."""
    known = set(known)
    if "*" not in known:  # a node that reads all parameters makes every key a used one
        for key in sorted(set(params) - known):
            err = unknown_key_error(key, known)
            raise ConfigError(str(err).replace(": unknown key", ": unknown top-level parameter "
                                               "key, read by no pipeline", 1))
    for key in sorted(param_keys(pipeline) & set(STAGE_CHECKS)):
        STAGE_CHECKS[key](params)


class ParamsCheckHook:
    """Runs :func:`check_parameters` on the run's parameters before anything else."""

    def __init__(self) -> None:
        self._context: Any = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._context = context

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens the MLflow run
    def before_pipeline_run(self, pipeline: Pipeline) -> None:
        if self._context is None:
            return
        from kedro.framework.project import pipelines

        known = consumed_keys(pipelines.values())
        known |= runtime_param_names(self._context.config_loader.conf_source)
        check_parameters(self._context.params, pipeline, known)
