"""Thin adapter: catalog tables -> gold chats + passages -> core SFT loop."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from tirl import tracking
from tirl.core.agent.protocol import default_tools
from tirl.core.config import build_config, to_dict
from tirl.core.data.chats import chats_by_split, gold_chats, passage_texts
from tirl.core.measurements import split_measurements
from tirl.core.sft.config import SFTConfig
from tirl.core.sft.loop import train_sft

log = logging.getLogger(__name__)


def run_sft(base_model: dict[str, Any], gold_trajectories: pd.DataFrame,
            practice_trajectories: pd.DataFrame, corpus: pd.DataFrame, questions: pd.DataFrame,
            params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(sft_model, sft_metrics, sft_timings)``; the wall-clock figures (seconds, tokens per
    second) are in ``sft_timings`` only, so that a rerun reproduces ``sft_metrics`` byte for
    byte (:mod:`tirl.core.measurements`). Trains ``base_model["model"]`` in place (the catalog
    hands each node its own copy) on the gold chats of ``sft.train_splits`` only, so that
    validation questions stay unseen, plus the practice worlds' chats in
    ``sft.practice_phases``."""
    config = build_config(SFTConfig, params, "sft")
    by_split = chats_by_split(gold_trajectories, questions)
    chats = [c for s in config.train_splits for c in by_split.get(s, [])]
    if not chats:
        raise ValueError(f"sft: no gold trajectories in splits {list(config.train_splits)} "
                         f"(have {sorted(by_split)})")
    probes = {s: by_split[s] for s in config.probe_splits if by_split.get(s)}
    texts = passage_texts(corpus) if config.pretrain_steps else []
    history: list[dict[str, float]] = []
    log_to_mlflow = tracking.make_metrics_logger("sft")

    def on_metrics(metrics: dict[str, float], step: int) -> None:
        history.append({"step": step, **tracking.prefixed(metrics, "sft")})
        log_to_mlflow(metrics, step)

    practice = gold_chats(practice_trajectories, "practice_trajectories") \
        if len(practice_trajectories) else []
    model, summary = train_sft(base_model["model"], base_model["tokenizer"], chats, config,
                               tools=default_tools(), pretrain_texts=texts, on_metrics=on_metrics,
                               probe_chats=probes, practice_chats=practice)
    summary = tracking.prefixed(summary, "sft")
    tracking.log_metrics(summary)
    log.info("sft summary: %s", summary)
    results, timings = split_measurements(summary, keep=())
    split = [split_measurements(row) for row in history]
    metrics = {**results, "config": to_dict(config), "history": [r for r, _ in split]}
    timings = {**timings, "history": [m for _, m in split]}
    return {"model": model, "tokenizer": base_model["tokenizer"]}, metrics, timings
