"""The experiment chains: the method, its baselines, the comparison and the ablation.

Each *variant* is the RL stage (``vspo_update``) with a few options fixed, followed by the
``evaluation`` stage on its checkpoint. The chains reuse the stage node functions; only the
wiring lives here:

    data_prep -> model_init -> sft -> [per variant x seed: rl -> evaluation] -> report

A single variant's chain also evaluates the SFT checkpoint (``sft_only``) and reports the two
side by side, so ``kedro run --pipeline=vspo_prs`` shows the gain of RL over its warm start.

Datasets of a variant run are namespaced ``<variant>.seed<k>.<name>`` (paths in
``conf/base/catalog_experiments.yml``), so ``compare`` computes the shared stages once and every
variant starts from the same SFT checkpoint.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.pipeline import Pipeline, node, pipeline

from tirl import tracking

logger = logging.getLogger(__name__)

#: The method and the baselines (docs/algorithms.md, "Paper (known), in brief"; GRPO = VSPO
#: with selection none).
#: Each maps to :class:`tirl.core.rl.config.TrainConfig` options (``vspo_update.train``).
VARIANTS: dict[str, dict[str, Any]] = {
    "vspo_prs": {"algorithm": "vspo", "reward": "prs"},
    "vspo_binary": {"algorithm": "vspo", "reward": "binary"},
    "grpo_prs": {"algorithm": "grpo", "reward": "prs"},
    "grpo_binary": {"algorithm": "grpo", "reward": "binary"},
    "ppo_prs": {"algorithm": "ppo", "reward": "prs"},
    "ppo_binary": {"algorithm": "ppo", "reward": "binary"},
    "cispo_prs": {"algorithm": "cispo", "reward": "prs"},
}
SFT_ONLY = "sft_only"

#: The paper's ablation grid: selection x clip (docs/algorithms.md, VSPO step 5).
ABLATION: dict[str, dict[str, Any]] = {
    f"vspo_{selection}_clip_{clip}": {"algorithm": "vspo", "reward": "prs",
                                      "vspo": {"selection": selection, "clip": clip}}
    for selection in ("none", "random", "value") for clip in ("off", "on")
}

SHARED_STAGES = ("data_prep", "model_init", "sft")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, recursing into mappings (neither is modified).

    >>> deep_merge({"a": 1, "v": {"x": 1, "y": 2}}, {"v": {"y": 3}})
    {'a': 1, 'v': {'x': 1, 'y': 3}}
    """
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run_name(variant: str, seed: int, seeds: Sequence[int]) -> str:
    """MLflow run name of one (variant, seed): the variant alone when it has one seed."""
    return variant if len(seeds) == 1 else f"{variant}/seed{seed}"


def _variant_params_node(variant: str, overrides: Mapping[str, Any], seed: int
                         ) -> Callable[..., dict]:
    def variant_params(base: Mapping[str, Any], experiments: Mapping[str, Any]) -> dict:
        """The ``vspo_update`` parameters of this variant: stage defaults, then the variant's
        training options, then ``experiments.overrides.<variant>`` (same shape as
        ``vspo_update``), then the seed and a checkpoint folder of its own."""
        merged = deep_merge(base, {"train": overrides})
        merged = deep_merge(merged, (experiments.get("overrides") or {}).get(variant) or {})
        merged.setdefault("train", {})["seed"] = seed
        merged["run_name"] = f"{variant}/seed{seed}"
        return merged
    return variant_params


def _in_run(name: str, fn: Callable[..., Any], tags: Mapping[str, str],
            outputs: Sequence[str], params_arg: int | None = None) -> Callable[..., Any]:
    """Wrap a stage node so that its metrics and its table/text outputs land in the (child)
    MLflow run of its variant, not in the parent run of a comparison."""
    def wrapped(*args: Any) -> Any:
        params = args[params_arg] if params_arg is not None else None
        with tracking.child_run(name, params=params, tags=tags):
            result = fn(*args)
            values = result if isinstance(result, tuple) else (result,)
            tracking.log_outputs({o.rsplit(".", 1)[-1]: v for o, v in zip(outputs, values)})
        return result
    wrapped.__name__ = getattr(fn, "__name__", "node")
    wrapped.__doc__ = fn.__doc__
    return wrapped


