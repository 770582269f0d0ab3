"""The online RL loop: sample prompts -> roll out -> reward -> VSPO replacement -> advantages
-> minibatch policy (and critic) updates. METHOD.md sections 4-5.

One function, :func:`train`, runs every optimiser of the paper's comparison:

==========  ============================  ===============  =========================
algorithm   replacement (VSPO step 4)     advantage        policy loss
==========  ============================  ===============  =========================
vspo        ``vspo.selection`` (value...)  grpo | drgrpo    ppo_clip
grpo        none (VSPO, selection none)    grpo | drgrpo    ppo_clip
cispo       none                           grpo | drgrpo    cispo
ppo         none                           gae (critic)     ppo_clip + clipped value
==========  ============================  ===============  =========================

Choices where the paper is silent (documented here and in docs/algorithms.md):

* **Old log-probs** are recomputed under the pre-update policy (one no-grad pass over the
  batch before the first minibatch), not taken from the sampler. The sampler's log-probs
  differ from the trainer's by numerics (a vLLM/HF generation kernel vs the training
  forward, bf16 vs fp32, sampling temperature), and that mismatch would show up as a ratio
  != 1 -- spurious clipping -- on the very first minibatch. The sampling log-probs are used
  only for groups refilled with ``refill: reuse``: they were sampled by an *older* policy,
  and their stored log-probs are the correct behaviour policy for the importance ratio.
  With one epoch over one minibatch the training forward itself, detached, gives the same
  values, and the extra pass is skipped.
* The lr schedule steps once per RL step (warmup counted in RL steps), not per optimiser
  step, so its length does not depend on ppo_epochs or minibatch counts.
* Loss aggregation is the token mean over the trainable tokens of the whole minibatch,
  also across gradient-accumulation micro-batches and DDP processes (token counts are
  all-reduced), so one process and N processes compute the same gradient.
* Randomness is re-seeded from ``(seed, step, process)`` at the start of every step, so a
  resumed run samples exactly what an uninterrupted one would.

Token-in/token-out: the loss is computed on ``Trajectory.token_ids`` as sampled; nothing is
re-tokenised. Tokens with ``mask == 0`` (prompt, tool responses, padding) never enter the
loss, the KL, the entropy or the advantage.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tirl.core.agent.rollout import RolloutConfig
from tirl.core.config import field_
from tirl.core.rewards.prs import JudgeSpec, PRSConfig, RewardConfig, build_reward_fn
from tirl.core.rl import checkpoint as ckpt
from tirl.core.rl.vspo import GroupResult, VSPOConfig
from tirl.core.types import RewardBreakdown, RewardFn, Trajectory

logger = logging.getLogger(__name__)

ALGORITHMS = ("vspo", "grpo", "ppo", "cispo")
GROUP_METHODS = ("vspo", "grpo", "cispo")
ADVANTAGES = ("auto", "grpo", "drgrpo", "gae")
POLICY_LOSS_NAMES = ("auto", "ppo_clip", "cispo")
KL_ESTIMATORS = ("k1", "k2", "k3")
LR_SCHEDULES = ("constant", "linear", "cosine")
PRECISIONS = ("fp32", "bf16")

MetricsCallback = Callable[[dict[str, float], int], None]
#: ``rollout_fn(questions, group_size, seed) -> trajectories`` (``group_size`` per question,
#: any order; they are grouped by ``question_id``).
RolloutFn = Callable[[list[dict[str, Any]], int, int], list[Trajectory]]


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass(frozen=True)
class TrainConfig:
    """Online RL stage (``vspo_update``). One line of doc per field."""

    algorithm: str = field_("vspo", doc="vspo | grpo (= vspo, selection none) | ppo | cispo",
                            choices=ALGORITHMS)
    reward: str = field_("prs", doc="reward function: prs (staged) | binary (0/1 EM)",
                         choices=("prs", "binary"))
    advantage: str = field_("auto", doc="auto (gae for ppo, else grpo) | grpo | drgrpo | gae",
                            choices=ADVANTAGES)
    policy_loss: str = field_("auto", doc="auto (cispo for cispo, else ppo_clip) | ppo_clip | cispo",
                              choices=POLICY_LOSS_NAMES)
    kl_estimator: str = field_("k3", doc="KL-to-reference estimator", choices=KL_ESTIMATORS)
    kl_beta: float = field_(0.001, doc="KL coefficient (paper 0.001); 0 drops the reference model",
                            ge=0.0)
    clip_eps: float = field_(0.2, doc="PPO clip ratio (paper 0.2); CISPO: IS-weight upper clip",
                            gt=0.0)
    clip_eps_high: float | None = field_(None, doc="upper clip (DAPO clip-higher); null = clip_eps")
    entropy_coef: float = field_(0.0, doc="entropy bonus coefficient (0 = report only)", ge=0.0)
    lr: float = field_(1e-6, doc="AdamW learning rate (paper 1e-6)", gt=0.0)
    weight_decay: float = field_(0.0, doc="AdamW weight decay", ge=0.0)
    steps: int = field_(100, doc="RL steps (one batch of prompts each)", ge=1)
    batch_prompts: int = field_(8, doc="B: prompts per step (global, over all processes)", ge=1)
    group_size: int = field_(5, doc="G: rollouts per prompt (paper 5)", ge=1)
    ppo_epochs: int = field_(1, doc="passes over each batch", ge=1)
    minibatch_size: int | None = field_(None, doc="trajectories per optimiser step; null = B*G",
                                        ge=1)
    grad_accum: int = field_(1, doc="micro-batches per optimiser step (minibatch split)", ge=1)
    micro_tokens: int | None = field_(
        16384, doc="most tokens (rows x padded length) in one forward pass; larger micro-"
                   "batches are split further, exactly (losses are sums over the global token "
                   "count); null = no limit", ge=1)
    max_grad_norm: float = field_(1.0, doc="gradient clipping norm", gt=0.0)
    lr_schedule: str = field_("constant", doc="lr schedule after warmup", choices=LR_SCHEDULES)
    warmup_steps: int = field_(0, doc="linear warmup, in RL steps", ge=0)
    precision: str = field_("fp32", doc="fp32 | bf16 (autocast; master weights stay fp32)",
                            choices=PRECISIONS)
    seed: int = field_(0, doc="seed of sampling, shuffling and VSPO selection")
    checkpoint_every: int = field_(0, doc="save a checkpoint every N steps (0 = never)", ge=0)
    val_every: int = field_(0, doc="run the validate callback before step 0, every N steps and "
                                   "at the end (0 = never)", ge=0)
    keep_checkpoints: int = field_(2, doc="complete checkpoints kept on disk", ge=1)
    max_nonfinite_in_row: int = field_(3, doc="consecutive non-finite steps before stopping", ge=1)
    gamma: float = field_(1.0, doc="PPO/GAE discount", ge=0.0, le=1.0)
    gae_lambda: float = field_(0.95, doc="PPO/GAE lambda", ge=0.0, le=1.0)
    value_clip: float = field_(0.2, doc="PPO clipped value loss range", gt=0.0)
    value_coef: float = field_(0.5, doc="PPO value-loss weight", ge=0.0)
    critic_lr: float | None = field_(None, doc="critic lr; null = lr")
    vspo: VSPOConfig = field_(default_factory=VSPOConfig, doc="VSPO options (METHOD.md 4)")
    rollout: RolloutConfig = field_(default_factory=RolloutConfig, doc="rollout engine options")
    prs: PRSConfig = field_(default_factory=PRSConfig, doc="PRS stage values and schedule")
    judge: JudgeSpec = field_(default_factory=JudgeSpec, doc="long-form judge (PRS and binary)")

    def __post_init__(self) -> None:
        adv, loss = self.resolved_advantage, self.resolved_policy_loss
        if self.algorithm == "ppo" and adv != "gae":
            raise ValueError(f"advantage: ppo needs 'gae' (critic), got {self.advantage!r}")
        if self.algorithm != "ppo" and adv == "gae":
            raise ValueError(f"advantage: 'gae' needs algorithm 'ppo' (a critic), "
                             f"got algorithm {self.algorithm!r}")
        if self.algorithm == "cispo" and loss != "cispo":
            raise ValueError(f"policy_loss: algorithm cispo needs 'cispo', got {self.policy_loss!r}")
        if self.algorithm in GROUP_METHODS and self.group_size < 2:
            raise ValueError(f"group_size: {self.algorithm} compares rollouts within a group "
                             f"and needs group_size >= 2, got {self.group_size}")
        total = self.batch_prompts * self.group_size
        mb = self.minibatch_size or total
        if total % mb:
            raise ValueError(f"minibatch_size: batch_prompts*group_size = {total} is not "
                             f"divisible by minibatch_size = {mb}")
        if mb % self.grad_accum:
            raise ValueError(f"grad_accum: minibatch_size = {mb} is not divisible by "
                             f"grad_accum = {self.grad_accum}")
        if self.clip_eps_high is not None and self.clip_eps_high <= 0:
            raise ValueError(f"clip_eps_high: {self.clip_eps_high} must be > 0")

    @property
    def resolved_advantage(self) -> str:
        if self.advantage != "auto":
            return self.advantage
        return "gae" if self.algorithm == "ppo" else "grpo"

    @property
    def resolved_policy_loss(self) -> str:
        if self.policy_loss != "auto":
            return self.policy_loss
        return "cispo" if self.algorithm == "cispo" else "ppo_clip"

    @property
    def uses_replacement(self) -> bool:
        """VSPO replacement runs for vspo and grpo (grpo = selection none)."""
        return self.algorithm in ("vspo", "grpo")

    @property
    def effective_vspo(self) -> VSPOConfig:
        return replace(self.vspo, selection="none") if self.algorithm == "grpo" else self.vspo

    @property
    def n_minibatches(self) -> int:
        total = self.batch_prompts * self.group_size
        return total // (self.minibatch_size or total)


def make_reward(config: TrainConfig, judge: Any | None = None) -> RewardFn:
    """The reward function named by ``config.reward`` with its PRS options and judge."""
    return build_reward_fn(RewardConfig(reward=config.reward, prs=config.prs,
                                        judge=config.judge), judge=judge)


# --- prompt sampler ------------------------------------------------------------------------


class PromptSampler:
    """Epoch-wise shuffled prompt indices; its whole state is ``(epoch, position)``.

    A batch never spans an epoch boundary (the tail of an epoch is skipped), so one batch
    never holds the same prompt twice.
    """

    def __init__(self, n: int, batch: int, seed: int) -> None:
        if batch > n:
            raise ValueError(f"batch_prompts: {batch} is larger than the {n} training questions")
        self.n, self.batch, self.seed = n, batch, seed
        self.epoch, self.position = 0, 0

    def _perm(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def next_batch(self) -> list[int]:
        if self.position + self.batch > self.n:
            self.epoch, self.position = self.epoch + 1, 0
        idx = self._perm()[self.position:self.position + self.batch]
        self.position += self.batch
        return [int(i) for i in idx]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


# --- groups and batches -------------------------------------------------------------------


def group_trajectories(questions: Sequence[dict[str, Any]], trajectories: Sequence[Trajectory],
                       rewards: Sequence[RewardBreakdown]) -> list[GroupResult]:
    """One :class:`GroupResult` per question, in the order of ``questions``; rollouts
    within a group ordered by ``sample_idx``."""
    by_id: dict[str, list[tuple[Trajectory, RewardBreakdown]]] = {}
    for t, r in zip(trajectories, rewards, strict=True):
        by_id.setdefault(str(t.question_id), []).append((t, r))
    groups = []
    for q in questions:
        pairs = sorted(by_id.get(str(q["id"]), []), key=lambda p: p[0].sample_idx)
        if not pairs:
            raise RuntimeError(f"rollout returned no trajectory for question {q['id']!r}")
        groups.append(GroupResult(prompt_id=str(q["id"]), rewards=[p[1].reward for p in pairs],
                                  outcomes=[p[1].outcome for p in pairs],
                                  trajectories=[p[0] for p in pairs]))
    return groups


@dataclass
class Batch:
    """Padded training tensors of N trajectories, aligned with *next-token targets*.

    ``input_ids``/``attention_mask``: [N, T]. Every other tensor is [N, T-1]: position ``t``
    is the prediction of token ``t + 1`` (``loss_mask[:, t] = mask[t + 1]``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    sample_logprobs: torch.Tensor
    advantages: torch.Tensor
    reused: torch.Tensor  # [N] bool
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: torch.Tensor) -> "Batch":
        """Rows ``idx``, trimmed to the longest remaining sequence (saves compute)."""
        length = int(self.attention_mask[idx].sum(-1).max())
        out = {}
        for name, v in self.__dict__.items():
            if v is None:
                out[name] = None
            elif name == "reused":
                out[name] = v[idx]
            elif name in ("input_ids", "attention_mask"):
                out[name] = v[idx, :length]
            else:
                out[name] = v[idx, :length - 1]
        return Batch(**out)


