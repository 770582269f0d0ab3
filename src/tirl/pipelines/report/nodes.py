"""The comparison report: evaluation summaries + training histories -> tables and plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tirl.core.config import build_config, field_
from tirl.core.eval import report
from tirl.variants import ABLATION, SFT_ONLY, RunKey

#: The outputs of :func:`build_report`, by the name of their catalog entry (``<report>.<name>``).
OUTPUTS = ("comparison_md", "comparison_csv", "gains_csv", "ablation_md", "reward_curves",
           "training_curves", "zero_advantage", "eval_bars")

#: How the ablation grid is produced, for a report that holds none of its runs.
ABLATION_COMMAND = "kedro run --pipelines=vspo_ablation"


@dataclass(frozen=True)
class ReportConfig:
    """``params:report``."""

    metrics: tuple[str, ...] = field_(("exact_match",), doc="summary columns tabulated; the "
                                                            "first one is plotted")
    bootstrap_seed: int = field_(0, doc="seed of the paired bootstrap of the gains")

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("metrics: at least one metric is needed")


def _stack(frames: Mapping[RunKey, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-run frames into one with ``variant`` and ``seed`` columns."""
    parts = [frame.assign(variant=run.variant, seed=run.seed) for run, frame in frames.items()
             if frame is not None and len(frame)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def sft_history(sft_metrics: Mapping[str, Any] | None) -> pd.DataFrame:
    """The SFT stage's per-step rows (``sft_metrics["history"]``: ``step``, ``sft/loss``...)
    as a history frame of the one shared run, labelled variant ``sft``."""
    rows = (sft_metrics or {}).get("history") or []
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) and "step" in r
                                             for r in rows):
        raise ValueError("sft_metrics: 'history' must be a list of per-step rows with a "
                         "'step' key (data/08_reporting/sft_metrics.json, written by sft)")
    return pd.DataFrame(rows).assign(variant="sft", seed=0) if rows else pd.DataFrame()


def ablation_md(summaries: pd.DataFrame, metric: str) -> str:
    """``ablation.md``: the selection x clip grid of :data:`~tirl.variants.ABLATION`, with
    the results of the grid's runs this report holds; a report with none of them says so
    and names the command that fills the grid."""
    grid = {name: opts.get("vspo", {}) for name, opts in ABLATION.items()}
    ran = len(summaries) and bool(set(grid) & set(summaries["variant"]))
    head = (f"# VSPO ablation (selection x clip): {metric} on `all`, mean ± std over seeds\n\n"
            if ran else
            f"# VSPO ablation (selection x clip)\n\nNo run of the ablation grid is in this "
            f"report. `{ABLATION_COMMAND}` runs it and writes the filled grid to "
            f"`data/08_reporting/vspo_ablation/ablation.md` ({metric} on `all`, mean ± std "
            f"over seeds); each cell below names the run that fills it.\n\n")
    return head + report.ablation_markdown(summaries, grid, metric)


def build_report(runs: Sequence[RunKey], params: Mapping[str, Any],
                 sft_metrics: Mapping[str, Any] | None, *frames: pd.DataFrame
                 ) -> dict[str, Any]:
    """``frames`` are the eval summaries of ``runs``, then the RL histories of the runs that
    trained (the runs of ``AS_IS`` have none), then the per-question eval rows of ``runs``;
    ``sft_metrics`` gives the SFT loss curve. Returns the :data:`OUTPUTS`: markdown, csv,
    the paired gains over ``sft_only`` (every other run, ``direct_inference`` included,
    against SFT), the ablation grid and four figures."""
    n = len(runs)
    trained = [r for r in runs if r.trained]
    summaries = _stack(dict(zip(runs, frames[:n])))
    histories = _stack(dict(zip(trained, frames[n:n + len(trained)])))
    rows = _stack(dict(zip(runs, frames[n + len(trained):])))
    order = list(dict.fromkeys(r.variant for r in runs))
    config = build_config(ReportConfig, dict(params), "report")
    metrics = list(config.metrics)
    tables = [report.comparison_table(summaries, m, order) for m in metrics]
    gains = report.paired_gains(rows, metrics, baseline=SFT_ONLY,
                                seed=config.bootstrap_seed, order=order)
    markdown = ("# Comparison\n\n" + "\n".join(report.to_markdown(t, m)
                                                for t, m in zip(tables, metrics))
                + "\n" + report.gains_markdown(gains, baseline=SFT_ONLY))
    csv = pd.concat([t.assign(metric=m) for t, m in zip(tables, metrics)], ignore_index=True)
    if histories.empty:
        histories = pd.DataFrame(columns=["variant", "seed", "step"])
    return {
        "comparison_md": markdown, "comparison_csv": csv, "gains_csv": gains,
        "ablation_md": ablation_md(summaries, metrics[0]),
        "reward_curves": report.reward_curves_figure(histories),
        "training_curves": report.training_curves_figure(histories, sft_history(sft_metrics)),
        "zero_advantage": report.zero_advantage_figure(histories),
        "eval_bars": report.eval_bars_figure(summaries, metrics[0], gains, baseline=SFT_ONLY,
                                             variant_order=order),
    }
