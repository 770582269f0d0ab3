"""The update of one RL step: advantages, no-grad passes (behaviour log-probs, reference,
critic values), then ``ppo_epochs`` passes of minibatch optimiser steps over this process's
groups (docs/algorithms.md, "The training loop").

Choices where the paper is silent:

* **Old log-probs** are recomputed under the pre-update policy (one no-grad pass over the
  batch before the first minibatch), not taken from the sampler. The sampler's log-probs
  differ from the trainer's by numerics (a vLLM/HF generation kernel vs the training
  forward, bf16 vs fp32, sampling temperature), and that mismatch would show up as a ratio
  != 1 -- spurious clipping -- on the very first minibatch. The sampling log-probs are used
  only for groups refilled with ``refill: reuse``: they were sampled by an *older* policy,
  and their stored log-probs are the correct behaviour policy for the importance ratio.
  With one epoch over one minibatch the training forward itself, detached, gives the same
  values, and the extra pass is skipped.
* The policy loss aggregates over the whole minibatch as ``loss_aggregation`` says (token
  mean by default), also across gradient-accumulation micro-batches and DDP processes
  (token and sequence counts are all-reduced), so one process and N processes compute the
  same gradient.
* The entropy (a metric, and with ``entropy_coef > 0`` a bonus in the loss) comes from the
  logits of the log-prob forward: one policy forward per micro-batch either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tirl.core.rl.advantages import get_advantage_estimator
from tirl.core.rl.batch import Batch, collate, model_token_logprobs, token_budget_split
from tirl.core.rl.config import TrainConfig
from tirl.core.rl.dist import global_max, global_sum, no_sync
from tirl.core.rl.kl import get_kl_estimator
from tirl.core.rl.losses import get_policy_loss, get_value_loss
from tirl.core.rl.vspo import GroupResult, VSPOStepResult
from tirl.core.rl.vspo_step import compute_advantages

#: Sums weighted by trainable tokens (reported per token), then loss sums (reported per
#: optimiser step); this order is the order of the update's metrics.
_TOKEN_SUMS = ("actor/kl", "actor/entropy", "actor/clip_frac", "actor/approx_kl",
               "actor/ratio_mean", "critic/vf_clip_frac", "critic/value_mean")
_LOSS_SUMS = ("loss/policy", "loss/kl", "loss/value", "loss/total")


@dataclass
class Modules:
    """What an update reads and trains: the policy and (PPO) critic, prepared by
    ``accelerate``, the frozen reference (None without KL), and the optimiser of both."""

    policy: torch.nn.Module
    critic: torch.nn.Module | None
    reference: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    #: Run the prompt that a micro-batch's rows share once (batch.model_token_logprobs ``needed``).
    #: Single-process only: FSDP and DDP expect the same forward calls on every process.
    share_prefix: bool = False


@dataclass(frozen=True)
class _Denominators:
    """A minibatch's trainable tokens and sequences per process: the loss means divide by
    them, in every micro-batch, so that the micro-batches' gradients sum to the mean's."""

    tokens: float
    seqs: float


@dataclass
class _Tally:
    """Sums over an update's micro-batches and optimiser steps (this process)."""

    sums: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(_TOKEN_SUMS + _LOSS_SUMS, 0.0))
    tokens: float = 0.0
    grad_norms: list[float] = field(default_factory=list)
    critic_norms: list[float] = field(default_factory=list)
    steps: int = 0
    skipped: int = 0


