"""Pretraining the built-in base on a stream of fresh worlds: tokenizer, model, loop.

Steps are optimiser steps over ``batch_size`` whole chats. The stream is cut into blocks of
``worlds_per_block`` worlds whose chats are shuffled together; block ``b`` always holds the
same worlds, so a run resumed from a checkpoint (which records the block and the batch
within it) reads exactly the chats the uninterrupted run would have read.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from tirl.core.modeling.factory import build_model, train_tokenizer
from tirl.core.modeling.prefix import MIN_SHARED_PREFIX, common_prefix_len, lm_loss
from tirl.core.pretrain.config import PretrainConfig, pretrain_seeds
from tirl.core.pretrain.validation import turn_accuracy
from tirl.core.pretrain.stream import (
    ChatEncoder, WeightedExample, block_batches, block_seeds, collate_weighted, iter_blocks, world_chats,
    world_config, world_texts,
)
from tirl.core.rl import checkpoint as ckpt
from tirl.core.rl.sft import lr_at

log = logging.getLogger(__name__)
MetricsCallback = Callable[[Mapping[str, float], int], None]


def build_builtin_base(config: PretrainConfig, top_k: int = 3) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a BPE tokenizer trained on the first ``tokenizer_worlds``
    pretraining worlds (never the benchmark world) and a fresh model of ``architecture``."""
    seeds = pretrain_seeds(config.first_seed, config.tokenizer_worlds, config.reserved_seeds,
                           config.val_seed)
    texts: list[str] = []
    for seed in seeds:
        texts += world_texts(world_config(seed, config.questions, config.world), top_k=top_k)
    tokenizer = train_tokenizer(texts, vocab_size=config.vocab_size,
                                min_frequency=config.min_frequency,
                                model_max_length=config.architecture.max_len)
    return build_model(tokenizer, config.architecture), tokenizer


