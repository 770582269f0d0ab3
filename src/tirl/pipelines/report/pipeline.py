"""``report``: every run's evaluation summary, per-question rows and RL history, and the SFT
loss curve -> the comparison report (tables, gains over ``sft_only``, figures). The runs
evaluated as is (``direct_inference``, ``sft_only``) come first, as rows of their own."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from tirl.pipelines.report.nodes import OUTPUTS, build_report
from tirl.variants import AS_IS, VARIANTS, RunKey, configured_seeds


def report_pipeline(variants: Mapping[str, Mapping[str, Any]], seeds: Sequence[int],
                    as_is: Sequence[str], prefix: str, ablation: bool = True) -> Pipeline:
    """Collects every run's summary (and history) into the comparison report ``prefix``:
    first the runs of ``as_is`` (names in :data:`~tirl.variants.AS_IS`, evaluated once, under
    the first seed), then ``variants`` under each seed. ``ablation``: whether the report
    writes ``ablation.md`` (the selection x clip grid); a single variant's report has no
    grid to show."""
    unknown = [name for name in as_is if name not in AS_IS]
    if unknown:
        raise ValueError(f"report as_is: {unknown} are not runs evaluated as is "
                         f"(known: {list(AS_IS)})")
    runs = [RunKey(name, seeds[0]) for name in as_is] + \
        [RunKey(v, s) for v in variants for s in seeds]
    summaries = [r.dataset("eval_summary") for r in runs]
    histories = [r.dataset("rl_history") for r in runs if r.trained]
    rows = [r.dataset("eval_rows") for r in runs]
    outputs = [o for o in OUTPUTS if ablation or o != "ablation_md"]

    def report(params: Mapping[str, Any], sft_metrics: Mapping[str, Any], *frames: Any) -> Any:
        out = build_report(runs, params, sft_metrics, *frames)
        return {name: out[name] for name in outputs}

    report.__name__ = "build_report"
    # The node is written with plain placeholder names and mapped onto the namespaced
    # datasets of each run, the way Kedro expects cross-namespace inputs to be wired.
    slots = {f"summary_{i}": name for i, name in enumerate(summaries)}
    slots.update({f"history_{i}": name for i, name in enumerate(histories)})
    slots.update({f"rows_{i}": name for i, name in enumerate(rows)})
    inner = Pipeline([node(report, ["params:report", "sft_metrics", *slots],
                           {name: name for name in outputs}, name="build_report",
                           tags=["report"])])
    with warnings.catch_warnings():
        # Kedro warns whenever a node reads a dataset of another namespace; a report that
        # reads every variant's results must, so that one warning is expected here.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        return pipeline(inner, namespace=prefix, inputs={**slots, "sft_metrics": "sft_metrics"},
                        parameters={"params:report"})


def create_pipeline(**kwargs) -> Pipeline:
    """Rebuild the comparison report from the evaluation summaries, RL histories and SFT
    metrics already on disk (what ``compare`` ends with; DVC's ``report`` stage runs this
    alone)."""
    return report_pipeline(VARIANTS, configured_seeds(), as_is=list(AS_IS), prefix="compare")
