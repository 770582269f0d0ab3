"""The comparison report: evaluation summaries + training histories -> tables and plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tirl.core.config import build_config, field_
from tirl.core.eval import report
from tirl.variants import SFT_ONLY, RunKey


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


def build_report(runs: Sequence[RunKey], variant_options: Mapping[str, Mapping[str, Any]],
                 params: Mapping[str, Any], *frames: pd.DataFrame
                 ) -> tuple[str, pd.DataFrame, Any, Any, Any, str, pd.DataFrame]:
    """``frames`` are the eval summaries of ``runs``, then the RL histories of the runs that
    trained (the runs of ``AS_IS`` have none), then the per-question eval rows of ``runs``.
    Returns markdown, csv, three figures, ablation markdown and the paired gains over
    ``sft_only`` (every other run, ``direct_inference`` included, against SFT)."""
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
    ablation = report.ablation_table(summaries, {k: v.get("vspo", {}) for k, v in
                                                  variant_options.items()}, metrics[0])
    ablation_md = ("# VSPO ablation (selection x clip), " + metrics[0] + "\n\n" +
                   (report.frame_markdown(ablation) if not ablation.empty else "_no ablation runs_")
                   + "\n")
    empty_hist = histories if not histories.empty else pd.DataFrame(
        columns=["variant", "seed", "step"])
    return (markdown, csv, report.reward_curves_figure(empty_hist),
            report.zero_advantage_figure(empty_hist), report.eval_bars_figure(summaries, metrics[0]),
            ablation_md, gains)