def variant_pipeline(variant: str, overrides: Mapping[str, Any], seeds: Sequence[int]
                     ) -> Pipeline:
    """RL + evaluation of one variant for each seed, namespaced ``<variant>.seed<k>``."""
    from tirl.pipelines.evaluation.nodes import evaluate_model
    from tirl.pipelines.vspo_update.nodes import run_vspo_update

    def train_policy(*args: Any) -> tuple[Any, pd.DataFrame]:
        model, history = run_vspo_update(*args)
        return model, pd.DataFrame(history)

    shared_inputs = {"sft_model", "questions", "corpus"}
    shared_params = {"params:vspo_update", "params:experiments", "params:evaluation", "params:agent"}
    out = Pipeline([])
    for seed in seeds:
        name = run_name(variant, seed, seeds)
        tags = {"variant": variant, "seed": str(seed)}
        rl_out = ["rl_model", "rl_history"]
        eval_out = ["eval_rows", "eval_summary", "eval_sample", "eval_metrics"]
        inner = Pipeline([
            node(_variant_params_node(variant, overrides, seed),
                 ["params:vspo_update", "params:experiments"], "rl_params",
                 name="variant_params", tags=["rl", variant]),
            node(_in_run(name, train_policy, tags, rl_out, params_arg=3),
                 ["sft_model", "questions", "corpus", "rl_params", "params:agent"], rl_out,
                 name="train_policy", tags=["rl", variant]),
            node(_in_run(name, evaluate_model, tags, eval_out),
                 ["rl_model", "questions", "corpus", "params:evaluation", "params:agent"], eval_out,
                 name="evaluate", tags=["evaluation", variant]),
        ])
        # Kedro prefixes every other dataset and node with the namespace
        # (``vspo_prs.seed0.rl_model``); the shared inputs and parameters stay as they are.
        out += pipeline(inner, namespace=f"{variant}.seed{seed}", inputs=shared_inputs,
                        parameters=shared_params)
    return out


def sft_only_pipeline(seeds: Sequence[int]) -> Pipeline:
    """The SFT warm start evaluated as is (one evaluation: SFT is shared by all seeds)."""
    from tirl.pipelines.evaluation.nodes import evaluate_model

    outputs = ["eval_rows", "eval_summary", "eval_sample", "eval_metrics"]
    inner = Pipeline([node(_in_run(SFT_ONLY, evaluate_model, {"variant": SFT_ONLY}, outputs),
                           ["sft_model", "questions", "corpus", "params:evaluation", "params:agent"],
                           outputs, name="evaluate", tags=["evaluation", SFT_ONLY])])
    return pipeline(inner, namespace=f"{SFT_ONLY}.seed{seeds[0]}",
                    inputs={"sft_model", "questions", "corpus"},
                    parameters={"params:evaluation", "params:agent"})