def update(*, config: TrainConfig, acc: Any, modules: Modules, groups: Sequence[GroupResult],
           select_counts: Sequence[int], pad_id: int, step: int, placeholder: bool = False
           ) -> tuple[dict[str, float], int]:
    """Advantages + ``ppo_epochs`` passes of minibatch updates over this process's groups.

    ``placeholder``: the groups only stand in so that this process joins the collective
    ops; their loss weight is 0. Returns (metrics, number of tokens in the local batch).
    """
    batch = _training_batch(config, groups, select_counts, pad_id=pad_id, device=acc.device,
                            placeholder=placeholder)
    lengths = batch.attention_mask.sum(-1)
    _no_grad_passes(config, acc, modules, batch, lengths, groups)
    tally = _Tally()
    for epoch in range(config.ppo_epochs):
        for rows, empty in _minibatches(config, acc, len(batch), step, epoch):
            _minibatch_step(config, acc, modules, batch, lengths, rows, empty, tally)
    metrics = _metrics(acc, tally, critic=modules.critic is not None,
                       reference=modules.reference is not None)
    metrics["batch/trajectories"] = float(len(batch))
    return metrics, int(batch.attention_mask.sum())


def _training_batch(config: TrainConfig, groups: Sequence[GroupResult],
                    select_counts: Sequence[int], *, pad_id: int, device: torch.device,
                    placeholder: bool) -> Batch:
    """The collated batch on ``device`` with its sequence advantages (PPO: zeros until GAE
    sets token advantages); a placeholder's loss mask is all zeros."""
    if config.algorithm == "ppo":
        seq_adv = torch.zeros(sum(len(g.trajectories) for g in groups))
    else:
        seq_adv = _sequence_advantages(config, groups, select_counts)
    batch = collate(groups, pad_id=pad_id, seq_advantages=seq_adv.tolist()).to(device)
    if placeholder:
        batch.loss_mask = torch.zeros_like(batch.loss_mask)
    return batch


