"""The online RL loop, :func:`train`: sample prompts -> roll out -> reward -> VSPO replacement
-> update (docs/algorithms.md, "The training loop"), with validation, checkpoints and exact
resume. One function runs every optimiser of the comparison (the table is in
:mod:`tirl.core.rl.config`); a step's pieces live in :mod:`~tirl.core.rl.sampling`,
:mod:`~tirl.core.rl.refill` and :mod:`~tirl.core.rl.update`.

Choices where the paper is silent:

* The lr schedule steps once per RL step (warmup counted in RL steps), not per optimiser
  step, so its length does not depend on ppo_epochs or minibatch counts.
* Randomness is re-seeded from ``(seed, step, process)`` at the start of every step, so a
  resumed run samples exactly what an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from transformers import PreTrainedModel

from tirl.core.modeling.trainable import set_trainable
from tirl.core.progress import progress
from tirl.core.rl.batch import group_trajectories
from tirl.core.rl.completions import completion_rows
from tirl.core.rl.config import TrainConfig
from tirl.core.rl.critic import make_critic
from tirl.core.rl.dist import global_sum
from tirl.core.rl.refill import vspo_replace
from tirl.core.rl.resume import RunState, resume_run, run_fingerprint, save_run
from tirl.core.rl.sampling import (SCHEDULE_DONE, PromptSampler, RolloutFn, make_agent_rollout_fn,
                                   reward_metrics, score)
from tirl.core.rl.update import Modules, update
from tirl.core.rl.vspo_table import ValueTable
from tirl.core.types import RewardFn

logger = logging.getLogger(__name__)

MetricsCallback = Callable[[dict[str, float], int], None]
#: ``on_completions(rows, step)``: the step's completions-table rows.
CompletionsCallback = Callable[[list[dict[str, Any]], int], None]
Validate = Callable[[torch.nn.Module], Mapping[str, float]]


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class _Run:
    """What one run works with; the sampler and the value table change as it goes and are
    checkpointed with the :class:`~tirl.core.rl.resume.RunState`."""

    config: TrainConfig
    acc: Any
    modules: Modules
    scheduler: torch.optim.lr_scheduler.LRScheduler
    raw_policy: torch.nn.Module  # unwrapped from accelerate: rollouts, checkpoints
    raw_critic: torch.nn.Module | None
    questions: list[dict[str, Any]]
    sampler: PromptSampler
    table: ValueTable
    reward_fn: RewardFn
    fingerprint: str
    rollout_fn: RolloutFn | None = None
    engine: Any = None  # the rollout backend, when it keeps its own copy of the weights
    pad_id: int = 0

    @property
    def by_id(self) -> dict[str, dict[str, Any]]:
        return {str(q["id"]): q for q in self.questions}


def train(*, policy: torch.nn.Module, tokenizer: Any, questions: Sequence[dict[str, Any]],
          tools: Sequence[Any], config: TrainConfig, reward_fn: RewardFn,
          on_metrics: MetricsCallback | None = None, checkpoint_dir: Path | str | None = None,
          resume: bool = False, rollout_fn: RolloutFn | None = None,
          accelerator: Any | None = None, validate: Validate | None = None,
          on_completions: CompletionsCallback | None = None,
          ) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train ``policy`` online with the algorithm of ``config``; returns (policy, history).

    Args:
        policy: a causal LM (the SFT warm start); trained in place. It is also the frozen
            reference (a copy taken before any update or checkpoint load) and, for PPO, the
            critic's initial backbone.
        tokenizer: its tokenizer (rollouts, and the pad id).
        questions: train-split question records (QUESTION_COLUMNS), ids unique.
        tools: the agent's tools (for the default rollout function).
        reward_fn: scores one trajectory (PRS or binary).
        on_metrics: called as ``on_metrics(metrics, step)`` on the main process after every
            step; metric keys are namespaced (``reward/mean``, ``actor/kl``, ``time/...``).
        checkpoint_dir: where checkpoints go (``config.checkpoint_every``); with
            ``resume=True`` the newest complete checkpoint there is loaded first.
        rollout_fn: override the rollout engine (single-turn benchmarks, toy tasks):
            ``rollout_fn(questions, group_size, seed) -> trajectories``.
        accelerator: an ``accelerate.Accelerator``; default one is made (CPU without CUDA).
        validate: ``validate(policy) -> metrics`` (greedy evaluation on held-out questions),
            run on the main process before step 0, every ``config.val_every`` steps and after
            the last; its metrics join that step's history row and ``on_metrics`` as
            ``val/<name>``. It must not touch the global RNG (it runs inside a forked one).
        on_completions: called as ``on_completions(rows, step)`` on the main process after
            every step with the rows of :func:`tirl.core.rl.completions.completion_rows` for
            the first ``config.log_completions`` prompts of the step (never when it is 0).
    Returns:
        (the trained policy, unwrapped; one metrics dict per step, ``step`` included).
    Raises:
        ValueError before any work on bad inputs; NonFiniteError after
        ``max_nonfinite_in_row`` consecutive non-finite steps.
    """
    run = _start(policy=policy, questions=questions, config=config, reward_fn=reward_fn,
                 resume=resume, checkpoint_dir=checkpoint_dir, accelerator=accelerator)
    state = (resume_run(checkpoint_dir, _parts(run), fingerprint=run.fingerprint) if resume
             else RunState())
    if rollout_fn is None:
        run.rollout_fn, run.engine = make_agent_rollout_fn(
            policy=run.raw_policy, tokenizer=tokenizer, tools=tools, config=config.rollout)
    else:
        run.rollout_fn = rollout_fn
    run.pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    bar = progress(total=config.steps, initial=state.step, desc=f"rl:{config.algorithm}",
                   unit="step", disable=not run.acc.is_main_process)
    if state.step == 0 and validate is not None and config.val_every:
        # The starting point (the SFT level): a history row of its own with step -1. In
        # MLflow, val/* metrics are logged at the number of updates done (0 here).
        before = _validation(run, validate)
        if before:
            state.history.append({"step": -1.0, **before})
            if run.acc.is_main_process and on_metrics is not None:
                on_metrics(before, 0)

    while state.step < config.steps:
        step, t_step, times = state.step, time.perf_counter(), {}
        metrics, n_tokens, completions = _rl_step(run, step, times)
        _count_nonfinite(config, state, step, skipped=metrics.get("step/skipped", 0.0) > 0)
        metrics = _global_metrics(run, metrics, n_tokens=n_tokens, times=times, t_step=t_step)
        _record(run, state, step, metrics, on_metrics=on_metrics, validate=validate, bar=bar)
        if completions and on_completions is not None and run.acc.is_main_process:
            on_completions(completions, step)
        if checkpoint_dir is not None and config.checkpoint_every and \
                state.step % config.checkpoint_every == 0:
            _save(run, state, checkpoint_dir)
    bar.close()
    run.raw_policy.eval()
    return run.raw_policy, state.history


