"""Nodes of the ``inspect_rewards`` stage: score rollout trajectories with PRS or the binary reward.

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
from tirl.core.records import records
from tirl.core.rewards.prs import reward_stats, score_batch
from tirl.core.rl.config import TrainConfig, make_reward
from tirl.core.types import RewardBreakdown, Trajectory
from tirl.tracking import prefixed

logger = logging.getLogger(__name__)

COMPONENTS = ("reward", "format", "quality", "exact_match", "outcome")
#: The columns of a reward breakdown, in order (reward, stage, format, quality, ...).
SCORE_COLUMNS = tuple(f.name for f in fields(RewardBreakdown))


@dataclass(frozen=True)
class ScoringConfig:
    """``params:inspect_rewards``. The reward itself (``reward``, ``prs``, ``judge``) is the
    RL stage's, ``params:rl.train``: one place for the values the policy is trained on."""

    step: int = field_(0, doc="training step the curriculum schedule is evaluated at", ge=0)
    histogram_bins: int = field_(10, doc="bins of the [0, 1] histograms in inspect_rewards_stats", ge=1)


def stage_reward(params: dict[str, Any], rl: dict[str, Any]) -> tuple[ScoringConfig, TrainConfig]:
    """``(ScoringConfig, TrainConfig)``: this stage's options and the RL stage's reward."""
    config = build_config(ScoringConfig, params, "inspect_rewards")
    train = build_config(TrainConfig, (rl or {}).get("train") or {}, "rl.train")
    return config, train


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


def score_trajectories(trajectories: list[Trajectory], questions: pd.DataFrame,
                       params: dict[str, Any], rl: dict[str, Any]
                       ) -> tuple[list[tuple[Trajectory, RewardBreakdown]], dict[str, Any],
                                  dict[str, Any]]:
    """Score every rollout trajectory with the RL stage's reward (``params:rl.train``);
    return (each with its score, inspect_rewards_stats, MLflow metrics)."""
    config, train = stage_reward(params, rl)
    reward_fn = make_reward(train)
    by_id = _questions_by_id(questions)
    scores = score_batch(reward_fn, trajectories, by_id, step=config.step)

    stats = reward_statistics(scores, config.histogram_bins)
    stats["config"] = {"reward": train.reward, "step": config.step,
                       "prs": to_dict(train.prs), "judge": to_dict(train.judge)}
    # The metric names RL logs every step (reward_stats), under this stage's prefix.
    metrics = prefixed(reward_stats(scores), "inspect_rewards")
    metrics_ds = {k: {"value": float(v), "step": config.step} for k, v in metrics.items()}
    logger.info("scored %d trajectories with %s: reward mean %.4f, stages %s", len(scores),
                train.reward, metrics["inspect_rewards/reward/mean"],
                {s: p["count"] for s, p in stats["by_stage"].items()})
    return list(zip(trajectories, scores)), stats, metrics_ds
