"""Thin adapter: catalog (SFT model, questions, corpus) -> core RL loop -> RL model + history.

The online loop itself (rollout -> reward -> VSPO -> update) is a function in
:mod:`tirl.core.rl.trainer`; this node only picks the questions, builds the search tool and
the reward, wires the metrics callback to MLflow, and points checkpoints at
``<checkpoint_root>/<run_name>`` so that a killed ``kedro run`` resumes where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tirl import tracking
from tirl.core.config import build_config, field_
from tirl.core.records import split_records
from tirl.core.rl.trainer import TrainConfig, make_reward, train
from tirl.core.tools.search import build_search_tool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VSPOUpdateConfig:
    """``params:vspo_update``."""

    split: str = field_("train", doc="question split trained on")
    n_questions: int | None = field_(None, doc="first N questions of the split (null = all)", ge=1)
    run_name: str = field_("vspo_update", doc="names the checkpoint folder (one per variant)")
    checkpoint_root: str = field_("data/06_models/checkpoints", doc="checkpoints go to <root>/<run_name>")
    resume: bool = field_(True, doc="continue from the newest checkpoint of this run, if any")
    device: str | None = field_(None, doc="torch device; null = cuda when available, else cpu")
    search: dict[str, Any] = field_(default_factory=lambda: {"kind": "bm25", "top_k": 3},
                                    doc="build_search_tool options")
    metrics_prefix: str = field_("rl/", doc="prefix of the per-step MLflow metric keys")
    train: TrainConfig = field_(default_factory=TrainConfig, doc="the RL loop (TrainConfig)")


def question_records(questions: pd.DataFrame, split: str, n: int | None) -> list[dict[str, Any]]:
    """Plain-python records of one split (parquet lists arrive as numpy arrays)."""
    missing = [c for c in ("id", "question", "answers", "split") if c not in questions.columns]
    if missing:
        raise ValueError(f"questions: missing columns {missing} (has {list(questions.columns)})")
    return split_records(questions, split, n, key="vspo_update.split")


def run_vspo_update(sft_model: dict[str, Any], questions: pd.DataFrame, corpus: pd.DataFrame,
                    params: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """``(rl_model, rl_history)``: train ``sft_model`` online; one history row per step."""
    import torch

    config = build_config(VSPOUpdateConfig, params, "vspo_update")
    records = question_records(questions, config.split, config.n_questions)
    model, tokenizer = sft_model["model"], sft_model["tokenizer"]
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    tools = {"search": build_search_tool(corpus, tokenizer=tokenizer, **config.search)}
    checkpoint_dir = Path(config.checkpoint_root) / config.run_name
    log.info("vspo_update: %s on %d %s questions; checkpoints in %s", config.train.algorithm,
             len(records), config.split, checkpoint_dir)
    policy, history = train(
        policy=model, tokenizer=tokenizer, questions=records, tools=tools, config=config.train,
        reward_fn=make_reward(config.train),
        on_metrics=tracking.make_metrics_logger(config.metrics_prefix),
        checkpoint_dir=checkpoint_dir, resume=config.resume)
    return {"model": policy.to("cpu"), "tokenizer": tokenizer}, history
