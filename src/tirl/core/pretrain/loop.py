"""Pretraining the built-in base on a stream of fresh worlds: tokenizer, model, loop.

Steps are optimiser steps over ``batch_size`` whole chats. The stream is cut into blocks of
``worlds_per_block`` worlds whose chats are shuffled together; block ``b`` always holds the
same worlds, so a run resumed from a checkpoint (which records the block and the batch
within it) reads exactly the chats the uninterrupted run would have read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from tirl.core.config import build_config, to_dict
from tirl.core.modeling.factory import build_model, load_model, train_tokenizer
from tirl.core.modeling.prefix import MIN_SHARED_PREFIX, common_prefix_len, lm_loss
from tirl.core.pretrain.card import PRETRAINING_FILE
from tirl.core.pretrain.config import PretrainConfig, pretrain_seeds
from tirl.core.pretrain.validation import turn_accuracy
from tirl.core.pretrain.stream import (
    ChatEncoder, WeightedExample, block_batches, block_seeds, collate_weighted, iter_blocks, world_chats,
    world_config, world_texts,
)
from tirl.core.rl import checkpoint as ckpt
from tirl.core.sft.loop import lr_at

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
    wall clock, throughput and the validation figures.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    model, tokenizer, optimizer, state = _start(config, top_k, max_passage_tokens)
    encoder = ChatEncoder(tokenizer)
    val = _val_examples(config, encoder, top_k, max_passage_tokens)
    meter = _Meter(config, state, sum(p.numel() for p in model.parameters()), on_metrics)
    log.info("pretrain: %.2fM parameters, vocab %d, %d steps, matmul peak %.0f GFLOP/s",
             meter.n_params / 1e6, len(tokenizer), config.total_steps, meter.peak / 1e9)

    def make_examples(seeds: range) -> list[WeightedExample]:
        phase = config.phases[state["block_phase"]]
        pretrain_seeds(seeds.start, len(seeds), config.reserved_seeds, config.val_seed)
        chats = []
        for seed in seeds:
            cfg = world_config(seed, config.questions, {**config.world, **phase.world})
            chats += world_chats(cfg, top_k=top_k, max_passage_tokens=max_passage_tokens)
        return encoder.encode(chats, max_len=config.max_len)

    model.train()
    while state["step"] < config.total_steps:
        cycle = config.cycle_at(state["step"])[0]
        if cycle != state["cycle"]:
            # A warm restart: fresh AdamW moments and a fresh block of worlds, so a finished
            # base continued here (continue_from) trains exactly as the uninterrupted run.
            optimizer = _optimizer(model, config)
            state["cycle"] = cycle
            if state["batch"]:
                state["block"], state["batch"] = state["block"] + 1, 0
        # A block's worlds follow the phase of its first step, also when a run resumes mid-block.
        state["block_phase"] = state["block_phase"] if state["batch"] else config.phase_at(state["step"])
        _, examples = next(iter_blocks(first_seed=config.first_seed, start_block=state["block"],
                                       worlds_per_block=config.worlds_per_block,
                                       make_examples=make_examples))
        batches = block_batches(examples, config.batch_size, seed=config.seed * 1_000_003 + state["block"])
        while (state["batch"] < len(batches) and state["step"] < config.total_steps
               and config.cycle_at(state["step"])[0] == cycle):
            _train_step(model, optimizer, config, state,
                        [examples[i] for i in batches[state["batch"]]], tokenizer.pad_token_id)
            state["batch"] += 1
            state["step"] += 1
            meter.after_step(model, val, tokenizer.pad_token_id)
            if meter.due(config.checkpoint_every) and config.checkpoint_dir:
                meter.lap()
                _save(config, model, tokenizer, optimizer, state)
        if state["batch"] >= len(batches):
            state["block"] += 1
            state["batch"] = 0
    meter.lap()
    model.eval()
    summary = _summary(config, state, meter, len(tokenizer))
    summary["config"] = _recipe_record(config, top_k=top_k, max_passage_tokens=max_passage_tokens)
    return model, tokenizer, summary


def _recipe_record(config: PretrainConfig, *, top_k: int | None,
                   max_passage_tokens: int | None) -> dict[str, Any]:
    """The recipe as ``pretraining.json`` records it: the config and the search settings the
    gold chats were searched with, which a continuation (continue_from) must match too.
    (``top_k`` None: a record written without it, which then differs.)"""
    return {**to_dict(config), "top_k": top_k, "max_passage_tokens": max_passage_tokens}


def _start(config: PretrainConfig, top_k: int,
           max_passage_tokens: int | None) -> tuple[Any, Any, torch.optim.Optimizer, dict[str, Any]]:
    """A fresh model, or the newest checkpoint's, with its optimiser, progress and RNG."""
    torch.manual_seed(config.seed)
    resumed = ckpt.load_latest(config.checkpoint_dir) if config.resume else None
    state = {"step": 0, "block": 0, "batch": 0, "block_phase": 0, "cycle": 0, "tokens": 0,
             "computed_tokens": 0, "seconds": 0.0, "history": [], "val": []}
    if resumed is None and config.continue_from:
        model, tokenizer, state = _continue_state(config, state, top_k, max_passage_tokens)
        return model, tokenizer, _optimizer(model, config), state
    if resumed is None:
        model, tokenizer = build_builtin_base(config, top_k)
        return model, tokenizer, _optimizer(model, config), state
    tokenizer = resumed.state["tokenizer"]
    model = build_model(tokenizer, config.architecture)
    model.load_state_dict(resumed.state["model"])
    optimizer = _optimizer(model, config)
    optimizer.load_state_dict(resumed.state["optimizer"])
    state.update(resumed.state["progress"])
    ckpt.set_rng_state(resumed.state["rng"])
    log.info("pretrain: resuming from %s (step %d)", resumed.path, resumed.step)
    return model, tokenizer, optimizer, state


