"""The experiment chains: the method, its baselines, the comparison and the ablation.

Each *variant* is the RL stage (``rl``) with a few options fixed, followed by the
``evaluation`` stage on its checkpoint. The chains reuse the stage node functions; only the
wiring lives here:

    data_prep -> model_init -> sft -> [per variant x seed: rl -> evaluation] -> report

A single variant's chain also evaluates the SFT checkpoint (``sft_only``) and reports the two
side by side, so ``kedro run --pipelines=vspo_prs`` shows the gain of RL over its warm start.
``compare`` also evaluates the untrained base that ``model_init`` produces
(``direct_inference``, the paper's "Direct Inference" row), so its table shows what SFT added.

Datasets of a variant run are namespaced ``<variant>.seed<k>.<name>`` (paths in
``conf/base/catalog_experiments.yml``), so ``compare`` computes the shared stages once and every
variant starts from the same SFT checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kedro.pipeline import Node, Pipeline, node, pipeline

from tirl import tracking
from tirl.pipelines.evaluation.nodes import evaluate_model
from tirl.pipelines.report.pipeline import report_pipeline
from tirl.pipelines.rl.nodes import run_rl
from tirl.variants import ABLATION, AS_IS, DIRECT_INFERENCE, SFT_ONLY, VARIANTS, RunKey

SHARED_STAGES = ("data_prep", "model_init", "sft")
EVAL_OUTPUTS = ("eval_rows", "eval_summary", "eval_sample", "eval_metrics")


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


def variant_params(run: RunKey, overrides: Mapping[str, Any], base: Mapping[str, Any],
                   experiments: Mapping[str, Any]) -> dict:
    """The ``rl`` parameters of ``run``: stage defaults (``base``), then the variant's
    training options (``overrides``), then ``experiments.overrides.<variant>`` (same shape as
    ``rl``), then the seed and a checkpoint folder of its own."""
    merged = deep_merge(base, {"train": overrides})
    merged = deep_merge(merged, (experiments.get("overrides") or {}).get(run.variant) or {})
    merged.setdefault("train", {})["seed"] = run.seed
    merged["run_name"] = run.folder
    return merged


def _variant_params_node(run: RunKey, overrides: Mapping[str, Any]) -> Callable[..., dict]:
    def variant_params_of_run(base: Mapping[str, Any], experiments: Mapping[str, Any]) -> dict:
        return variant_params(run, overrides, base, experiments)
    variant_params_of_run.__doc__ = variant_params.__doc__
    return variant_params_of_run


def _tracked_node(fn: Callable[..., Any], inputs: Sequence[str], outputs: Sequence[str], *,
                  run_name: str, run_tags: Mapping[str, str], name: str, tags: list[str],
                  logged_params: Mapping[str, str] | None = None) -> Node:
    """A node of ``fn`` whose metrics and table/text outputs land in the (child) MLflow run
    ``run_name`` of its variant, not in the parent run of a comparison. ``logged_params``
    maps a parameter namespace to the input (a parameters dict) that the run logs under it
    (``{"rl": "rl_params"}``: the variant's own ``rl.train.lr``, the name kedro-mlflow gives
    the stage defaults in the parent run, so parent and children line up in the compare view)."""
    inputs, outputs = list(inputs), list(outputs)
    params_at = {space: inputs.index(i) for space, i in (logged_params or {}).items()}

    def wrapped(*args: Any) -> Any:
        params = {space: args[at] for space, at in params_at.items()} or None
        with tracking.child_run(run_name, params=params, tags=run_tags):
            result = fn(*args)
            values = result if isinstance(result, tuple) else (result,)
            tracking.log_outputs({o.rsplit(".", 1)[-1]: v for o, v in zip(outputs, values)})
        return result
    wrapped.__name__ = getattr(fn, "__name__", "node")
    wrapped.__doc__ = fn.__doc__
    return node(wrapped, inputs, outputs, name=name, tags=tags)


def variant_pipeline(variant: str, overrides: Mapping[str, Any], seeds: Sequence[int]
                     ) -> Pipeline:
    """RL + evaluation of one variant for each seed, namespaced ``<variant>.seed<k>``."""
    shared_inputs = {"sft_model", "questions", "corpus"}
    shared_params = {"params:rl", "params:experiments", "params:evaluation", "params:agent"}
    out = Pipeline([])
    for seed in seeds:
        run = RunKey(variant, seed)
        tracked = {"run_name": run.run_name(seeds),
                   "run_tags": {"variant": variant, "seed": str(seed)}}
        rl_out = ["rl_model", "rl_history", "rl_timings"]
        inner = Pipeline([
            node(_variant_params_node(run, overrides),
                 ["params:rl", "params:experiments"], "rl_params",
                 name="variant_params", tags=["rl", variant]),
            _tracked_node(run_rl,
                          ["sft_model", "questions", "corpus", "rl_params", "params:agent"],
                          rl_out, logged_params={"rl": "rl_params"}, name="rl",
                          tags=["rl", variant], **tracked),
            _tracked_node(evaluate_model,
                          ["rl_model", "questions", "corpus", "params:evaluation", "params:agent"],
                          EVAL_OUTPUTS, logged_params={"evaluation": "params:evaluation"},
                          name="evaluate", tags=["evaluation", variant], **tracked),
        ])
        # Kedro prefixes every other dataset and node with the namespace
        # (``vspo_prs.seed0.rl_model``); the shared inputs and parameters stay as they are.
        out += pipeline(inner, namespace=run.namespace, inputs=shared_inputs,
                        parameters=shared_params)
    return out


def as_is_pipeline(name: str, seeds: Sequence[int]) -> Pipeline:
    """The model of ``name`` (:data:`~tirl.variants.AS_IS`: ``base_model`` for
    ``direct_inference``, ``sft_model`` for ``sft_only``) evaluated as is, with the same node
    and parameters as every variant; once, under the first seed (no RL seed changes it)."""
    model = AS_IS[name]
    run = RunKey(name, seeds[0])
    inner = Pipeline([_tracked_node(
        evaluate_model, [model, "questions", "corpus", "params:evaluation", "params:agent"],
        EVAL_OUTPUTS, run_name=name, run_tags={"variant": name, "seed": str(run.seed)},
        logged_params={"evaluation": "params:evaluation"}, name="evaluate",
        tags=["evaluation", name])])
    return pipeline(inner, namespace=run.namespace, inputs={model, "questions", "corpus"},
                    parameters={"params:evaluation", "params:agent"})


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
        # One variant fills no cell of the ablation grid: its report has no ablation.md.
        out[variant] = (shared + as_is_pipeline(SFT_ONLY, seeds)
                        + variant_pipeline(variant, overrides, seeds)
                        + report_pipeline({variant: overrides}, seeds, as_is=[SFT_ONLY],
                                          prefix=variant, ablation=False))
    out[SFT_ONLY] = shared + as_is_pipeline(SFT_ONLY, seeds)
    # The untrained base needs no SFT: data prep and model_init only.
    out[DIRECT_INFERENCE] = (stages["data_prep"] + stages["model_init"]
                             + as_is_pipeline(DIRECT_INFERENCE, seeds))
    out["compare"] = (shared + sum((as_is_pipeline(n, seeds) for n in AS_IS), Pipeline([]))
                      + sum((variant_pipeline(v, o, seeds) for v, o in VARIANTS.items()),
                            Pipeline([]))
                      + report_pipeline(VARIANTS, seeds, as_is=list(AS_IS), prefix="compare"))
    out["vspo_ablation"] = (shared
                            + sum((variant_pipeline(v, o, ablation_seeds)
                                   for v, o in ABLATION.items()), Pipeline([]))
                            + report_pipeline(ABLATION, ablation_seeds, as_is=[],
                                              prefix="vspo_ablation"))
    return out
