"""Thin adapters: catalog tables -> training texts -> core model factory."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from tirl.core.config import build_config
from tirl.core.data.chats import tokenizer_texts
from tirl.core.modeling.factory import SCRATCH, ModelInitConfig, make_base_model

log = logging.getLogger(__name__)


def init_model(corpus: pd.DataFrame, questions: pd.DataFrame, gold_trajectories: pd.DataFrame,
               params: dict[str, Any]) -> dict[str, Any]:
    """``base_model``: ``{"model", "tokenizer"}`` per ``params:model_init``."""
    config = build_config(ModelInitConfig, params, "model_init")
    texts = tokenizer_texts(corpus, questions, gold_trajectories) if config.model == SCRATCH else []
    model, tokenizer = make_base_model(config, texts)
    n = sum(p.numel() for p in model.parameters())
    log.info("model_init: %s, %.2fM parameters, vocab %d", config.model, n / 1e6, len(tokenizer))
    return {"model": model, "tokenizer": tokenizer}
