"""Thin adapters: catalog objects + ``params:evaluation`` -> core evaluation."""

from __future__ import annotations

from typing import Any

import pandas as pd

from tirl import tracking
from tirl.core.config import build_config
from tirl.core.eval.run import EvalConfig, run_evaluation
from tirl.core.eval.sample import trajectories_markdown


def evaluate_model(model: dict[str, Any], questions: pd.DataFrame, corpus: pd.DataFrame,
                   params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    config = build_config(EvalConfig, params, "evaluation")
    trajectories, rows, summary = run_evaluation(
        model=model["model"], tokenizer=model["tokenizer"], questions=questions, corpus=corpus,
        config=config)
    metrics = {f"eval/{r['benchmark']}/{col}": r[col]
               for r in summary.to_dict("records")
               for col in ("exact_match", "f1", "la_bleu", "judge_score", "format_valid")}
    tracking.log_metrics(metrics)
    return rows, summary, trajectories_markdown(trajectories[:8], title="Evaluation sample")
