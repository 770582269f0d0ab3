"""The experiment runs as data: which variants exist, their options, and which seeds run.

A leaf module (it imports no pipeline), so the experiment chains (:mod:`tirl.experiments`)
and the report stage (:mod:`tirl.pipelines.report`) read the same tables without importing
each other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

logger = logging.getLogger(__name__)

#: The method and the baselines (docs/algorithms.md, "The method and the baselines"; GRPO =
#: VSPO with selection none).
#: Each maps to :class:`tirl.core.rl.config.TrainConfig` options (``rl.train``).
VARIANTS: dict[str, dict[str, Any]] = {
    "vspo_prs": {"algorithm": "vspo", "reward": "prs"},
    "vspo_binary": {"algorithm": "vspo", "reward": "binary"},
    "grpo_prs": {"algorithm": "grpo", "reward": "prs"},
    "grpo_binary": {"algorithm": "grpo", "reward": "binary"},
    "ppo_prs": {"algorithm": "ppo", "reward": "prs"},
    "ppo_binary": {"algorithm": "ppo", "reward": "binary"},
    "cispo_prs": {"algorithm": "cispo", "reward": "prs"},
}

#: The SFT warm start evaluated as is: the baseline every variant's gain is measured against.
SFT_ONLY = "sft_only"

#: The untrained base (what ``model_init`` produces) evaluated as is: the paper's "Direct
#: Inference" row, the floor that SFT's gain is read against.
DIRECT_INFERENCE = "direct_inference"

#: The runs that evaluate a model as is, without RL, in table order, with the dataset of the
#: model each evaluates. They have no RL history, and run once (no seed changes them).
AS_IS: dict[str, str] = {DIRECT_INFERENCE: "base_model", SFT_ONLY: "sft_model"}

#: The paper's ablation grid: selection x clip (docs/algorithms.md, VSPO step 5).
ABLATION: dict[str, dict[str, Any]] = {
    f"vspo_{selection}_clip_{clip}": {"algorithm": "vspo", "reward": "prs",
                                      "vspo": {"selection": selection, "clip": clip}}
    for selection in ("none", "random", "value") for clip in ("off", "on")
}


@dataclass(frozen=True)
class RunKey:
    """One run of a chain: a variant (or a run of :data:`AS_IS`) under one seed."""

    variant: str
    seed: int

    @property
    def namespace(self) -> str:
        """The Kedro namespace of the run's nodes and datasets: ``<variant>.seed<k>``."""
        return f"{self.variant}.seed{self.seed}"

    def dataset(self, name: str) -> str:
        """The run's dataset ``name``, e.g. ``vspo_prs.seed0.eval_summary``."""
        return f"{self.namespace}.{name}"

    @property
    def folder(self) -> str:
        """``<variant>/seed<k>``: the run's checkpoint folder."""
        return f"{self.variant}/seed{self.seed}"

    @property
    def trained(self) -> bool:
        """Whether the run trained with RL (and so has a history); not a run of :data:`AS_IS`."""
        return self.variant not in AS_IS

    def run_name(self, seeds: Sequence[int]) -> str:
        """The MLflow run name: the variant alone when it runs one seed, else its folder."""
        return self.variant if len(seeds) == 1 else self.folder


def project_parameters(conf_source: str | Path = "conf", env: str | None = None,
                       runtime_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The resolved parameters (base, then ``env``, then ``runtime_params``), read the way
    ``settings.CONFIG_LOADER_ARGS`` reads them, without bootstrapping Kedro (which sets up
    logging and hooks): for what must be known before a run starts."""
    loader = OmegaConfigLoader(str(conf_source), base_env="base",
                               default_run_env=env or os.environ.get("KEDRO_ENV") or "local",
                               merge_strategy={"parameters": "soft"},
                               runtime_params=runtime_params or {})
    return dict(loader["parameters"])


def configured_seeds(conf_source: str | Path = "conf", env: str | None = None,
                     key: str = "seeds") -> list[int]:
    """``experiments.<key>`` from the project configuration (base, then ``env``).

    ``key="ablation_seeds"`` falls back to ``seeds`` when unset or null.

    Pipelines are built before Kedro resolves parameters, so the seed list, which decides the
    shape of the graph, is read here from the same files. ``env`` defaults to ``$KEDRO_ENV``,
    else ``local``: the registry cannot see ``--env``, so an environment that changes the
    seeds (e.g. ``conf/study``) is chosen with ``KEDRO_ENV=study kedro run ...``.
    """
    env = env or os.environ.get("KEDRO_ENV") or "local"
    try:
        section = project_parameters(conf_source, env).get("experiments", {})
        seeds = section.get(key) if section.get(key) is not None else section.get("seeds", [0])
    except Exception as exc:  # a broken config surfaces again, clearly, when the run loads it
        logger.debug("could not read experiments.%s (%s); using [0]", key, exc)
        seeds = [0]
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"experiments.{key} must be a non-empty list of integers, got {seeds!r}")
    return list(seeds)