def collate(groups: Sequence[GroupResult], *, pad_id: int,
            seq_advantages: Sequence[float]) -> Batch:
    """Right-pad the trajectories of ``groups`` (flattened in order) into a :class:`Batch`.

    ``seq_advantages``: one scalar per trajectory, broadcast over its trainable tokens (GRPO).
    Groups with ``origin == "reuse"`` keep their sampling log-probs as behaviour log-probs.
    """
    trajs = [t for g in groups for t in g.trajectories]
    reused = [g.origin == "reuse" for g in groups for _ in g.trajectories]
    n, length = len(trajs), max(len(t.token_ids) for t in trajs)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    attn = torch.zeros((n, length), dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.float32)
    lps = torch.zeros((n, length), dtype=torch.float32)
    for i, t in enumerate(trajs):
        if not (len(t.token_ids) == len(t.mask) == len(t.logprobs)):
            raise ValueError(f"trajectory {t.question_id}/{t.sample_idx}: token_ids, mask and "
                             f"logprobs lengths differ")
        k = len(t.token_ids)
        ids[i, :k] = torch.tensor(t.token_ids, dtype=torch.long)
        attn[i, :k] = 1
        mask[i, :k] = torch.tensor(t.mask, dtype=torch.float32)
        lps[i, :k] = torch.tensor(t.logprobs, dtype=torch.float32)
    loss_mask = mask[:, 1:]
    adv = torch.tensor(list(seq_advantages), dtype=torch.float32)[:, None] * loss_mask
    return Batch(input_ids=ids, attention_mask=attn, loss_mask=loss_mask,
                 sample_logprobs=lps[:, 1:] * loss_mask, advantages=adv,
                 reused=torch.tensor(reused, dtype=torch.bool))


