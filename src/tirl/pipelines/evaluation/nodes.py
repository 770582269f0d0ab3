"""Thin adapters: catalog objects + ``params:evaluation`` -> core evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tirl import tracking
from tirl.core.agent.env import AgentConfig, Sampling
from tirl.core.config import ConfigError, build_config, field_
from tirl.core.eval.metrics import SUMMARY_COLUMNS, headline_metrics
from tirl.core.eval.run import EvalConfig, run_evaluation
from tirl.core.rewards.prs import JudgeSpec
from tirl.core.eval.sample import trajectories_markdown, verdict_line


@dataclass(frozen=True)
class EvaluationStageConfig:
    """``params:evaluation``: what to evaluate and how to sample; the agent environment
    (search, budgets, parser) is ``params:agent``."""

    splits: tuple[str, ...] = field_(("test_in_domain", "test_ood"), doc="question splits")
    max_per_benchmark: int | None = field_(None, ge=1, doc="questions per benchmark (null = all)")
    samples: int = field_(1, ge=1, doc="samples per question; >1 with temperature>0 gives pass@k")
    seed: int = field_(0, doc="sampling seed (greedy decoding ignores it)")
    sampling: Sampling = field_(default_factory=lambda: Sampling(temperature=0.0),
                                doc="greedy by default")
    judge: JudgeSpec = field_(default_factory=JudgeSpec,
                              doc="judge of long-form questions: name, options (that judge's)")
    progress: bool = field_(True, doc="show a progress bar")


def eval_config(params: dict[str, Any], agent: dict[str, Any]) -> EvalConfig:
    """The core evaluation config: this stage's choices in the agent environment."""
    stage = build_config(EvaluationStageConfig, params, "evaluation")
    env = build_config(AgentConfig, agent, "agent")
    try:
        return EvalConfig(splits=stage.splits, max_per_benchmark=stage.max_per_benchmark,
                          samples=stage.samples, seed=stage.seed,
                          rollout=env.rollout_overrides(stage.sampling), search=dict(env.search),
                          judge=stage.judge, progress=stage.progress)
    except ValueError as exc:
        raise ConfigError(f"evaluation: {exc}") from exc


def evaluate_model(model: dict[str, Any], questions: pd.DataFrame, corpus: pd.DataFrame,
                   params: dict[str, Any], agent: dict[str, Any]
                   ) -> tuple[pd.DataFrame, pd.DataFrame, str, dict]:
    """Per-trajectory rows, the per-benchmark summary, a Markdown sample of trajectories and
    the summary as flat metrics (``<benchmark>/<metric>``, for MLflow and ``dvc metrics``)."""
    config = eval_config(params, agent)
    trajectories, rows, summary = run_evaluation(
        model=model["model"], tokenizer=model["tokenizer"], questions=questions, corpus=corpus,
        config=config)
    metrics = {f"{r['benchmark']}/{col}": float(r[col])
               for r in summary.to_dict("records") for col in SUMMARY_COLUMNS
               if col != "benchmark" and pd.notna(r[col])}
    tracking.log_metrics(metrics, stage="evaluation")
    tracking.log_metrics(headline_metrics(summary))
    sample = trajectories_markdown(trajectories[:8], title="Evaluation sample",
                                   verdicts=_verdicts(trajectories[:8], rows, questions))
    return rows, summary, sample, metrics


def _verdicts(trajectories: list[Any], rows: pd.DataFrame, questions: pd.DataFrame) -> list[str]:
    """The gold-answer line of each sampled trajectory (its row of ``rows``)."""
    by_key = {(str(r["question_id"]), int(r["sample_idx"])): r for r in rows.to_dict("records")}
    gold = {str(q): list(a) for q, a in zip(questions["id"], questions["answers"])}
    return [verdict_line(gold.get(str(t.question_id), []),
                         by_key.get((str(t.question_id), int(t.sample_idx)), {}))
            for t in trajectories]
