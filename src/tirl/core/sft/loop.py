"""SFT warm start: optional LM pretraining on passages, then assistant-only SFT on gold chats.

A from-scratch model knows no language, so :func:`train_sft` can first run
``pretrain_steps`` of plain next-token prediction on packed corpus passages (the text the
search tool will show it), then trains on gold trajectories with the loss on assistant
tokens only (docs/algorithms.md, "SFT (warm start)"): the model learns to write tool calls
and answers, never to predict the system prompt, the question or a tool's output.

Per-step metrics go to ``on_metrics(dict, step)`` (``loss``, ``lr``, ``tokens_per_s``,
``grad_norm``; ``pretrain/...`` for the LM phase), unprefixed: the stage logs them under
``sft/`` (tirl.tracking.STAGE_PREFIXES).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from accelerate import Accelerator

from tirl.core.agent.protocol import render_text
from tirl.core.modeling.prefix import lm_loss
from tirl.core.modeling.trainable import set_trainable
from tirl.core.progress import progress
from tirl.core.sft.config import SCHEDULES, SFTConfig
from tirl.core.sft.examples import IGNORE_INDEX, build_sft_examples, collate, pack_texts, sft_batches
from tirl.core.sft.probe import probe_generation

log = logging.getLogger(__name__)

MetricsCallback = Callable[[Mapping[str, float], int], None]
Chats = Sequence[Sequence[Mapping[str, str]]]


def train_sft(model: Any, tokenizer: Any, chats: Chats, config: SFTConfig, *,
              tools: Sequence[Mapping[str, Any]] | None = None,
              pretrain_texts: Sequence[str] = (), on_metrics: MetricsCallback | None = None,
              probe_chats: Mapping[str, Chats] | None = None, practice_chats: Chats = (),
              accelerator: Any = None) -> tuple[Any, dict[str, float]]:
    """Train ``model`` in place (pretraining phase, then SFT) and return it with a summary.

    Steps are numbered globally: pretraining ``0..P-1``, SFT ``P..P+S-1``. The summary holds
    final/initial losses, step counts, wall time and, if ``probe_size``, greedy-decoding probes
    (see :func:`~tirl.core.sft.probe.probe_generation`) on the first ``probe_size`` chats of
    each entry of ``probe_chats`` (name -> chats, keys ``probe/<name>/...``), by default
    ``{"train": chats}``. ``practice_chats`` (other worlds' gold chats) join ``chats`` in the
    phases named by ``config.practice_phases``; probes default to ``chats`` alone.
    """
    def chats_for(phase: str) -> list[Sequence[Mapping[str, str]]]:
        return list(chats) + (list(practice_chats) if phase in config.practice_phases else [])

    accelerator = accelerator or Accelerator()
    torch.manual_seed(config.seed)
    counts = set_trainable(model, config.train_top_layers)
    if config.train_top_layers is not None:
        log.info("sft: training the top %d layers (%d of %d parameters)",
                 config.train_top_layers, counts["trainable"], counts["total"])
    rng = random.Random(config.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    summary: dict[str, float] = {}
    t_start = time.perf_counter()
    if config.pretrain_steps > 0:
        summary.update(_pretrain_phase(model, tokenizer, config, accelerator=accelerator,
                                       texts=pretrain_texts, chats=chats_for("pretrain"),
                                       on_metrics=on_metrics))
    sft_chats = chats_for("sft")
    examples = build_sft_examples(tokenizer, sft_chats, tools, max_len=config.max_len)
    per_step = config.batch_size * config.grad_accum
    steps = config.max_steps or max(1, math.ceil(config.epochs * len(examples) / per_step))
    batches = (collate(b, pad_id) for b in sft_batches(examples, config.batch_size, rng))
    hist = _run_phase(model=model, accelerator=accelerator, batches=batches, steps=steps, lr=config.lr,
                      config=config, prefix="", first_step=config.pretrain_steps,
                      on_metrics=on_metrics, desc="sft")
    model = accelerator.unwrap_model(model)
    model.eval()
    summary.update({"first_loss": hist[0]["loss"], "final_loss": _tail_mean(hist, "loss"),
                    "examples": float(len(examples)), "dropped": float(len(sft_chats) - len(examples)),
                    "steps": float(steps), "pretrain_steps": float(config.pretrain_steps),
                    "trainable_params": float(counts["trainable"]),
                    "train_seconds": time.perf_counter() - t_start})
    if config.probe_size:
        for name, probe in (probe_chats if probe_chats is not None else {"train": chats}).items():
            if not probe:
                continue
            found = probe_generation(model, tokenizer, list(probe)[: config.probe_size], tools=tools,
                                     max_new_tokens=config.probe_max_new_tokens)
            summary.update({k.replace("probe/", f"probe/{name}/", 1): v for k, v in found.items()})
        summary["probe_seconds"] = time.perf_counter() - t_start - summary["train_seconds"]
    return model, {k: float(v) for k, v in summary.items()}


def _pretrain_phase(model: Any, tokenizer: Any, config: SFTConfig, *, accelerator: Any,
                    texts: Sequence[str], chats: Chats,
                    on_metrics: MetricsCallback | None) -> dict[str, float]:
    """``pretrain_steps`` of next-token loss on every token of packed rows; its summary."""
    texts = list(texts)
    if config.pretrain_chats:
        # Whole chats, template and tool responses included: predicting a passage title
        # right after the query that fetched it, or a name seen earlier in the same
        # context, is the in-context copying the agent needs, with far more examples of
        # it than the assistant turns alone give.
        # The system turn (tool schemas) is left out: it is the same in every chat, so
        # after a few steps it teaches nothing and would take half of every row.
        texts += [render_text(tokenizer, [m for m in chat if m["role"] != "system"])
                  for chat in chats]
    if not texts:
        raise ValueError("sft.pretrain_steps > 0 but no pretraining texts were given")
    rows = pack_texts(tokenizer, texts, config.pretrain_seq_len)

    def lm_batches() -> Iterator[dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(config.seed)
        while True:
            for idx in torch.randperm(len(rows), generator=gen).split(config.pretrain_batch_size):
                yield {"input_ids": rows[idx], "labels": rows[idx]}

    hist = _run_phase(model=model, accelerator=accelerator, batches=lm_batches(),
                      steps=config.pretrain_steps, lr=config.pretrain_lr, config=config,
                      prefix="pretrain/", first_step=0, on_metrics=on_metrics, desc="pretrain")
    return {"pretrain/first_loss": hist[0]["pretrain/loss"],
            "pretrain/final_loss": _tail_mean(hist, "pretrain/loss"),
            "pretrain/rows": float(len(rows))}


def _run_phase(*, model: torch.nn.Module, accelerator: Any, batches: Iterator[dict[str, torch.Tensor]],
               steps: int, lr: float, config: SFTConfig, prefix: str, first_step: int,
               on_metrics: MetricsCallback | None, desc: str) -> list[dict[str, float]]:
    """``steps`` optimiser steps of masked next-token loss; returns per-step metrics."""
    optimizer = _make_optimizer(accelerator.unwrap_model(model), lr, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    history = []
    bar = progress(total=steps, desc=desc, unit="step",
                   disable=not config.progress_bar or not accelerator.is_main_process)
    for step in range(steps):
        t0 = time.perf_counter()
        scale = lr_at(step, total=steps, warmup=config.warmup_steps, schedule=config.schedule,
                      min_ratio=config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        sums = _accumulate(model, accelerator, batches, config)
        grad_norm = (accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                     if config.max_grad_norm > 0 else
                     torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        metrics = {f"{prefix}loss": sums["loss"] / config.grad_accum, f"{prefix}lr": lr * scale,
                   f"{prefix}grad_norm": float(grad_norm), f"{prefix}tokens_per_s": sums["tokens"] / dt,
                   f"{prefix}trainable_tokens": float(sums["trainable"]),
                   f"{prefix}tokens": float(sums["tokens"])}
        history.append(metrics)
        if on_metrics is not None and accelerator.is_main_process:
            on_metrics(metrics, first_step + step)
        # The postfix first: a progress line is written by update() and must show this step.
        bar.set_postfix(loss=f"{metrics[f'{prefix}loss']:.3f}")
        bar.update(1)
        if (step + 1) % config.log_every == 0 or step + 1 == steps:
            log.info("%s step %d/%d loss %.4f lr %.2e tok/s %.0f", desc, step + 1, steps,
                     metrics[f"{prefix}loss"], lr * scale, metrics[f"{prefix}tokens_per_s"])
    bar.close()
    return history


def _accumulate(model: Any, accelerator: Any, batches: Iterator[dict[str, torch.Tensor]],
                config: SFTConfig) -> dict[str, float]:
    """Forward and backward of ``grad_accum`` micro-batches (gradients summed, each loss
    divided by ``grad_accum``); their loss sum and token counts."""
    loss_sum, n_tokens, n_trainable = 0.0, 0, 0
    for _ in range(config.grad_accum):
        # Under `accelerate launch` every process draws the same seeded stream and keeps
        # its own share of it, so processes see different data without a sampler.
        for _rank in range(accelerator.num_processes):
            drawn = next(batches)
            if _rank == accelerator.process_index:
                mine = drawn
        batch = {k: v.to(accelerator.device) for k, v in mine.items()}
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
        with _autocast(accelerator.device, config.precision):
            # Gold chats all open with the same system turn: lm_loss runs it once per
            # batch (same loss and gradients as the masked loss of the full batch).
            loss = lm_loss(model, batch["input_ids"], mask,
                           (batch["labels"] != IGNORE_INDEX).float(),
                           logits_chunk=config.logits_chunk)
        accelerator.backward(loss / config.grad_accum)
        loss_sum += loss.item()
        n_tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        n_trainable += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return {"loss": loss_sum, "tokens": n_tokens, "trainable": n_trainable}


def lr_at(step: int, *, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier at optimiser step ``step`` (0-based): linear warmup then decay to
    ``min_ratio``.

    >>> lr_at(0, total=10, warmup=2, schedule="cosine", min_ratio=0.0)
    0.5
    >>> lr_at(2, total=10, warmup=2, schedule="linear", min_ratio=0.0)
    1.0
    >>> round(lr_at(9, total=10, warmup=0, schedule="linear", min_ratio=0.1), 3)
    0.19
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: {schedule!r} is not one of {list(SCHEDULES)}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    frac = (step - warmup) / max(1, total - warmup)
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1 - frac
    return min_ratio + (1 - min_ratio) * decay


def _make_optimizer(model: torch.nn.Module, lr: float, config: SFTConfig) -> torch.optim.Optimizer:
    # No weight decay on norms and biases (1-D tensors), as usual for transformers.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(config.beta1, config.beta2))


def _autocast(device: torch.device, precision: str):
    # Own autocast rather than Accelerator(mixed_precision=...): accelerate's state is a
    # process-wide singleton, and a later stage in the same process may want another setting.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _tail_mean(history: list[dict[str, float]], key: str, n: int = 10) -> float:
    tail = [h[key] for h in history[-n:]]
    return sum(tail) / len(tail)