def matmul_peak_flops(n: int = 1024, repeats: int = 8) -> float:
    """Measured FLOP/s of an ``n x n`` fp32 matrix product (best of ``repeats``): the
    denominator of the model-FLOPs fraction, taken in the same process as the training."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def _phase_at(config: PretrainConfig, step: int) -> int:
    end = 0
    for i, phase in enumerate(config.phases):
        end += phase.steps
        if step < end:
            return i
    return len(config.phases) - 1


def _optimizer(model: torch.nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=config.lr, betas=(config.beta1, config.beta2))


def pretrain(config: PretrainConfig, *, top_k: int = 3, max_passage_tokens: int | None = None,
             on_metrics: MetricsCallback | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Train the built-in base per ``config``; returns ``(model, tokenizer, summary)``.

    ``top_k`` and ``max_passage_tokens`` are the agent environment's search settings
    (``params:agent``): the gold chats are searched the way the agent will search.

    ``summary`` holds what the model card reports: steps, tokens, worlds and their seeds,
    wall clock, throughput and the last validation figures.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    resumed = ckpt.load_latest(config.checkpoint_dir) if config.resume else None
    if resumed is not None:
        tokenizer = resumed.state["tokenizer"]
        model = build_model(tokenizer, config.architecture)
        model.load_state_dict(resumed.state["model"])
        log.info("pretrain: resuming from %s (step %d)", resumed.path, resumed.step)
    else:
        model, tokenizer = build_builtin_base(config, top_k)
    pad_id = tokenizer.pad_token_id
    encoder = ChatEncoder(tokenizer)
    optimizer = _optimizer(model, config)
    state = {"step": 0, "block": 0, "batch": 0, "block_phase": 0, "tokens": 0,
             "computed_tokens": 0, "seconds": 0.0, "history": [], "val": []}
    if resumed is not None:
        optimizer.load_state_dict(resumed.state["optimizer"])
        state.update(resumed.state["progress"])
        ckpt.set_rng_state(resumed.state["rng"])

    val = _val_examples(config, encoder, top_k, max_passage_tokens)
    n_params = sum(p.numel() for p in model.parameters())
    peak = matmul_peak_flops()
    log.info("pretrain: %.2fM parameters, vocab %d, %d steps, matmul peak %.0f GFLOP/s",
             n_params / 1e6, len(tokenizer), config.total_steps, peak / 1e9)

    def make_examples(seeds: range) -> list[WeightedExample]:
        phase = config.phases[state["block_phase"]]
        pretrain_seeds(seeds.start, len(seeds), config.reserved_seeds, config.val_seed)
        chats = []
        for seed in seeds:
            cfg = world_config(seed, config.questions, {**config.world, **phase.world})
            chats += world_chats(cfg, top_k=top_k, max_passage_tokens=max_passage_tokens)
        return encoder.encode(chats, max_len=config.max_len)

    total = config.total_steps
    model.train()
    t_run = time.perf_counter()
    t_mark, tokens_mark, computed_mark = t_run, state["tokens"], state.get("computed_tokens", 0)
    while state["step"] < total:
        state["block_phase"] = state["block_phase"] if state["batch"] else _phase_at(config, state["step"])
        _, examples = next(iter_blocks(first_seed=config.first_seed, start_block=state["block"],
                                       worlds_per_block=config.worlds_per_block,
                                       make_examples=make_examples))
        batches = block_batches(examples, config.batch_size, seed=config.seed * 1_000_003 + state["block"])
        while state["batch"] < len(batches) and state["step"] < total:
            _train_step(model, optimizer, config, state,
                        [examples[i] for i in batches[state["batch"]]], pad_id)
            state["batch"] += 1
            state["step"] += 1
            step = state["step"]
            if step % config.log_every == 0 or step == total:
                now = time.perf_counter()
                tps = (state["tokens"] - tokens_mark) / max(now - t_mark, 1e-9)
                cps = (state["computed_tokens"] - computed_mark) / max(now - t_mark, 1e-9)
                t_mark, tokens_mark, computed_mark = now, state["tokens"], state["computed_tokens"]
                metrics = {"pretrain/loss": state["last_loss"], "pretrain/lr": state["last_lr"],
                           "pretrain/tokens_per_s": tps, "pretrain/tokens": float(state["tokens"]),
                           "pretrain/mfu": 6 * n_params * cps / peak,
                           "pretrain/worlds": float(state["block"] * config.worlds_per_block)}
                state["history"].append({"step": step, **metrics})
                log.info("pretrain step %d/%d loss %.4f lr %.2e tok/s %.0f (%.0f%% of matmul peak)",
                         step, total, metrics["pretrain/loss"], metrics["pretrain/lr"], tps,
                         100 * metrics["pretrain/mfu"])
                if on_metrics is not None:
                    on_metrics(metrics, step)
            if val and (step % config.eval_every == 0 or step == total):
                found = turn_accuracy(model, val, pad_id)
                model.train()
                state["val"].append({"step": step, "tokens": state["tokens"], **found})
                log.info("pretrain step %d validation: %s", step,
                         ", ".join(f"{k} {v:.3f}" for k, v in found.items()))
                if on_metrics is not None:
                    on_metrics({f"pretrain/val/{k}": v for k, v in found.items()}, step)
            if config.checkpoint_dir and (step % config.checkpoint_every == 0 or step == total):
                state["seconds"] += time.perf_counter() - t_run
                t_run = time.perf_counter()
                _save(config, model, tokenizer, optimizer, state)
        if state["batch"] >= len(batches):
            state["block"] += 1
            state["batch"] = 0
    state["seconds"] += time.perf_counter() - t_run
    model.eval()
    last_block = state["block"] - (1 if state["batch"] == 0 and state["block"] else 0)
    summary = {
        "steps": state["step"], "tokens": state["tokens"], "seconds": state["seconds"],
        "parameters": n_params, "vocab": len(tokenizer),
        "world_seeds": [config.first_seed,
                        config.first_seed + (last_block + 1) * config.worlds_per_block - 1],
        "tokenizer_seeds": [config.first_seed, config.first_seed + config.tokenizer_worlds - 1],
        "val_seed": config.val_seed, "reserved_seeds": list(config.reserved_seeds),
        "matmul_peak_gflops": peak / 1e9,
        "tokens_per_s": state["tokens"] / max(state["seconds"], 1e-9),
        "history": state["history"], "val": state["val"],
    }
    summary["computed_tokens"] = state.get("computed_tokens", 0)
    summary["mfu"] = 6 * n_params * summary["computed_tokens"] / max(state["seconds"], 1e-9) / peak
    return model, tokenizer, summary


def _val_examples(config: PretrainConfig, encoder: ChatEncoder, top_k: int,
                  max_passage_tokens: int | None) -> list[WeightedExample]:
    if not config.val_chats:
        return []
    chats = world_chats(world_config(config.val_seed, config.questions, config.world),
                        top_k=top_k, max_passage_tokens=max_passage_tokens)
    # Every question type in proportion, in a fixed order: the first val_chats after a
    # seeded shuffle.
    random.Random(config.val_seed).shuffle(chats)
    return encoder.encode(chats[:config.val_chats], max_len=config.max_len)


def _train_step(model: Any, optimizer: torch.optim.Optimizer, config: PretrainConfig,
                state: dict[str, Any], examples: list[WeightedExample], pad_id: int) -> None:
    phase = config.phases[_phase_at(config, state["step"])]
    scale = lr_at(state["step"], total=config.total_steps, warmup=config.warmup_steps,
                  schedule="cosine", min_ratio=config.min_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * scale
    batch = collate_weighted(examples, pad_id, phase.context_weight)
    # The system turn opens every chat: lm_loss runs it once per batch (modeling.prefix).
    loss = lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["weights"])
    loss.backward()
    if config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state["tokens"] += int(batch["attention_mask"].sum())
    # Tokens the model actually ran: the shared system prefix counts once per batch.
    shared = common_prefix_len(batch["input_ids"], batch["attention_mask"])
    shared = shared if MIN_SHARED_PREFIX <= shared < batch["input_ids"].shape[1] else 0
    state["computed_tokens"] = state.get("computed_tokens", 0) + \
        int(batch["attention_mask"].sum()) - (len(examples) - 1) * shared
    state["last_loss"] = float(loss.detach())
    state["last_lr"] = config.lr * scale


def _save(config: PretrainConfig, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer,
          state: dict[str, Any]) -> None:
    ckpt.save_checkpoint(config.checkpoint_dir, state["step"], {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "tokenizer": tokenizer,
        "progress": {k: v for k, v in state.items()}, "rng": ckpt.rng_state()}, keep=1)
