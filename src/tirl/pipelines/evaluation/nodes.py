"""Thin adapters: catalog objects + ``params:evaluation`` -> core evaluation."""

from __future__ import annotations

from typing import Any

import pandas as pd

from tirl import tracking
from tirl.core.config import build_config
from tirl.core.eval.metrics import SUMMARY_COLUMNS
from tirl.core.eval.run import EvalConfig, run_evaluation
from tirl.core.eval.sample import trajectories_markdown


def evaluate_model(model: dict[str, Any], questions: pd.DataFrame, corpus: pd.DataFrame,
                   params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, str, dict]:
    """Per-trajectory rows, the per-benchmark summary, a Markdown sample of trajectories and
    the summary as flat metrics (``<benchmark>/<metric>``, for MLflow and ``dvc metrics``)."""
    config = build_config(EvalConfig, params, "evaluation")
    trajectories, rows, summary = run_evaluation(
        model=model["model"], tokenizer=model["tokenizer"], questions=questions, corpus=corpus,
        config=config)
    metrics = {f"{r['benchmark']}/{col}": float(r[col])
               for r in summary.to_dict("records") for col in SUMMARY_COLUMNS
               if col != "benchmark" and pd.notna(r[col])}
    tracking.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
    sample = trajectories_markdown(trajectories[:8], title="Evaluation sample")
    return rows, summary, sample, metrics