def _start(*, policy: torch.nn.Module, questions: Sequence[dict[str, Any]],
           config: TrainConfig, reward_fn: RewardFn, resume: bool,
           checkpoint_dir: Path | str | None, accelerator: Any | None) -> _Run:
    """Check the inputs (before any work), then build the modules, optimiser and schedule."""
    questions = [dict(q) for q in questions]
    ids = [str(q["id"]) for q in questions]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"questions: id {dup!r} appears more than once")
    sampler = PromptSampler(len(questions), config.batch_prompts, config.seed)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    if config.batch_prompts % acc.num_processes:
        raise ValueError(f"batch_prompts: {config.batch_prompts} is not divisible by the "
                         f"{acc.num_processes} processes")
    modules, scheduler = _build_modules(config, policy, acc)
    raw_policy = acc.unwrap_model(modules.policy)
    return _Run(config=config, acc=acc, modules=modules, scheduler=scheduler,
                raw_policy=raw_policy,
                raw_critic=acc.unwrap_model(modules.critic) if modules.critic is not None
                else None,
                questions=questions, sampler=sampler, table=ValueTable(config.effective_vspo),
                reward_fn=reward_fn, fingerprint=run_fingerprint(config, raw_policy, questions))


def _build_modules(config: TrainConfig, policy: torch.nn.Module, acc: Any
                   ) -> tuple[Modules, torch.optim.lr_scheduler.LRScheduler]:
    """Reference, critic, optimiser and lr schedule; policy, critic and optimiser prepared."""
    # The reference is copied before anything can change the weights.
    torch.manual_seed(config.seed)
    policy.train()
    set_trainable(policy, config.train_top_layers)
    reference = None
    if config.kl_beta > 0:
        reference = copy.deepcopy(policy).eval().requires_grad_(False).to(acc.device)
    critic = make_critic(policy) if config.algorithm == "ppo" else None
    param_groups = [{"params": [p for p in policy.parameters() if p.requires_grad],
                     "lr": config.lr}]
    if critic is not None:
        param_groups.append({"params": list(critic.parameters()),
                             "lr": config.critic_lr or config.lr})
    optimizer = torch.optim.AdamW(param_groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    if critic is not None:
        policy, critic, optimizer = acc.prepare(policy, critic, optimizer)
    else:
        policy, optimizer = acc.prepare(policy, optimizer)
    # The shared prompt runs once through a Hugging Face model's cache; one process only
    # (see Modules.share_prefix).
    share = acc.num_processes == 1 and isinstance(acc.unwrap_model(policy), PreTrainedModel)
    return Modules(policy=policy, critic=critic, reference=reference, optimizer=optimizer,
                   share_prefix=share), scheduler


def _rl_step(run: _Run, step: int, times: dict[str, float]
             ) -> tuple[dict[str, float], int, list[dict[str, Any]]]:
    """Roll out this process's share of the step's prompts, score, replace, update.
    Returns (this process's metrics, tokens in its update batch, its completions-table
    rows); ``times`` gets the phases' wall times."""
    config, acc = run.config, run.acc
    _seed_step(config.seed, step, acc.process_index)
    # The sampler is global and identically seeded on every process; each process rolls out
    # its contiguous share of the global batch.
    per_proc, rank = config.batch_prompts // acc.num_processes, acc.process_index
    batch_idx = run.sampler.next_batch()
    local_q = [run.questions[i] for i in batch_idx[rank * per_proc:(rank + 1) * per_proc]]
    rollout_seed = int(np.random.SeedSequence([config.seed, step]).generate_state(1)[0])

    run.raw_policy.eval()
    with _timed(times, "time/rollout_s"), torch.no_grad():
        trajs = run.rollout_fn(local_q, config.group_size, rollout_seed)
    with _timed(times, "time/reward_s"):
        rewards = score(run.reward_fn, local_q, trajs, step)
    completions = completion_rows(local_q, trajs, rewards, step, config.log_completions)
    groups = group_trajectories(local_q, trajs, rewards)
    metrics = reward_metrics(rewards, trajs)
    # The same rollouts scored as the curriculum's end state: a curve the schedule does
    # not move, so a falling shaped reward is not mistaken for a worse policy.
    final = score(run.reward_fn, local_q, trajs, SCHEDULE_DONE)
    metrics["reward/unscheduled"] = sum(r.reward for r in final) / max(len(final), 1)

    # VSPO replacement (steps 1-5) for vspo/grpo; statistics for every algorithm.
    with _timed(times, "time/refill_s"):
        kept, counts, vstats = vspo_replace(
            config=config, acc=acc, groups=groups, table=run.table, step=step,
            questions=run.by_id, rollout_fn=run.rollout_fn, reward_fn=run.reward_fn,
            rollout_seed=rollout_seed)
    metrics.update(vstats)
    upd, n_tokens = _learn(run, step, kept, counts, stand_in=groups[0], times=times)
    metrics.update(upd)
    return metrics, n_tokens, completions


def _learn(run: _Run, step: int, groups: list[Any], counts: list[int], *, stand_in: Any,
           times: dict[str, float]) -> tuple[dict[str, float], int]:
    """The update on the kept ``groups``, then the lr schedule's step and the new weights
    pushed to a rollout engine that keeps its own copy."""
    # Every process must run the same collective ops: a process whose groups were all
    # dropped trains on a zero-weight placeholder; a globally empty batch skips the update.
    n_global = global_sum(run.acc, [len(groups)])[0]
    placeholder = not groups
    if placeholder:
        groups, counts = [stand_in], [0]
    run.raw_policy.train()
    upd, n_tokens = {"batch/empty": 1.0}, 0
    with _timed(times, "time/update_s"):
        if n_global > 0:
            upd, n_tokens = update(config=run.config, acc=run.acc, modules=run.modules,
                                   groups=groups, select_counts=counts, pad_id=run.pad_id,
                                   step=step, placeholder=placeholder)
    with warnings.catch_warnings():
        # A skipped (non-finite or empty) step has no optimizer.step(); the schedule
        # still advances so that it stays a function of the RL step.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        run.scheduler.step()
    if run.engine is not None and hasattr(run.engine, "sync_weights"):
        run.engine.sync_weights(run.raw_policy)
    return upd, n_tokens


def _count_nonfinite(config: TrainConfig, state: RunState, step: int, *, skipped: bool) -> None:
    """Count skipped (non-finite) steps in a row; too many stop the run."""
    state.nonfinite_in_row = state.nonfinite_in_row + 1 if skipped else 0
    if not skipped:
        return
    logger.warning("step %d: non-finite loss or gradient; update skipped (%d in a row)",
                   step, state.nonfinite_in_row)
    if state.nonfinite_in_row >= config.max_nonfinite_in_row:
        raise NonFiniteError(
            f"{state.nonfinite_in_row} consecutive steps had a non-finite loss or "
            f"gradient (max_nonfinite_in_row={config.max_nonfinite_in_row}); last at "
            f"step {step}. Lower lr, check rewards for NaN, or try precision fp32.")


def _global_metrics(run: _Run, metrics: dict[str, float], *, n_tokens: int,
                    times: dict[str, float], t_step: float) -> dict[str, float]:
    """The step's metrics over all processes, with lr, wall times and throughput."""
    acc = run.acc
    # Process-summed reward/rollout metrics: every process scored its own share.
    keys = [k for k in metrics if k.startswith(("reward/", "rollout/"))]
    # Equal on every process: a plain mean of means is exact.
    n_local = run.config.batch_prompts // acc.num_processes
    sums = global_sum(acc, [metrics[k] * n_local for k in keys])
    metrics.update({k: v / (n_local * acc.num_processes) for k, v in zip(keys, sums, strict=True)})
    dt = time.perf_counter() - t_step
    total_tokens = global_sum(acc, [n_tokens])[0]
    t_update = times["time/update_s"]
    metrics.update({
        "lr": run.scheduler.get_last_lr()[0], **times, "time/step_s": dt,
        "perf/tokens_per_s": total_tokens / dt if dt > 0 else 0.0,
        "perf/update_tokens_per_s": total_tokens * run.config.ppo_epochs / t_update
        if t_update > 0 else 0.0,
    })
    return {k: float(v) for k, v in metrics.items()}


def _record(run: _Run, state: RunState, step: int, metrics: dict[str, float], *,
            on_metrics: MetricsCallback | None, validate: Validate | None, bar: Any) -> None:
    """Validate when due, append the step to the history and report it."""
    config = run.config
    val = {}
    if config.val_every and ((step + 1) % config.val_every == 0 or step + 1 == config.steps):
        val = _validation(run, validate)
    state.history.append({"step": float(step), **metrics, **val})
    state.step = step + 1
    if run.acc.is_main_process and on_metrics is not None:
        on_metrics(metrics, step)
        if val:
            on_metrics(val, step + 1)
    # The postfix first: a progress line is written by update() and must show this step.
    bar.set_postfix({"R": f"{metrics['reward/mean']:.3f}",
                     "kl": f"{metrics.get('actor/kl', 0.0):.4f}",
                     "zero": f"{metrics.get('vspo/zero_adv_frac', 0.0):.2f}"})
    bar.update(1)


def _validation(run: _Run, validate: Validate | None) -> dict[str, float]:
    """``val/*`` metrics of ``validate`` on the main process (an empty dict elsewhere)."""
    if validate is None or not run.config.val_every:
        return {}
    found: dict[str, float] = {}
    if run.acc.is_main_process:
        was_training = run.raw_policy.training
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            found = {f"val/{k}": float(v) for k, v in validate(run.raw_policy.eval()).items()}
        run.raw_policy.train(was_training)
    run.acc.wait_for_everyone()
    return found


def _parts(run: _Run) -> dict[str, Any]:
    """The stateful parts of a run, by their name in its checkpoints."""
    return {"policy": run.raw_policy, "critic": run.raw_critic,
            "optimizer": run.modules.optimizer, "scheduler": run.scheduler,
            "sampler": run.sampler, "value_table": run.table}


def _save(run: _Run, state: RunState, checkpoint_dir: Path | str) -> None:
    if run.acc.is_main_process:
        save_run(checkpoint_dir, state, _parts(run), fingerprint=run.fingerprint,
                 keep=run.config.keep_checkpoints)
    run.acc.wait_for_everyone()


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "constant":
            return 1.0
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        if config.lr_schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _seed_step(seed: int, step: int, rank: int) -> None:
    """Re-seed every global RNG from (seed, step, rank): resumed runs sample identically."""
    s = int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


@contextlib.contextmanager
def _timed(times: dict[str, float], key: str) -> Iterator[None]:
    """Wall time of the block, into ``times[key]``."""
    t0 = time.perf_counter()
    yield
    times[key] = time.perf_counter() - t0