#: Keys of a recorded recipe that do not change what the weights become.
_NOT_RECIPE = ("continue_from", "checkpoint_dir", "checkpoint_every", "resume", "log_every",
               "threads", "probe", "phases", "val_chats", "eval_every")


def _continue_state(config: PretrainConfig, fresh: dict[str, Any], top_k: int,
                    max_passage_tokens: int | None) -> tuple[Any, Any, dict[str, Any]]:
    """Model, tokenizer and progress of the finished base ``continue_from``, checked to be a
    prefix of this recipe that ends where a restart phase begins (ValueError otherwise)."""
    path = Path(config.continue_from) / PRETRAINING_FILE
    if not path.is_file():
        raise ValueError(f"pretrain.continue_from: {path} does not exist (a base this recipe "
                         "produced has a pretraining.json)")
    record = json.loads(path.read_text())
    steps = int(record["steps"])
    starts = config.phase_starts()
    restarts = [i for i, p in enumerate(config.phases) if p.restart and starts[i] == steps]
    if not restarts:
        raise ValueError(f"pretrain.continue_from: {path} ended at step {steps}, where no phase "
                         f"with restart: true begins (phases begin at steps {starts})")
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    recorded = build_config(PretrainConfig, {k: v for k, v in record["config"].items() if k in fields},
                            f"{path}:config")
    mine = _recipe_record(config, top_k=top_k, max_passage_tokens=max_passage_tokens)
    theirs = _recipe_record(recorded, top_k=record["config"].get("top_k"),
                            max_passage_tokens=record["config"].get("max_passage_tokens"))
    differ = sorted(k for k in mine if k not in _NOT_RECIPE and mine[k] != theirs[k])
    if differ or recorded.phases != config.phases[:restarts[0]]:
        raise ValueError(f"pretrain.continue_from: {path} was trained with another recipe "
                         f"(differs in {differ or ['phases']}): continuing it would not give "
                         "what this recipe gives")
    model, tokenizer = load_model(config.continue_from)
    last_seed = int(record["world_seeds"][1])
    state = {**fresh, "step": steps, "block": (last_seed - config.first_seed + 1) // config.worlds_per_block,
             "batch": 0, "cycle": config.cycle_at(steps)[0] - 1, "tokens": int(record["tokens"]),
             "computed_tokens": int(record.get("computed_tokens", 0)),
             "seconds": float(record["seconds"]), "val": list(record.get("val", []))}
    log.info("pretrain: continuing %s from step %d (block %d)", config.continue_from, steps, state["block"])
    return model, tokenizer, state


