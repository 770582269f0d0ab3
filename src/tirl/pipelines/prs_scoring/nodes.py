"""Nodes of the ``prs_scoring`` stage: score rollout trajectories with PRS or the binary reward.

Thin adapters: score the rollout trajectories with :mod:`tirl.core.rewards`, return each
with its reward breakdown (a scored :class:`~tirl.datasets.trajectories.TrajectoryDataset`),
a JSON summary and MLflow metrics.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from tirl.core.config import build_config, field_, to_dict
from tirl.core.rewards.prs import REWARDS, RewardConfig, build_reward_fn, score_batch
from tirl.core.types import RewardBreakdown, Trajectory
from tirl.core.records import records

logger = logging.getLogger(__name__)

COMPONENTS = ("reward", "format", "quality", "exact_match", "outcome")
#: The columns of a reward breakdown, in order (reward, stage, format, quality, ...).
SCORE_COLUMNS = tuple(f.name for f in fields(RewardBreakdown))


@dataclass(frozen=True)
class ScoringConfig:
    """``params:prs_scoring``."""

    reward: str = field_("prs", doc="registered reward name: prs | binary",
                         choices=tuple(REWARDS))
    step: int = field_(0, doc="training step the curriculum schedule is evaluated at", ge=0)
    prs: dict[str, Any] = field_(default_factory=dict, doc="PRSConfig fields")
    judge: dict[str, Any] = field_(default_factory=lambda: {"name": "rubric", "options": {}},
                                   doc="long-form judge: {name, options}")
    histogram_bins: int = field_(10, doc="bins of the [0, 1] histograms in reward_stats", ge=1)

    def reward_config(self) -> RewardConfig:
        return build_config(RewardConfig, {"reward": self.reward, "prs": self.prs,
                                           "judge": self.judge}, "prs_scoring")


def _questions_by_id(questions: pd.DataFrame) -> dict[str, dict[str, Any]]:
    for col in ("id", "question", "answers"):
        if col not in questions.columns:
            raise ValueError(f"questions: missing column {col!r}")
    out: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(records(questions)):
        for key in ("answers", "facts"):
            v = rec.get(key)
            if isinstance(v, str):
                rec[key] = json.loads(v) if v[:1] == "[" else [v]
            elif v is None or (isinstance(v, float) and math.isnan(v)):
                rec[key] = []
        rec.setdefault("task", "short")
        qid = str(rec["id"])
        if qid in out:
            raise ValueError(f"questions row {i}: duplicate id {qid!r}")
        out[qid] = rec
    return out


def _histogram(values: np.ndarray, bins: int) -> dict[str, list[float]]:
    counts, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}


def reward_statistics(scores: list[RewardBreakdown], bins: int = 10) -> dict[str, Any]:
    """Distribution of the reward and its components, overall and per stage."""
    table = pd.DataFrame([s.__dict__ for s in scores], columns=list(SCORE_COLUMNS))
    n = len(table)

    def summary(df: pd.DataFrame) -> dict[str, Any]:
        out: dict[str, Any] = {"count": int(len(df)), "fraction": len(df) / n if n else 0.0}
        for comp in COMPONENTS:
            vals = df[comp].to_numpy(dtype=float)
            out[comp] = {
                "mean": float(vals.mean()) if len(vals) else 0.0,
                "std": float(vals.std()) if len(vals) else 0.0,
                "min": float(vals.min()) if len(vals) else 0.0,
                "max": float(vals.max()) if len(vals) else 0.0,
                "histogram": _histogram(vals, bins),
            }
        return out

    return {"count": n, "overall": summary(table),
            "by_stage": {str(s): summary(table[table["stage"] == s]) for s in (0, 1, 2)}}


def score_trajectories(rollout_trajectories: list[Trajectory], questions: pd.DataFrame,
                       params: dict[str, Any]
                       ) -> tuple[list[tuple[Trajectory, RewardBreakdown]], dict[str, Any],
                                  dict[str, Any]]:
    """Score every rollout trajectory; return (each with its score, reward_stats, MLflow
    metrics)."""
    config = build_config(ScoringConfig, params, "prs_scoring")
    reward_fn = build_reward_fn(config.reward_config())
    by_id = _questions_by_id(questions)
    scores = score_batch(reward_fn, rollout_trajectories, by_id, step=config.step)

    stats = reward_statistics(scores, config.histogram_bins)
    stats["config"] = {"reward": config.reward, "step": config.step,
                       "prs": to_dict(reward_fn.config), "judge": config.judge}
    metrics: dict[str, Any] = {}
    for comp in COMPONENTS:
        metrics[f"prs_scoring/{comp}_mean"] = stats["overall"][comp]["mean"]
    for stage, part in stats["by_stage"].items():
        metrics[f"prs_scoring/stage_{stage}_fraction"] = part["fraction"]
        metrics[f"prs_scoring/stage_{stage}_reward_mean"] = part["reward"]["mean"]
    metrics_ds = {k: {"value": float(v), "step": config.step} for k, v in metrics.items()}
    logger.info("scored %d trajectories with %s: reward mean %.4f, stages %s", len(scores),
                config.reward, metrics["prs_scoring/reward_mean"],
                {s: p["count"] for s, p in stats["by_stage"].items()})
    return list(zip(rollout_trajectories, scores)), stats, metrics_ds