def _no_grad_passes(config: TrainConfig, acc: Any, modules: Modules, batch: Batch,
                    lengths: torch.Tensor, groups: Sequence[GroupResult]) -> None:
    """Set ``batch``'s behaviour and reference log-probs and, with a critic, its old values,
    returns and token advantages, from no-grad passes over the whole batch."""
    n = len(batch)
    micro = max(1, n // (config.n_minibatches * config.grad_accum))
    # One pass over one minibatch: the policy does not move before every token has been
    # through the training forward, so that forward, detached, *is* the pre-update
    # log-prob and the separate no-grad pass can be skipped (TRL does the same).
    single_pass = config.ppo_epochs == 1 and config.n_minibatches == 1
    # Each micro-batch's rows are written back in place, so their order does not matter.
    chunks = [m for idx in torch.arange(n, device=acc.device).split(micro)
              for m in token_budget_split(lengths, idx, config.micro_tokens)]
    chunks += [chunks[0]] * (global_max(acc, len(chunks)) - len(chunks))  # same count everywhere
    old, ref, vals = (batch.loss_mask.new_zeros(batch.loss_mask.shape) for _ in range(3))
    with torch.no_grad(), _autocast(config, acc.device):
        for idx in chunks:
            sub = batch.select(idx)
            width = sub.loss_mask.shape[1]
            if not single_pass:
                old[idx, :width] = model_token_logprobs(modules.policy, input_ids=sub.input_ids,
                                                        attention_mask=sub.attention_mask,
                                                        needed=_needed(modules, sub),
                                                        logits_chunk=config.logits_chunk)[0]
            if modules.reference is not None:
                ref[idx, :width] = model_token_logprobs(modules.reference, input_ids=sub.input_ids,
                                                        attention_mask=sub.attention_mask,
                                                        needed=_needed(modules, sub),
                                                        logits_chunk=config.logits_chunk)[0]
            if modules.critic is not None:
                vals[idx, :width] = modules.critic(
                    input_ids=sub.input_ids, attention_mask=sub.attention_mask)[:, :-1].float()
    if not single_pass:
        batch.old_logprobs = torch.where(batch.reused[:, None], batch.sample_logprobs,
                                         old * batch.loss_mask)
    if modules.reference is not None:
        batch.ref_logprobs = ref * batch.loss_mask
    if modules.critic is not None:
        batch.old_values = vals * batch.loss_mask
        rewards = torch.tensor([r for g in groups for r in g.rewards], device=acc.device)
        batch.advantages, batch.returns = _gae(
            config, token_rewards=_last_token_rewards(batch, rewards),
            values=batch.old_values, mask=batch.loss_mask)


def _minibatches(config: TrainConfig, acc: Any, n: int, step: int, epoch: int
                 ) -> Iterator[tuple[torch.Tensor, bool]]:
    """``(rows, empty)`` of each minibatch of one epoch, in a seeded random order. A process
    with fewer rows than minibatches still joins every collective op: an empty minibatch
    comes as one row (``empty``), trained on with zero weight."""
    gen = torch.Generator().manual_seed(
        int(np.random.SeedSequence([config.seed, step, epoch, acc.process_index])
            .generate_state(1)[0]))
    perm = torch.randperm(n, generator=gen).to(acc.device)
    for rows in perm.tensor_split(config.n_minibatches):
        yield (perm[:1], True) if rows.numel() == 0 else (rows, False)


def _minibatch_step(config: TrainConfig, acc: Any, modules: Modules, batch: Batch,
                    lengths: torch.Tensor, rows: torch.Tensor, empty: bool,
                    tally: _Tally) -> None:
    """One optimiser step on minibatch ``rows``: forward and backward of each micro-batch
    (gradients summed), then a clipped step unless a loss or gradient was non-finite."""
    local = [0.0, 0.0] if empty else [float(batch.loss_mask[rows].sum()), float(rows.numel())]
    global_tokens, global_rows = global_sum(acc, local)
    # Each process divides by global/n_proc: DDP's gradient mean then equals the mean over
    # every trainable token (or sequence) of the global minibatch.
    denom = _Denominators(tokens=max(global_tokens, 1.0) / acc.num_processes,
                          seqs=max(global_rows, 1.0) / acc.num_processes)
    micros = _micro_batches(config, acc, lengths, rows, empty)
    synced = [m for m in (modules.policy, modules.critic) if m is not None]
    finite = True
    for j, micro in enumerate(micros):
        sub = batch.select(micro) if micro is not None else _zero_weight(batch.select(rows[:1]))
        # Gradients are all-reduced once, on the minibatch's last micro-batch.
        with no_sync(acc, synced, skip=j < len(micros) - 1):
            loss, sums, tokens = _micro_loss(config, acc.device, modules, sub, denom)
            acc.backward(loss)
        finite = finite and math.isfinite(sums["loss/total"])
        for k, v in sums.items():
            tally.sums[k] += v
        tally.tokens += tokens
    _optimizer_step(config, acc, modules, finite, tally)


def _micro_batches(config: TrainConfig, acc: Any, lengths: torch.Tensor, rows: torch.Tensor,
                   empty: bool) -> list[torch.Tensor | None]:
    """Minibatch ``rows`` cut into ``grad_accum`` parts, each split to the ``micro_tokens``
    budget. A process with fewer micro-batches (few trajectories left after VSPO drops, or
    shorter ones) pads with None (a zero-weight pass on one row), so that all processes run
    the same forward and backward passes (FSDP gathers weights in each one)."""
    micros: list[torch.Tensor | None] = [] if empty else [
        m for part in rows.tensor_split(config.grad_accum) if part.numel()
        for m in token_budget_split(lengths, part, config.micro_tokens)]
    n_micro = max(global_max(acc, len(micros)), 1)
    return micros + [None] * (n_micro - len(micros))


def _micro_loss(config: TrainConfig, device: torch.device, modules: Modules, sub: Batch,
                denom: _Denominators) -> tuple[torch.Tensor, dict[str, float], float]:
    """The loss of one micro-batch, its share of the minibatch's token mean (``denom``: the
    minibatch's trainable tokens per process); its additions to the update's sums; its
    trainable tokens."""
    with _autocast(config, device):
        lp, ent = model_token_logprobs(modules.policy, input_ids=sub.input_ids,
                                       attention_mask=sub.attention_mask, with_entropy=True,
                                       entropy_grad=config.entropy_coef > 0,
                                       needed=_needed(modules, sub),
                                       logits_chunk=config.logits_chunk)
        mask, tokens = sub.loss_mask, float(sub.loss_mask.sum())
        old_lp = sub.old_logprobs
        if old_lp is None:  # one pass over one minibatch: see _no_grad_passes
            old_lp = torch.where(sub.reused[:, None], sub.sample_logprobs, lp.detach())
        pg, st = _policy_loss(config, logprobs=lp, old_logprobs=old_lp,
                              advantages=sub.advantages, mask=mask, denom=denom)
        sums = {"loss/policy": float(pg.detach()),
                "actor/entropy": float((ent.detach() * mask).sum()),
                **{f"actor/{k}": st[k] * tokens for k in ("clip_frac", "approx_kl", "ratio_mean")}}
        loss = pg
        if modules.reference is not None:
            kl_tok = _kl(config, logprobs=lp, ref_logprobs=sub.ref_logprobs, mask=mask)
            kl_loss = kl_tok.sum() / denom.tokens
            loss = loss + config.kl_beta * kl_loss
            sums["loss/kl"] = float(config.kl_beta * kl_loss.detach())
            sums["actor/kl"] = float(kl_tok.detach().sum())
        if config.entropy_coef > 0:
            loss = loss - config.entropy_coef * ((ent * mask).sum() / denom.tokens)
        if modules.critic is not None:
            v = modules.critic(input_ids=sub.input_ids, attention_mask=sub.attention_mask)[:, :-1]
            vl, vst = _value_loss(config, values=v, old_values=sub.old_values,
                                  returns=sub.returns, mask=mask, num_tokens=denom.tokens)
            loss = loss + config.value_coef * vl
            sums["loss/value"] = float(vl.detach())
            sums["critic/vf_clip_frac"] = vst["vf_clip_frac"] * tokens
            sums["critic/value_mean"] = vst["value_mean"] * tokens
        sums["loss/total"] = float(loss.detach())
    return loss, sums, tokens


def _optimizer_step(config: TrainConfig, acc: Any, modules: Modules, finite: bool,
                    tally: _Tally) -> None:
    """Clip the gradients and step, unless any process saw a non-finite loss or norm."""
    gn = acc.clip_grad_norm_([p for p in modules.policy.parameters() if p.requires_grad],
                             config.max_grad_norm)
    gn = float(gn) if gn is not None else 0.0
    finite = finite and math.isfinite(gn)
    if modules.critic is not None:
        cn = acc.clip_grad_norm_(list(modules.critic.parameters()), config.max_grad_norm)
        tally.critic_norms.append(float(cn) if cn is not None else 0.0)
        finite = finite and math.isfinite(tally.critic_norms[-1])
    # Every process must take the same decision, or DDP replicas drift apart.
    if global_sum(acc, [float(not finite)])[0] > 0:
        tally.skipped += 1
    else:
        modules.optimizer.step()
        tally.grad_norms.append(gn)
    modules.optimizer.zero_grad(set_to_none=True)
    tally.steps += 1


def _metrics(acc: Any, tally: _Tally, *, critic: bool, reference: bool) -> dict[str, float]:
    """The update's metrics, over all processes: token-weighted sums per trainable token,
    loss sums per optimiser step."""
    n_proc, n_opt = acc.num_processes, max(tally.steps, 1)
    g_sums = global_sum(acc, [tally.tokens, *tally.sums.values()])
    g_tok = max(g_sums[0], 1.0)
    # Loss sums are already global token means per optimiser step (times n_proc/n_proc).
    metrics = {k: v / (n_opt * n_proc if k in _LOSS_SUMS else g_tok)
               for k, v in zip(tally.sums, g_sums[1:], strict=True)}
    if not critic:
        for k in ("loss/value", "critic/vf_clip_frac", "critic/value_mean"):
            metrics.pop(k)
    else:
        metrics["critic/grad_norm"] = sum(tally.critic_norms) / max(len(tally.critic_norms), 1)
    if not reference:
        metrics.pop("loss/kl")
        metrics.pop("actor/kl")
    metrics["actor/grad_norm"] = (sum(tally.grad_norms) / len(tally.grad_norms)
                                  if tally.grad_norms else float("nan"))
    metrics["actor/optimizer_steps"] = float(n_opt - tally.skipped)
    metrics["step/skipped"] = float(tally.skipped > 0)
    return metrics


def _needed(modules: Modules, sub: Batch) -> torch.Tensor | None:
    """The targets a micro-batch's losses read, when the shared prompt may run once."""
    return sub.loss_mask if modules.share_prefix else None


def _zero_weight(batch: Batch) -> Batch:
    batch.loss_mask = torch.zeros_like(batch.loss_mask)
    return batch


def _autocast(config: TrainConfig, device: torch.device) -> Any:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=config.precision == "bf16")