class _Meter:
    """Logging, validation and wall clock of a run (``state`` is the run's progress)."""

    def __init__(self, config: PretrainConfig, state: dict[str, Any], n_params: int,
                 on_metrics: MetricsCallback | None) -> None:
        self.config, self.state, self.n_params, self.on_metrics = config, state, n_params, on_metrics
        self.peak = matmul_peak_flops()
        self.t_run = self.t_mark = time.perf_counter()
        self.tokens_mark, self.computed_mark = state["tokens"], state["computed_tokens"]

    def due(self, every: int) -> bool:
        step = self.state["step"]
        return step % every == 0 or step == self.config.total_steps

    def lap(self) -> None:
        """Add the time since the last lap to the run's wall clock (kept in checkpoints)."""
        now = time.perf_counter()
        self.state["seconds"] += now - self.t_run
        self.t_run = now

    def after_step(self, model: Any, val: list[WeightedExample], pad_id: int) -> None:
        state, step = self.state, self.state["step"]
        if self.due(self.config.log_every):
            now = time.perf_counter()
            dt = max(now - self.t_mark, 1e-9)
            tps = (state["tokens"] - self.tokens_mark) / dt
            computed = (state["computed_tokens"] - self.computed_mark) / dt
            self.t_mark, self.tokens_mark, self.computed_mark = now, state["tokens"], state["computed_tokens"]
            metrics = {"loss": state["last_loss"], "lr": state["last_lr"],
                       "tokens_per_s": tps, "tokens": float(state["tokens"]),
                       "mfu": 6 * self.n_params * computed / self.peak,
                       "worlds": float(state["block"] * self.config.worlds_per_block)}
            state["history"].append({"step": step, **metrics})
            log.info("pretrain step %d/%d loss %.4f lr %.2e tok/s %.0f (%.0f%% of matmul peak)",
                     step, self.config.total_steps, metrics["loss"], metrics["lr"],
                     tps, 100 * metrics["mfu"])
            self._emit(metrics, step)
        if val and self.due(self.config.eval_every):
            found = turn_accuracy(model, val, pad_id)
            model.train()
            state["val"].append({"step": step, "tokens": state["tokens"], **found})
            log.info("pretrain step %d validation: %s", step,
                     ", ".join(f"{k} {v:.3f}" for k, v in found.items()))
            self._emit({f"val/{k}": v for k, v in found.items()}, step)

    def _emit(self, metrics: Mapping[str, float], step: int) -> None:
        if self.on_metrics is not None:
            self.on_metrics(metrics, step)


def _summary(config: PretrainConfig, state: dict[str, Any], meter: _Meter, vocab: int) -> dict[str, Any]:
    # The last block read: the current one, unless the run ended exactly on a block boundary.
    last_block = state["block"] - (1 if state["batch"] == 0 and state["block"] else 0)
    seconds = max(state["seconds"], 1e-9)
    return {
        "steps": state["step"], "tokens": state["tokens"], "computed_tokens": state["computed_tokens"],
        "seconds": state["seconds"], "parameters": meter.n_params, "vocab": vocab,
        "world_seeds": [config.first_seed,
                        config.first_seed + (last_block + 1) * config.worlds_per_block - 1],
        "tokenizer_seeds": [config.first_seed, config.first_seed + config.tokenizer_worlds - 1],
        "val_seed": config.val_seed, "reserved_seeds": list(config.reserved_seeds),
        "matmul_peak_gflops": meter.peak / 1e9, "tokens_per_s": state["tokens"] / seconds,
        "mfu": 6 * meter.n_params * state["computed_tokens"] / seconds / meter.peak,
        "history": state["history"], "val": state["val"],
    }


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
    phase = config.phases[config.phase_at(state["step"])]
    _, first, end, peak, warmup = config.cycle_at(state["step"])
    scale = lr_at(state["step"] - first, total=end - first, warmup=warmup,
                  schedule="cosine", min_ratio=config.min_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = peak * scale
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
    state["last_lr"] = peak * scale


def _save(config: PretrainConfig, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer,
          state: dict[str, Any]) -> None:
    ckpt.save_checkpoint(config.checkpoint_dir, state["step"], {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "tokenizer": tokenizer,
        "progress": {k: v for k, v in state.items()}, "rng": ckpt.rng_state()}, keep=1)
