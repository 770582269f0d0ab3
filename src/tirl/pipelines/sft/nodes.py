"""Thin adapter: catalog tables -> gold chats + passages -> core SFT loop."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from tirl import tracking
from tirl.core.agent.protocol import default_tools, with_system
from tirl.core.config import build_config, to_dict
from tirl.core.sft.config import SFTConfig
from tirl.core.sft.loop import train_sft
from tirl.pipelines.model_init.nodes import parse_messages

log = logging.getLogger(__name__)


def passage_texts(corpus: pd.DataFrame) -> list[str]:
    """Corpus passages written the way the search tool shows them, for the LM phase."""
    missing = [c for c in ("title", "text") if c not in corpus.columns]
    if missing:
        raise ValueError(f"corpus: missing columns {missing} (has {list(corpus.columns)})")
    return [f"Doc 1 (Title: {t}) {x}" for t, x in zip(corpus["title"], corpus["text"])]


def gold_chats(gold_trajectories: pd.DataFrame,
               name: str = "gold_trajectories") -> list[list[dict[str, str]]]:
    """Gold chats with the system prompt prepended (stored chats carry none)."""
    missing = [c for c in ("id", "messages") if c not in gold_trajectories.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")
    return [with_system(parse_messages(m, f"{name} row id={i!r}"))
            for i, m in zip(gold_trajectories["id"], gold_trajectories["messages"])]


def chats_by_split(gold_trajectories: pd.DataFrame, questions: pd.DataFrame) -> dict[str, list]:
    """Gold chats grouped by their question's split (gold rows of unknown questions fail)."""
    missing = [c for c in ("id", "split") if c not in questions.columns]
    if missing:
        raise ValueError(f"questions: missing columns {missing}")
    if "question_id" not in gold_trajectories.columns:
        raise ValueError("gold_trajectories: missing column 'question_id'")
    split_of = dict(zip(questions["id"], questions["split"]))
    unknown = sorted(set(gold_trajectories["question_id"]) - set(split_of))
    if unknown:
        raise ValueError(f"gold_trajectories: {len(unknown)} rows refer to unknown question ids, "
                         f"e.g. {unknown[:3]}")
    out: dict[str, list] = {}
    for qid, chat in zip(gold_trajectories["question_id"], gold_chats(gold_trajectories)):
        out.setdefault(split_of[qid], []).append(chat)
    return out


def run_sft(base_model: dict[str, Any], gold_trajectories: pd.DataFrame,
            practice_trajectories: pd.DataFrame, corpus: pd.DataFrame, questions: pd.DataFrame,
            params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(sft_model, sft_metrics)``. Trains ``base_model["model"]`` in place (the catalog
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
    log_to_mlflow = tracking.make_metrics_logger()

    def on_metrics(metrics: dict[str, float], step: int) -> None:
        history.append({"step": step, **metrics})
        log_to_mlflow(metrics, step)

    practice = gold_chats(practice_trajectories, "practice_trajectories") \
        if len(practice_trajectories) else []
    model, summary = train_sft(base_model["model"], base_model["tokenizer"], chats, config,
                               tools=default_tools(), pretrain_texts=texts, on_metrics=on_metrics,
                               probe_chats=probes, practice_chats=practice)
    tracking.log_metrics(summary)
    log.info("sft summary: %s", summary)
    metrics = {**summary, "config": to_dict(config), "history": history}
    return {"model": model, "tokenizer": base_model["tokenizer"]}, metrics