def report_pipeline(variants: Mapping[str, Mapping[str, Any]], seeds: Sequence[int],
                    with_sft: bool, prefix: str) -> Pipeline:
    """Collects every run's summary (and history) into the comparison report ``prefix``."""
    from tirl.pipelines.report.nodes import build_report

    keys = ([f"{SFT_ONLY}/seed{seeds[0]}"] if with_sft else []) + \
        [f"{v}/seed{s}" for v in variants for s in seeds]
    summaries = [k.replace("/", ".") + ".eval_summary" for k in keys]
    histories = [k.replace("/", ".") + ".rl_history" for k in keys
                 if not k.startswith(SFT_ONLY)]
    rows = [k.replace("/", ".") + ".eval_rows" for k in keys]
    options = {k: dict(v) for k, v in variants.items()}

    def report(params: Mapping[str, Any], *frames: Any) -> Any:
        return build_report(keys, options, params, *frames)

    report.__name__ = "build_report"
    # The node is written with plain placeholder names and mapped onto the namespaced
    # datasets of each run, the way Kedro expects cross-namespace inputs to be wired.
    slots = {f"summary_{i}": name for i, name in enumerate(summaries)}
    slots.update({f"history_{i}": name for i, name in enumerate(histories)})
    slots.update({f"rows_{i}": name for i, name in enumerate(rows)})
    inner = Pipeline([node(report, ["params:report", *slots],
                           ["comparison_md", "comparison_csv", "reward_curves", "zero_advantage",
                            "eval_bars", "ablation_md", "gains_csv"], name="build_report",
                           tags=["report"])])
    with warnings.catch_warnings():
        # Kedro warns whenever a node reads a dataset of another namespace; a report that
        # reads every variant's results must, so that one warning is expected here.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        return pipeline(inner, namespace=prefix, inputs=slots, parameters={"params:report"})


def configured_seeds(conf_source: str | Path = "conf", env: str | None = None,
                     key: str = "seeds") -> list[int]:
    """``experiments.<key>`` from the project configuration (base, then ``env``).

    ``key="ablation_seeds"`` falls back to ``seeds`` when unset or null.

    Pipelines are built before Kedro resolves parameters, so the seed list, which decides the
    shape of the graph, is read here from the same files. ``env`` defaults to ``$KEDRO_ENV``,
    else ``local``: the registry cannot see ``--env``, so an environment that changes the
    seeds (e.g. ``conf/study``) is chosen with ``KEDRO_ENV=study kedro run ...``.
    """
    from kedro.config import OmegaConfigLoader

    env = env or os.environ.get("KEDRO_ENV") or "local"
    try:
        loader = OmegaConfigLoader(str(conf_source), base_env="base", default_run_env=env,
                                   merge_strategy={"parameters": "soft"})
        section = loader["parameters"].get("experiments", {})
        seeds = section.get(key) if section.get(key) is not None else section.get("seeds", [0])
    except Exception as exc:  # a broken config surfaces again, clearly, when the run loads it
        logger.debug("could not read experiments.%s (%s); using [0]", key, exc)
        seeds = [0]
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"experiments.{key} must be a non-empty list of integers, got {seeds!r}")
    return list(seeds)


def experiment_pipelines(stages: Mapping[str, Pipeline], seeds: Sequence[int],
                         ablation_seeds: Sequence[int] | None = None) -> dict[str, Pipeline]:
    """Every chain, keyed by its pipeline name (the ablation runs ``ablation_seeds``, by
    default ``seeds``)."""
    ablation_seeds = seeds if ablation_seeds is None else ablation_seeds
    shared = sum((stages[s] for s in SHARED_STAGES), Pipeline([]))
    out: dict[str, Pipeline] = {}
    for variant, overrides in VARIANTS.items():
        # A variant run also evaluates its SFT starting point and writes the two side by side
        # (data/08_reporting/<variant>/comparison.md), so its gain over SFT is in the run.
        out[variant] = (shared + sft_only_pipeline(seeds)
                        + variant_pipeline(variant, overrides, seeds)
                        + report_pipeline({variant: overrides}, seeds, with_sft=True,
                                          prefix=variant))
    out[SFT_ONLY] = shared + sft_only_pipeline(seeds)
    out["compare"] = (shared + sft_only_pipeline(seeds)
                      + sum((variant_pipeline(v, o, seeds) for v, o in VARIANTS.items()),
                            Pipeline([]))
                      + report_pipeline(VARIANTS, seeds, with_sft=True, prefix="compare"))
    out["vspo_ablation"] = (shared
                            + sum((variant_pipeline(v, o, ablation_seeds)
                                   for v, o in ABLATION.items()), Pipeline([]))
                            + report_pipeline(ABLATION, ablation_seeds, with_sft=False,
                                              prefix="vspo_ablation"))
    return out