def token_logprobs(model: torch.nn.Module, *, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, with_entropy: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the next tokens under ``model``.

    Args: input_ids, attention_mask: [N, T].
    Returns: logprobs [N, T-1] float32 (``[:, t] = log p(input_ids[:, t+1] | prefix)``) and,
    if asked, the entropy of the next-token distribution [N, T-1] (no gradient).
    """
    from tirl.core.rl.losses import token_entropy
    from tirl.core.rl.losses import token_logprobs as _picked

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    logprobs = _picked(logits=logits, token_ids=input_ids[:, 1:])
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = token_entropy(logits=logits.detach())
    return logprobs, entropy


# --- the math, selected by registered name (tirl.core.rl.{advantages,losses,kl,vspo}) -------
# These thin adapters are the only places that know the signatures of the registered
# functions, so the loop below reads as the algorithm.


def _sequence_advantages(config: TrainConfig, groups: Sequence[GroupResult],
                         select_counts: Sequence[int]) -> torch.Tensor:
    """One advantage per trajectory, flattened in group order: [N]. GRPO (or Dr.GRPO) within
    each group, then VSPO's value-smoothing clip for refilled groups when ``clip`` is on."""
    from tirl.core.rl.vspo import VSPOStepResult, compute_advantages

    result = VSPOStepResult(groups=list(groups), select_counts=list(select_counts), metrics={})
    return compute_advantages(result=result, config=config.effective_vspo,
                              norm_std=config.resolved_advantage == "grpo")


def _gae(config: TrainConfig, *, token_rewards: torch.Tensor, values: torch.Tensor,
         mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level GAE over trainable tokens only: (advantages, returns), both [N, T-1]."""
    from tirl.core.rl.advantages import get_advantage_estimator

    return get_advantage_estimator("gae")(token_rewards=token_rewards, values=values, mask=mask,
                                          gamma=config.gamma, lam=config.gae_lambda)


def _policy_loss(config: TrainConfig, *, logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                 advantages: torch.Tensor, mask: torch.Tensor, num_tokens: float
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy loss (token mean with the global denominator ``num_tokens``) and its stats."""
    from tirl.core.rl.losses import get_policy_loss

    name = config.resolved_policy_loss
    kwargs: dict[str, Any] = {"logprobs": logprobs, "old_logprobs": old_logprobs,
                              "advantages": advantages, "mask": mask, "num_tokens": num_tokens}
    if name == "cispo":
        # CISPO clips the importance weight: upper bound eps_high (or eps), no lower bound.
        kwargs["eps_high_is"] = config.clip_eps_high or config.clip_eps
    else:
        kwargs.update(clip_eps=config.clip_eps, clip_eps_high=config.clip_eps_high)
    return get_policy_loss(name)(**kwargs)


def _kl(config: TrainConfig, *, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
        mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate, [N, T-1], zero where mask is 0."""
    from tirl.core.rl.kl import get_kl_estimator

    return get_kl_estimator(config.kl_estimator)(logprobs=logprobs, ref_logprobs=ref_logprobs,
                                                 mask=mask)


def _value_loss(config: TrainConfig, *, values: torch.Tensor, old_values: torch.Tensor,
                returns: torch.Tensor, mask: torch.Tensor, num_tokens: float
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped value loss (token mean, global denominator) and its stats."""
    from tirl.core.rl.losses import get_value_loss

    return get_value_loss("clipped")(values=values, old_values=old_values, returns=returns,
                                     mask=mask, clip_eps=config.value_clip, num_tokens=num_tokens)


def _masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


# --- rollouts -------------------------------------------------------------------------------


def make_agent_rollout_fn(*, policy: torch.nn.Module, tokenizer: Any,
                          tools: Sequence[Any] | dict[str, Any], config: RolloutConfig
                          ) -> tuple[RolloutFn, Any]:
    """The default rollout function: the multi-turn agent engine on ``policy``.

    Returns ``(rollout_fn, backend)``; the backend is returned so that the trainer can push
    new weights to it (``sync_weights``) where it keeps its own copy (vLLM).
    """
    from tirl.core.agent.backends import make_backend
    from tirl.core.agent.rollout import run_rollouts

    kwargs = {"max_batch": config.max_batch} if config.backend == "hf" else {}
    engine = make_backend(config.backend, policy, tokenizer, **kwargs)
    registry = dict(tools) if isinstance(tools, dict) else {t.name: t for t in tools}

    def rollout(questions: list[dict[str, Any]], group_size: int, seed: int) -> list[Trajectory]:
        return run_rollouts(backend=engine, tokenizer=tokenizer, tools=registry,
                            questions=questions, group_size=group_size, config=config,
                            progress=False, seed=seed)

    return rollout, engine


def _seed_step(seed: int, step: int, rank: int) -> None:
    """Re-seed every global RNG from (seed, step, rank): resumed runs sample identically."""
    s = int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


#: A step past any reward schedule's ramp: the reward with its curriculum finished.
SCHEDULE_DONE = 10 ** 9


def _score(reward_fn: RewardFn, groups_q: Sequence[dict[str, Any]],
           trajectories: Sequence[Trajectory], step: int) -> list[RewardBreakdown]:
    by_id = {str(q["id"]): q for q in groups_q}
    return [reward_fn(t, by_id[str(t.question_id)], step=step) for t in trajectories]


# --- VSPO replacement ------------------------------------------------------------------------


def _vspo_replace(*, config: TrainConfig, acc: Any, groups: list[GroupResult], table: Any,
                  step: int, questions: dict[str, dict[str, Any]], rollout_fn: RolloutFn,
                  reward_fn: RewardFn, rollout_seed: int
                  ) -> tuple[list[GroupResult], list[int], dict[str, float]]:
    """METHOD.md 4.1-4.5 on this process's ``groups``; returns (groups, select counts, metrics).

    Under several processes every process sees the *global* batch (gathered), so the value
    table and the replacement plan (same seeded RNG) are identical everywhere; each process
    re-rolls the refills of the slots it owns, and the refills are gathered again so that
    every table records the same visits.
    """
    from tirl.core.rl.vspo import finalise_refill, is_zero_advantage, plan_replacement

    vcfg = config.effective_vspo
    if not config.uses_replacement:
        zero = [is_zero_advantage(g.signal(vcfg.zero_signal), vcfg.zero_eps) for g in groups]
        frac = _global_sum(acc, [sum(zero), len(groups)])
        return groups, [0] * len(groups), {"vspo/zero_adv_frac": frac[0] / max(frac[1], 1)}

    rank, per_proc = acc.process_index, len(groups)
    everyone = _all_groups(acc, groups)
    table.update(step=step, groups=everyone)
    rng = np.random.default_rng([config.seed, step, 0x5650])
    plan = plan_replacement(groups=everyone, table=table, rng=rng, step=step)
    # refill_ids[i] takes the slot of drop[i]; the slot's owner rolls it out.
    owner = {pid: plan.drop[i] // per_proc for i, pid in enumerate(plan.refill_ids)}
    mine = [pid for pid in plan.refill_ids if owner[pid] == rank]
    if vcfg.refill == "reuse" or not plan.refill_ids:
        refills = [table.stored_group(pid) for pid in plan.refill_ids] \
            if vcfg.refill == "reuse" else []
    else:
        local_refills: list[GroupResult] = []
        if mine:
            qs = [questions[pid] for pid in mine]
            seed = int(np.random.SeedSequence([rollout_seed, 1]).generate_state(1)[0])
            with torch.no_grad():
                trajs = rollout_fn(qs, config.group_size, seed)
            local_refills = group_trajectories(qs, trajs, _score(reward_fn, qs, trajs, step))
            for g in local_refills:
                g.origin = "reroll"
        by_id = {g.prompt_id: g for g in _all_groups(acc, local_refills)}
        refills = [by_id[pid] for pid in plan.refill_ids]
    result = finalise_refill(groups=everyone, plan=plan, refills=refills, table=table, step=step)

    # This process's share: its own kept groups, then the surviving refills of its slots.
    dropped = set(plan.drop)
    local_kept = [g for i, g in enumerate(everyone)
                  if i // per_proc == rank and i not in dropped]
    n_batch_kept = len(everyone) - len(dropped)
    local_groups, local_counts = list(local_kept), [0] * len(local_kept)
    for g, k in zip(result.groups[n_batch_kept:], result.select_counts[n_batch_kept:],
                    strict=True):
        if owner[g.prompt_id] == rank:
            local_groups.append(g)
            local_counts.append(k)
    return local_groups, local_counts, dict(result.metrics)


# --- the loop -------------------------------------------------------------------------------


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


@dataclass
class _State:
    """Everything that changes over a run and goes into a checkpoint (besides modules)."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    nonfinite_in_row: int = 0


def _global_sum(acc: Any, values: Sequence[float]) -> list[float]:
    """Sum ``values`` over processes (identity with one process)."""
    if acc.num_processes == 1:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=acc.device)
    return [float(v) for v in acc.reduce(t, reduction="sum").cpu()]


def _global_max(acc: Any, value: int) -> int:
    """The largest ``value`` over processes (identity with one process)."""
    if acc.num_processes == 1:
        return int(value)
    return int(acc.gather(torch.tensor([int(value)], device=acc.device)).max())


def token_budget_split(lengths: torch.Tensor, rows: torch.Tensor,
                       max_tokens: int | None) -> list[torch.Tensor]:
    """Split ``rows`` into micro-batches of at most ``max_tokens`` padded tokens each.

    lengths: [N] sequence lengths; rows: indices into it. Rows go longest first, so that each
    micro-batch (padded to its longest row, see :meth:`Batch.select`) pads little; a row
    longer than the budget goes alone. ``max_tokens=None``: ``[rows]`` unchanged.
    """
    if max_tokens is None or rows.numel() == 0:
        return [rows]
    order = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
    sizes = lengths[order].tolist()
    out, start = [], 0
    while start < len(order):
        take = max(1, max_tokens // max(int(sizes[start]), 1))
        out.append(order[start:start + take])
        start += take
    return out


def _all_groups(acc: Any, items: list[Any]) -> list[Any]:
    """Concatenate per-process lists in process order (identity with one process)."""
    if acc.num_processes == 1:
        return list(items)
    from accelerate.utils import gather_object

    return list(gather_object(items))


def _reward_metrics(rs: Sequence[RewardBreakdown], trajs: Sequence[Trajectory]
                    ) -> dict[str, float]:
    """Means over this process's fresh rollouts (the learning curve: before replacement)."""
    n = max(len(rs), 1)
    out = {"reward/mean": sum(r.reward for r in rs) / n,
           "reward/format": sum(r.format for r in rs) / n,
           "reward/quality": sum(r.quality for r in rs) / n,
           "reward/exact_match": sum(r.exact_match for r in rs) / n,
           "reward/outcome": sum(r.outcome for r in rs) / n}
    for k in range(3):
        out[f"reward/stage_{k}_frac"] = sum(r.stage == k for r in rs) / n
    m = max(len(trajs), 1)
    out["rollout/turns"] = sum(t.num_turns for t in trajs) / m
    out["rollout/tool_calls"] = sum(t.num_tool_calls for t in trajs) / m
    out["rollout/response_tokens"] = sum(sum(t.mask) for t in trajs) / m
    out["rollout/answer_frac"] = sum(t.finish_reason == "answer" for t in trajs) / m
    return out


def train(*, policy: torch.nn.Module, tokenizer: Any, questions: Sequence[dict[str, Any]],
          tools: Sequence[Any], config: TrainConfig, reward_fn: RewardFn,
          on_metrics: MetricsCallback | None = None, checkpoint_dir: Path | str | None = None,
          resume: bool = False, rollout_fn: RolloutFn | None = None,
          accelerator: Any | None = None,
          validate: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
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
    Returns:
        (the trained policy, unwrapped; one metrics dict per step, ``step`` included).
    Raises:
        ValueError before any work on bad inputs; NonFiniteError after
        ``max_nonfinite_in_row`` consecutive non-finite steps.
    """
    from accelerate import Accelerator

    from tirl.core.rl.critic import make_critic
    from tirl.core.rl.vspo import ValueTable

    questions = [dict(q) for q in questions]
    ids = [str(q["id"]) for q in questions]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"questions: id {dup!r} appears more than once")
    sampler = PromptSampler(len(questions), config.batch_prompts, config.seed)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    n_proc, rank = acc.num_processes, acc.process_index
    if config.batch_prompts % n_proc:
        raise ValueError(f"batch_prompts: {config.batch_prompts} is not divisible by the "
                         f"{n_proc} processes")

    # Modules. The reference is copied before anything can change the weights.
    torch.manual_seed(config.seed)
    policy.train()
    reference = None
    if config.kl_beta > 0:
        reference = copy.deepcopy(policy).eval().requires_grad_(False).to(acc.device)
    critic = make_critic(policy) if config.algorithm == "ppo" else None
    param_groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.lr}]
    if critic is not None:
        param_groups.append({"params": list(critic.parameters()), "lr": config.critic_lr or config.lr})
    optimizer = torch.optim.AdamW(param_groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    if critic is not None:
        policy, critic, optimizer = acc.prepare(policy, critic, optimizer)
    else:
        policy, optimizer = acc.prepare(policy, optimizer)
    raw_policy = acc.unwrap_model(policy)
    raw_critic = acc.unwrap_model(critic) if critic is not None else None

    table = ValueTable(config.effective_vspo)
    state = _State()
    fingerprint = run_fingerprint(config, raw_policy, questions)
    if resume:
        loaded = ckpt.load_latest(checkpoint_dir)
        if loaded is not None and loaded.state.get("fingerprint") != fingerprint:
            # Same folder, other run: resuming would silently continue training that used
            # other settings, another starting model or other questions. Keep it, aside.
            stale = ckpt.set_aside(checkpoint_dir)
            logger.warning("resume: the checkpoints in %s come from a run with other settings, "
                           "starting model or questions; moved them to %s and starting fresh",
                           checkpoint_dir, stale)
            loaded = None
        if loaded is None:
            logger.info("resume: no matching checkpoint in %s, starting fresh", checkpoint_dir)
        else:
            s = loaded.state
            raw_policy.load_state_dict(s["policy"])
            if raw_critic is not None:
                raw_critic.load_state_dict(s["critic"])
            optimizer.load_state_dict(s["optimizer"])
            scheduler.load_state_dict(s["scheduler"])
            sampler.load_state_dict(s["sampler"])
            table.load_state_dict(s["value_table"])
            state = _State(step=s["step"], history=list(s["history"]),
                           nonfinite_in_row=s["nonfinite_in_row"])
            ckpt.set_rng_state(s["rng"])
            logger.info("resumed from %s (step %d)", loaded.path, loaded.step)

    if rollout_fn is None:
        rollout_fn, engine = make_agent_rollout_fn(policy=raw_policy, tokenizer=tokenizer,
                                                   tools=tools, config=config.rollout)
    else:
        engine = None
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    per_proc = config.batch_prompts // n_proc
    bar = tqdm(total=config.steps, initial=state.step, desc=f"rl:{config.algorithm}",
               disable=not acc.is_main_process, dynamic_ncols=True)

    def run_validation(step: int) -> dict[str, float]:
        if validate is None or not config.val_every:
            return {}
        found: dict[str, float] = {}
        if acc.is_main_process:
            was_training = raw_policy.training
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                found = {f"val/{k}": float(v) for k, v in validate(raw_policy.eval()).items()}
            raw_policy.train(was_training)
        acc.wait_for_everyone()
        return found

    if state.step == 0 and validate is not None and config.val_every:
        # The starting point (the SFT level): a history row of its own with step -1. In
        # MLflow, val/* metrics are logged at the number of updates done (0 here).
        before = run_validation(-1)
        if before:
            state.history.append({"step": -1.0, **before})
            if acc.is_main_process and on_metrics is not None:
                on_metrics(before, 0)

    while state.step < config.steps:
        step = state.step
        t_step = time.perf_counter()
        _seed_step(config.seed, step, rank)
        # The sampler is global and identically seeded on every process; each process
        # rolls out its contiguous share of the global batch.
        batch_idx = sampler.next_batch()
        local_q = [questions[i] for i in batch_idx[rank * per_proc:(rank + 1) * per_proc]]
        rollout_seed = int(np.random.SeedSequence([config.seed, step]).generate_state(1)[0])

        raw_policy.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            trajs = rollout_fn(local_q, config.group_size, rollout_seed)
        t_rollout = time.perf_counter() - t0
        t0 = time.perf_counter()
        rewards = _score(reward_fn, local_q, trajs, step)
        t_reward = time.perf_counter() - t0
        groups = local_groups = group_trajectories(local_q, trajs, rewards)
        metrics = _reward_metrics(rewards, trajs)
        # The same rollouts scored as the curriculum's end state: a curve the schedule does
        # not move, so a falling shaped reward is not mistaken for a worse policy.
        final = _score(reward_fn, local_q, trajs, SCHEDULE_DONE)
        metrics["reward/unscheduled"] = sum(r.reward for r in final) / max(len(final), 1)

        # VSPO replacement (steps 1-5) for vspo/grpo; statistics for every algorithm.
        t0 = time.perf_counter()
        groups, counts, vstats = _vspo_replace(
            config=config, acc=acc, groups=groups, table=table, step=step,
            questions={str(q["id"]): q for q in questions}, rollout_fn=rollout_fn,
            reward_fn=reward_fn, rollout_seed=rollout_seed)
        t_refill = time.perf_counter() - t0
        metrics.update(vstats)

        # Every process must run the same collective ops: a process whose groups were all
        # dropped trains on a zero-weight placeholder; a globally empty batch skips the update.
        n_global = _global_sum(acc, [len(groups)])[0]
        placeholder = not groups
        if placeholder:
            groups, counts = [local_groups[0]], [0]
        raw_policy.train()
        t0 = time.perf_counter()
        upd, n_tokens = {"batch/empty": 1.0}, 0
        if n_global > 0:
            upd, n_tokens = _update(config=config, acc=acc, policy=policy, critic=critic,
                                reference=reference, optimizer=optimizer, groups=groups,
                                select_counts=counts, pad_id=pad_id, step=step,
                                placeholder=placeholder)
        t_update = time.perf_counter() - t0
        with warnings.catch_warnings():
            # A skipped (non-finite or empty) step has no optimizer.step(); the schedule
            # still advances so that it stays a function of the RL step.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            scheduler.step()
        if engine is not None and hasattr(engine, "sync_weights"):
            engine.sync_weights(raw_policy)
        metrics.update(upd)

        skipped = upd.get("step/skipped", 0.0) > 0
        state.nonfinite_in_row = state.nonfinite_in_row + 1 if skipped else 0
        if skipped:
            logger.warning("step %d: non-finite loss or gradient; update skipped (%d in a row)",
                           step, state.nonfinite_in_row)
            if state.nonfinite_in_row >= config.max_nonfinite_in_row:
                raise NonFiniteError(
                    f"{state.nonfinite_in_row} consecutive steps had a non-finite loss or "
                    f"gradient (max_nonfinite_in_row={config.max_nonfinite_in_row}); last at "
                    f"step {step}. Lower lr, check rewards for NaN, or try precision fp32.")

        # Process-summed reward/rollout metrics: every process scored its own share.
        keys = [k for k in metrics if k.startswith(("reward/", "rollout/"))]
        n_local = len(local_q)  # equal on every process: a plain mean of means is exact
        sums = _global_sum(acc, [metrics[k] * n_local for k in keys])
        metrics.update({k: v / (n_local * n_proc) for k, v in zip(keys, sums, strict=True)})
        dt = time.perf_counter() - t_step
        total_tokens = _global_sum(acc, [n_tokens])[0]
        metrics.update({
            "lr": scheduler.get_last_lr()[0],
            "time/rollout_s": t_rollout, "time/reward_s": t_reward, "time/refill_s": t_refill,
            "time/update_s": t_update, "time/step_s": dt,
            "perf/tokens_per_s": total_tokens / dt if dt > 0 else 0.0,
            "perf/update_tokens_per_s": total_tokens * config.ppo_epochs / t_update
            if t_update > 0 else 0.0,
        })
        metrics = {k: float(v) for k, v in metrics.items()}
        val = {}
        if config.val_every and ((step + 1) % config.val_every == 0 or step + 1 == config.steps):
            val = run_validation(step)
        state.history.append({"step": float(step), **metrics, **val})
        state.step = step + 1
        if acc.is_main_process and on_metrics is not None:
            on_metrics(metrics, step)
            if val:
                on_metrics(val, step + 1)
        bar.update(1)
        bar.set_postfix({"R": f"{metrics['reward/mean']:.3f}",
                         "kl": f"{metrics.get('actor/kl', 0.0):.4f}",
                         "zero": f"{metrics.get('vspo/zero_adv_frac', 0.0):.2f}"})

        if checkpoint_dir is not None and config.checkpoint_every and \
                state.step % config.checkpoint_every == 0:
            if acc.is_main_process:
                ckpt.save_checkpoint(checkpoint_dir, state.step, {
                    "policy": raw_policy.state_dict(),
                    "critic": raw_critic.state_dict() if raw_critic is not None else None,
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "sampler": sampler.state_dict(), "value_table": table.state_dict(),
                    "step": state.step, "history": state.history,
                    "nonfinite_in_row": state.nonfinite_in_row, "rng": ckpt.rng_state(),
                    "fingerprint": fingerprint,
                }, keep=config.keep_checkpoints)
            acc.wait_for_everyone()
    bar.close()
    raw_policy.eval()
    return raw_policy, state.history


#: Fields that may change between a run and its resumption without making it another run
#: (``micro_tokens`` splits the same sums differently: a memory setting, not a new run).
_RESUMABLE_FIELDS = ("steps", "checkpoint_every", "keep_checkpoints", "micro_tokens")


def run_fingerprint(config: TrainConfig, policy: torch.nn.Module,
                    questions: Sequence[dict[str, Any]]) -> str:
    """Identity of a training run: its settings (less :data:`_RESUMABLE_FIELDS`), a digest of
    the starting weights and the question ids. A checkpoint resumes only the same run."""
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in _RESUMABLE_FIELDS}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in policy.state_dict().items():
            flat = p.detach().reshape(-1)
            # Shape plus a few values from both ends: cheap for 7B models, and any change of
            # starting checkpoint changes them.
            sample = torch.cat([flat[:256], flat[-256:]]).float().cpu().numpy().tobytes()
            h.update(name.encode() + str(tuple(p.shape)).encode() + sample)
    h.update(json.dumps([q["id"] for q in questions]).encode())
    return h.hexdigest()[:16]


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


def _update(*, config: TrainConfig, acc: Any, policy: torch.nn.Module,
            critic: torch.nn.Module | None, reference: torch.nn.Module | None,
            optimizer: torch.optim.Optimizer, groups: Sequence[GroupResult],
            select_counts: Sequence[int], pad_id: int, step: int, placeholder: bool = False
            ) -> tuple[dict[str, float], int]:
    """Advantages + ``ppo_epochs`` passes of minibatch updates over this process's groups.

    ``placeholder``: the groups only stand in so that this process joins the collective
    ops; their loss weight is 0. Returns (metrics, number of tokens in the local batch).
    """
    device = acc.device
    n_proc = acc.num_processes
    if config.algorithm == "ppo":
        seq_adv = torch.zeros(sum(len(g.trajectories) for g in groups))
    else:
        seq_adv = _sequence_advantages(config, groups, select_counts)
    batch = collate(groups, pad_id=pad_id, seq_advantages=seq_adv.tolist())
    batch = Batch(**{k: (v.to(device) if torch.is_tensor(v) else v)
                     for k, v in batch.__dict__.items()})
    if placeholder:
        batch.loss_mask = torch.zeros_like(batch.loss_mask)
    n = len(batch)
    lengths = batch.attention_mask.sum(-1)
    micro = max(1, n // (config.n_minibatches * config.grad_accum))

    # One pass over one minibatch: the policy does not move before every token has been
    # through the training forward, so that forward, detached, *is* the pre-update
    # log-prob and the separate no-grad pass can be skipped (TRL does the same).
    single_pass = config.ppo_epochs == 1 and config.n_minibatches == 1
    # No-grad passes over the whole batch: behaviour log-probs, reference, critic. Each
    # micro-batch's rows are written back in place, so their order does not matter.
    chunks = [m for idx in torch.arange(n, device=device).split(micro)
              for m in token_budget_split(lengths, idx, config.micro_tokens)]
    chunks += [chunks[0]] * (_global_max(acc, len(chunks)) - len(chunks))  # same count everywhere
    old, ref, vals = (batch.loss_mask.new_zeros(batch.loss_mask.shape) for _ in range(3))
    with torch.no_grad(), _autocast(config, device):
        for idx in chunks:
            sub = batch.select(idx)
            width = sub.loss_mask.shape[1]
            if not single_pass:
                old[idx, :width] = token_logprobs(policy, input_ids=sub.input_ids,
                                                  attention_mask=sub.attention_mask)[0]
            if reference is not None:
                ref[idx, :width] = token_logprobs(reference, input_ids=sub.input_ids,
                                                  attention_mask=sub.attention_mask)[0]
            if critic is not None:
                vals[idx, :width] = critic(input_ids=sub.input_ids,
                                           attention_mask=sub.attention_mask)[:, :-1].float()
    if not single_pass:
        batch.old_logprobs = torch.where(batch.reused[:, None], batch.sample_logprobs,
                                         old * batch.loss_mask)
    if reference is not None:
        batch.ref_logprobs = ref * batch.loss_mask
    if critic is not None:
        batch.old_values = vals * batch.loss_mask
        rewards = torch.tensor([r for g in groups for r in g.rewards], device=device)
        batch.advantages, batch.returns = _gae(
            config, token_rewards=_last_token_rewards(batch, rewards),
            values=batch.old_values, mask=batch.loss_mask)

    sums = {"loss/policy": 0.0, "loss/kl": 0.0, "loss/value": 0.0, "loss/total": 0.0}
    tok = {"actor/kl": 0.0, "actor/entropy": 0.0, "actor/clip_frac": 0.0,
           "actor/approx_kl": 0.0, "actor/ratio_mean": 0.0, "critic/vf_clip_frac": 0.0,
           "critic/value_mean": 0.0}
    grad_norms, critic_norms, n_opt, skipped, n_tok = [], [], 0, 0, 0.0
    policy_params = [p for p in policy.parameters() if p.requires_grad]
    critic_params = list(critic.parameters()) if critic is not None else []
    for epoch in range(config.ppo_epochs):
        gen = torch.Generator().manual_seed(
            int(np.random.SeedSequence([config.seed, step, epoch, acc.process_index])
                .generate_state(1)[0]))
        perm = torch.randperm(n, generator=gen).to(device)
        for mb in perm.tensor_split(config.n_minibatches):
            if mb.numel() == 0:
                mb = perm[:1]  # see the empty micro-batch below
                empty_mb = True
            else:
                empty_mb = False
            local_tokens = 0.0 if empty_mb else float(batch.loss_mask[mb].sum())
            global_tokens = _global_sum(acc, [local_tokens])[0]
            # Each process divides by global/n_proc: DDP's gradient mean then equals the
            # token mean over every trainable token of the global minibatch.
            denom = max(global_tokens, 1.0) / n_proc
            bad = False
            micros = [] if empty_mb else [
                m for part in mb.tensor_split(config.grad_accum) if part.numel()
                for m in token_budget_split(lengths, part, config.micro_tokens)]
            # A process with fewer micro-batches (few trajectories left after VSPO drops, or
            # shorter ones) pads with zero-weight passes on one row, so that all processes
            # run the same forward and backward passes (FSDP gathers weights in each one).
            n_micro = max(_global_max(acc, len(micros)), 1)
            micros += [None] * (n_micro - len(micros))
            for j, rows in enumerate(micros):
                sub = batch.select(rows) if rows is not None \
                    else _zero_weight(batch.select(mb[:1]))
                last = j == len(micros) - 1
                ctx = [acc.no_sync(policy)] if not last and n_proc > 1 else []
                if critic is not None and not last and n_proc > 1:
                    ctx.append(acc.no_sync(critic))
                with contextlib.ExitStack() as stack:
                    for c in ctx:
                        stack.enter_context(c)
                    with _autocast(config, device):
                        lp, ent = token_logprobs(policy, input_ids=sub.input_ids,
                                                 attention_mask=sub.attention_mask,
                                                 with_entropy=True)
                        mask = sub.loss_mask
                        old_lp = sub.old_logprobs
                        if old_lp is None:  # single_pass: see above
                            old_lp = torch.where(sub.reused[:, None], sub.sample_logprobs,
                                                 lp.detach())
                        pg, st = _policy_loss(config, logprobs=lp, old_logprobs=old_lp,
                                              advantages=sub.advantages, mask=mask,
                                              num_tokens=denom)
                        loss = pg
                        if reference is not None:
                            kl_tok = _kl(config, logprobs=lp, ref_logprobs=sub.ref_logprobs,
                                         mask=mask)
                            kl_loss = kl_tok.sum() / denom
                            loss = loss + config.kl_beta * kl_loss
                            sums["loss/kl"] += float(config.kl_beta * kl_loss.detach())
                            tok["actor/kl"] += float(kl_tok.detach().sum())
                        if config.entropy_coef > 0:
                            from tirl.core.rl.losses import token_entropy
                            logits = policy(input_ids=sub.input_ids,
                                            attention_mask=sub.attention_mask).logits[:, :-1]
                            ent_g = (token_entropy(logits=logits) * mask).sum() / denom
                            loss = loss - config.entropy_coef * ent_g
                        if critic is not None:
                            v = critic(input_ids=sub.input_ids,
                                       attention_mask=sub.attention_mask)[:, :-1]
                            vl, vst = _value_loss(config, values=v, old_values=sub.old_values,
                                                  returns=sub.returns, mask=mask,
                                                  num_tokens=denom)
                            loss = loss + config.value_coef * vl
                            sums["loss/value"] += float(vl.detach())
                            mt = float(mask.sum())
                            tok["critic/vf_clip_frac"] += vst["vf_clip_frac"] * mt
                            tok["critic/value_mean"] += vst["value_mean"] * mt
                    acc.backward(loss)
                bad = bad or not math.isfinite(float(loss.detach()))
                mt = float(mask.sum())
                n_tok += mt
                sums["loss/policy"] += float(pg.detach())
                sums["loss/total"] += float(loss.detach())
                tok["actor/entropy"] += float((ent * mask).sum())
                tok["actor/clip_frac"] += st["clip_frac"] * mt
                tok["actor/approx_kl"] += st["approx_kl"] * mt
                tok["actor/ratio_mean"] += st["ratio_mean"] * mt
            gn = acc.clip_grad_norm_(policy_params, config.max_grad_norm)
            gn = float(gn) if gn is not None else 0.0
            if critic_params:
                cn = acc.clip_grad_norm_(critic_params, config.max_grad_norm)
                critic_norms.append(float(cn) if cn is not None else 0.0)
                gn_ok = math.isfinite(critic_norms[-1])
            else:
                gn_ok = True
            bad = bad or not math.isfinite(gn) or not gn_ok
            # Every process must take the same decision, or DDP replicas drift apart.
            bad = _global_sum(acc, [float(bad)])[0] > 0
            if bad:
                skipped += 1
            else:
                optimizer.step()
                grad_norms.append(gn)
            optimizer.zero_grad(set_to_none=True)
            n_opt += 1

    n_opt = max(n_opt, 1)
    g_sums = _global_sum(acc, [n_tok, *tok.values(), *sums.values()])
    g_tok = max(g_sums[0], 1.0)
    metrics = {k: v / g_tok for k, v in zip(tok, g_sums[1:1 + len(tok)], strict=True)}
    # Loss sums are already global token means per optimiser step (times n_proc/n_proc).
    metrics.update({k: v / (n_opt * n_proc) for k, v in
                    zip(sums, g_sums[1 + len(tok):], strict=True)})
    if critic is None:
        for k in ("loss/value", "critic/vf_clip_frac", "critic/value_mean"):
            metrics.pop(k)
    else:
        metrics["critic/grad_norm"] = sum(critic_norms) / max(len(critic_norms), 1)
    if reference is None:
        metrics.pop("loss/kl")
        metrics.pop("actor/kl")
    metrics["actor/grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else float("nan")
    metrics["actor/optimizer_steps"] = float(n_opt - skipped)
    metrics["step/skipped"] = float(skipped > 0)
    metrics["batch/trajectories"] = float(n)
    return metrics, int(batch.attention_mask.sum())