def _last_token_rewards(batch: Batch, rewards: torch.Tensor) -> torch.Tensor:
    """[N, T-1] zeros with each trajectory's reward on its last trainable token."""
    mask = batch.loss_mask
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(dim=1).values
    out = torch.zeros_like(mask)
    has = last >= 0
    out[has, last[has]] = rewards[has].to(out.dtype)
    return out


# --- the math, selected by registered name (tirl.core.rl.{advantages,losses,kl,vspo_step}) --
# These thin adapters are the only places that know the signatures of the registered
# functions, so the update above reads as the algorithm.


def _sequence_advantages(config: TrainConfig, groups: Sequence[GroupResult],
                         select_counts: Sequence[int]) -> torch.Tensor:
    """One advantage per trajectory, flattened in group order: [N]. GRPO (or Dr.GRPO) within
    each group, then VSPO's value-smoothing clip for refilled groups when ``clip`` is on."""
    result = VSPOStepResult(groups=list(groups), select_counts=list(select_counts), metrics={})
    return compute_advantages(result=result, config=config.effective_vspo,
                              estimator=config.resolved_advantage)


def _gae(config: TrainConfig, *, token_rewards: torch.Tensor, values: torch.Tensor,
         mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level GAE over trainable tokens only: (advantages, returns), both [N, T-1]."""
    return get_advantage_estimator("gae")(token_rewards=token_rewards, values=values, mask=mask,
                                          gamma=config.gamma, lam=config.gae_lambda)


def _policy_loss(config: TrainConfig, *, logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                 advantages: torch.Tensor, mask: torch.Tensor, denom: _Denominators
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """The registered policy loss ``config.resolved_policy_loss``, aggregated as
    ``config.loss_aggregation`` over the minibatch (global denominators), and its stats."""
    return get_policy_loss(config.resolved_policy_loss)(
        logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask,
        clip_eps=config.clip_eps, clip_eps_high=config.clip_eps_high,
        aggregation=config.loss_aggregation, num_tokens=denom.tokens, num_seqs=denom.seqs)


def _kl(config: TrainConfig, *, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
        mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate, [N, T-1], zero where mask is 0."""
    return get_kl_estimator(config.kl_estimator)(logprobs=logprobs, ref_logprobs=ref_logprobs,
                                                 mask=mask)


def _value_loss(config: TrainConfig, *, values: torch.Tensor, old_values: torch.Tensor,
                returns: torch.Tensor, mask: torch.Tensor, num_tokens: float
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped value loss (token mean, global denominator) and its stats."""
    return get_value_loss("clipped")(values=values, old_values=old_values, returns=returns,
                                     mask=mask, clip_eps=config.value_clip, num_tokens=num_tokens)
