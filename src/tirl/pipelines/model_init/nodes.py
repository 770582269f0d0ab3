"""Thin adapters: catalog tables -> training texts -> core model factory."""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd

from tirl.core.agent.protocol import SYSTEM_PROMPT, default_tools, with_system
from tirl.core.config import build_config
from tirl.core.modeling.factory import SCRATCH, ModelInitConfig, make_base_model, render_chats_as_text

log = logging.getLogger(__name__)


def _require(df: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing} (has {list(df.columns)})")


def parse_messages(value: Any, where: str) -> list[dict[str, str]]:
    """A gold ``messages`` cell (JSON string, or already a list) as a list of messages."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: messages is not valid JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                              for m in value):
        raise ValueError(f"{where}: messages must be a list of {{role, content}} objects")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


def tokenizer_texts(corpus: pd.DataFrame, questions: pd.DataFrame,
                    gold_trajectories: pd.DataFrame) -> list[str]:
    """Everything the built-in tokenizer should compress well: passages as the search tool
    prints them, questions and answers, and gold chats rendered by the chat template."""
    _require(corpus, "corpus", ("title", "text"))
    _require(questions, "questions", ("question", "answers"))
    _require(gold_trajectories, "gold_trajectories", ("id", "messages"))
    texts = [f"Doc 1 (Title: {t}) {x}" for t, x in zip(corpus["title"], corpus["text"])]
    texts += [str(q) for q in questions["question"]]
    texts += [" ".join(map(str, a)) for a in questions["answers"]]
    chats = [with_system(parse_messages(m, f"gold_trajectories row id={i!r}"))
             for i, m in zip(gold_trajectories["id"], gold_trajectories["messages"])]
    texts += render_chats_as_text(chats, default_tools())
    texts.append(SYSTEM_PROMPT)
    return texts


def init_model(corpus: pd.DataFrame, questions: pd.DataFrame, gold_trajectories: pd.DataFrame,
               params: dict[str, Any]) -> dict[str, Any]:
    """``base_model``: ``{"model", "tokenizer"}`` per ``params:model_init``."""
    config = build_config(ModelInitConfig, params, "model_init")
    texts = tokenizer_texts(corpus, questions, gold_trajectories) if config.model == SCRATCH else []
    model, tokenizer = make_base_model(config, texts)
    n = sum(p.numel() for p in model.parameters())
    log.info("model_init: %s, %.2fM parameters, vocab %d", config.model, n / 1e6, len(tokenizer))
    return {"model": model, "tokenizer": tokenizer}
