"""Thin adapters: ``params:pretrain`` -> core pretraining loop, probe and card -> catalog."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

import torch

from tirl import tracking
from tirl.core.agent.env import AgentConfig, Sampling
from tirl.core.config import build_config
from tirl.core.eval.probe import check_unseen_record, reading_probe
from tirl.core.pretrain.card import card_files, mean_probe, pretraining_record
from tirl.core.pretrain.config import PretrainConfig
from tirl.core.tools.search import search_settings
from tirl.core.pretrain.loop import pretrain

log = logging.getLogger(__name__)


def machine_description() -> str:
    """CPU model, cores and torch threads (or the GPU), for the model card."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), host {cpu}"
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, no GPU"


def run_pretrain(params: dict[str, Any], search: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(pretrained_model, pretrain_summary)``: the built-in base trained per
    ``params:pretrain`` on fresh worlds searched as ``params:agent.search`` says (resumes
    from its checkpoint directory)."""
    config = build_config(PretrainConfig, params, "pretrain")
    top_k, max_passage_tokens = search_settings(search)
    model, tokenizer, summary = pretrain(config, top_k=top_k, max_passage_tokens=max_passage_tokens,
                                         on_metrics=tracking.make_metrics_logger("pretrain"))
    summary["machine"] = machine_description()
    return {"model": model, "tokenizer": tokenizer}, summary


def probe_pretrained(pretrained_model: dict[str, Any], pretrain_summary: dict[str, Any],
                     params: dict[str, Any], agent: dict[str, Any]) -> dict[str, Any]:
    """``pretrain_probe``: the reading probe on each of ``pretrain.probe.world_seeds``, the
    agent greedy in the ``params:agent`` environment."""
    config = build_config(PretrainConfig, params, "pretrain")
    env = build_config(AgentConfig, agent, "agent")
    per_seed = []
    for seed in config.probe.world_seeds:
        check_unseen_record(seed, pretrain_summary, "pretrain_summary")
        found = reading_probe(pretrained_model["model"], pretrained_model["tokenizer"],
                              world_seed=seed, n=config.probe.n, sample_seed=config.probe.sample_seed,
                              rollout=env.rollout_overrides(Sampling(temperature=0.0)),
                              search=dict(env.search))
        log.info("reading probe, world %d: %s", seed,
                 ", ".join(f"{k} {v:.3f}" for k, v in found.items() if isinstance(v, float)))
        per_seed.append(found)
    mean = mean_probe(per_seed)
    tracking.log_metrics({f"probe/{k}": v for k, v in mean.items()}, stage="pretrain")
    return {"per_seed": per_seed, "mean": mean}


def publish_base(pretrained_model: dict[str, Any], pretrain_summary: dict[str, Any],
                 pretrain_probe: dict[str, Any]) -> dict[str, Any]:
    """``builtin_base``: the weights, tokenizer, model card and pretraining record, as one set."""
    record = pretraining_record(pretrain_summary, pretrain_probe)
    return {**pretrained_model, "files": card_files(record)}
