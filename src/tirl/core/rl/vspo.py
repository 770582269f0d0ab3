"""VSPO: value-based replacement of zero-advantage groups (docs/algorithms.md, "VSPO").

This module holds the options, the data the steps pass along and the pure maths; the value
table is :mod:`tirl.core.rl.vspo_table`, one step's replacement and advantages
:mod:`tirl.core.rl.vspo_step`.

API (what the training loop calls, in this order, once per step)::

    config = build_config(VSPOConfig, params["vspo"])      # frozen, options documented below
    table = ValueTable(config)                            # one per run; checkpoint it:
    table.state_dict() -> dict (JSON-serialisable);  table.load_state_dict(state)

    groups = [GroupResult(prompt_id, rewards, outcomes, trajectories), ...]   # one per prompt
    table.update(step=step, groups=groups)                # 4.1: record mu, sigma, V, EMA
    plan = plan_replacement(groups=groups, table=table, rng=rng, step=step)  # pure
    #   plan.drop: indices of the zero-advantage groups to drop (empty for selection "none")
    #   plan.refill_ids: prompt ids to refill with (at most len(plan.drop))
    refills = [rollout+score(pid) as GroupResult ...]     # refill "reroll": current policy
           or [table.stored_group(pid) ...]               # refill "reuse": stored group+logprobs
    result = finalise_refill(groups=groups, plan=plan, refills=refills, table=table, step=step)
    #   result.groups: kept groups then kept refills (may be empty: skip the step)
    #   result.select_counts: per group k (0 for the batch's own groups)
    #   result.metrics: {"vspo/zero_adv_frac", "vspo/replaced", "vspo/refill_dropped", ...}
    advantages = compute_advantages(result=result, config=config)   # Tensor[N], GRPO + clip
    # sample order of the flattened batch: result.trajectories(), result.rewards(),
    # result.group_index(), result.sample_counts()

Pure helpers: ``task_value(mu, sigma, r_max, p)``, ``is_zero_advantage(rewards, eps)``,
``group_moments(rewards)``, ``value_clip_advantages(*, advantages, counts, a_max)``.

Project choices where the paper is silent (docs/algorithms.md lists them):
- Zero-advantage test, task value and value table all use the same per-rollout signal:
  ``reward`` (default) or ``outcome`` (the correctness part, ``RewardBreakdown.outcome``).
- "Within the window" means seen/selected at a step ``s`` with ``step - s <= window``.
- Candidates exclude every prompt of the current batch (a refill must add a new prompt),
  and need a stored group when ``refill == "reuse"``.
- ``value`` selection draws without replacement with probability proportional to
  ``min(ema, cap)``; ``cap`` is the ``cap_quantile`` quantile of the candidates' EMAs.
- One refill round per step: a refill that is zero-advantage again is dropped and counted.
- Clipping (``clip == "on"``) touches only refilled groups: their advantages are divided by
  ``k`` (selections of that prompt within the window, this one included) and clipped to
  ``[-a_max, a_max]``. The batch's own groups are left as GRPO made them.
- Refilled groups are appended after the kept batch groups (order does not enter the loss).
- A reused group carries the log-probs it was sampled with; the trainer must use them as the
  behaviour (old) log-probs, so the importance ratio corrects for the policy drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from tirl.core.config import field_
from tirl.core.types import Trajectory


@dataclass(frozen=True)
class VSPOConfig:
    """VSPO options (docs/algorithms.md, "VSPO"); the ablation grid is ``selection x clip``."""

    selection: str = field_("value", choices=("none", "random", "value"),
                            doc="which prompts refill dropped zero-advantage groups: value = "
                                "proportional to the smoothed task value, random = uniform "
                                "over candidates, none = plain GRPO (nothing dropped)")
    refill: str = field_("reroll", choices=("reroll", "reuse"),
                         doc="reroll = roll the selected prompt out afresh with the current "
                             "policy; reuse = replay its stored group with stored log-probs")
    clip: str | bool = field_("on", choices=("on", "off", True, False),
                              doc="value-smoothing clip of refilled groups' advantages: scale "
                                  "by 1/k and clip to [-a_max, a_max] (YAML true/false read "
                                  "as on/off)")
    zero_signal: str = field_("reward", choices=("reward", "outcome"),
                              doc="per-rollout signal whose group spread decides "
                                  "zero-advantage and task value: the reward, or its "
                                  "correctness part alone")
    p: float = field_(1.0, gt=0.0, doc="exponent of the spread in V = (r_max - mu) * sigma^p "
                                       "(1 = std, 2 = variance)")
    r_max: float = field_(1.0, doc="largest possible value of the signal (R_max)")
    window: int = field_(10, ge=0, doc="a prompt is a candidate, and its selections count "
                                       "towards k, for steps s with step - s <= window")
    ema: float = field_(0.5, gt=0.0, le=1.0,
                        doc="weight of the newest visit in the task value's moving average "
                            "(1 = no smoothing)")
    cap_quantile: float = field_(0.9, gt=0.0, le=1.0,
                                 doc="smoothed values are capped at this quantile of the "
                                     "candidate pool before sampling")
    a_max: float = field_(2.0, gt=0.0, doc="clip bound for refilled groups' advantages")
    zero_eps: float = field_(1e-6, ge=0.0, doc="a group is zero-advantage when the std of "
                                               "its signal is <= zero_eps")

    def __post_init__(self) -> None:
        # YAML 1.1 loaders read a bare `on`/`off` as a boolean; accept both spellings.
        if isinstance(self.clip, bool):
            object.__setattr__(self, "clip", "on" if self.clip else "off")
        if self.clip not in ("on", "off"):
            raise ValueError(f"clip: {self.clip!r} is not one of ['on', 'off']")

    @property
    def clip_on(self) -> bool:
        return self.clip == "on"


@dataclass
class GroupResult:
    """One prompt's scored rollouts.

    ``rewards[i]`` is the reward the advantage is computed from; ``outcomes[i]`` its
    correctness part (needed only when ``zero_signal == "outcome"``); ``trajectories`` the
    rollouts in the same order (kept so that ``refill == "reuse"`` can replay them).
    ``origin`` is "batch", "reroll" or "reuse" (set by :func:`finalise_refill`).
    """

    prompt_id: str
    rewards: list[float]
    outcomes: list[float] | None = None
    trajectories: list[Trajectory] = field(default_factory=list)
    origin: str = "batch"

    def signal(self, zero_signal: str) -> list[float]:
        if zero_signal == "reward":
            return list(self.rewards)
        if zero_signal == "outcome":
            if self.outcomes is None:
                raise ValueError(f"group {self.prompt_id!r}: zero_signal='outcome' needs "
                                 f"outcomes, got None")
            if len(self.outcomes) != len(self.rewards):
                raise ValueError(f"group {self.prompt_id!r}: {len(self.outcomes)} outcomes "
                                 f"for {len(self.rewards)} rewards")
            return list(self.outcomes)
        raise ValueError(f"unknown zero_signal {zero_signal!r} (known: ['outcome', 'reward'])")


@dataclass(frozen=True)
class ReplacementPlan:
    """What :func:`plan_replacement` decided. ``zero_adv[i]`` flags ``groups[i]``."""

    zero_adv: tuple[bool, ...]
    drop: tuple[int, ...]
    refill_ids: tuple[str, ...]
    num_candidates: int


@dataclass
class VSPOStepResult:
    """The batch that goes into the update, and the step's VSPO metrics."""

    groups: list[GroupResult]
    select_counts: list[int]  # per group: k for refills, 0 for the batch's own groups
    metrics: dict[str, float]

    def rewards(self) -> list[float]:
        return [r for g in self.groups for r in g.rewards]

    def group_index(self) -> list[int]:
        return [i for i, g in enumerate(self.groups) for _ in g.rewards]

    def sample_counts(self) -> list[int]:
        return [k for g, k in zip(self.groups, self.select_counts) for _ in g.rewards]

    def trajectories(self) -> list[Trajectory]:
        return [t for g in self.groups for t in g.trajectories]


# --- pure maths --------------------------------------------------------------------------


def group_moments(rewards: Sequence[float]) -> tuple[float, float]:
    """(mean, population std) of one group's rewards."""
    if len(rewards) == 0:
        raise ValueError("empty reward group")
    arr = np.asarray(rewards, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def is_zero_advantage(rewards: Sequence[float], eps: float = 1e-6) -> bool:
    """True when the group's population std is <= ``eps`` (all rollouts scored alike), so
    every GRPO advantage of the group is ~0 and it carries no policy gradient."""
    return group_moments(rewards)[1] <= eps


def task_value(mu: float, sigma: float, r_max: float = 1.0, p: float = 1.0) -> float:
    """``V = (r_max - mu) * sigma ** p``: high for prompts that are both hard (low mean)
    and uncertain (spread). With 0/1 rewards and success rate q, ``V`` peaks at
    ``q = p / (2 (1 + p))``: 1/4 for p = 1, 1/3 for p = 2 (plain variance: 1/2).

    A mean above ``r_max`` (a mis-set ``r_max``) gives 0 rather than a negative value.
    """
    return max(r_max - mu, 0.0) * sigma ** p


def value_clip_advantages(*, advantages: Tensor, counts: Tensor, a_max: float) -> Tensor:
    """Value-smoothing clip: where ``counts > 0``, ``clip(A / k, -a_max, a_max)``.

    Args:
        advantages: Tensor[N]. counts: Tensor[N] (int), the selection count ``k`` of each
            sample's prompt within the window; 0 for samples that were not selected.
    Returns:
        Tensor[N]; unselected samples unchanged.
    """
    if advantages.shape != counts.shape:
        raise ValueError(f"advantages and counts must share one shape, got "
                         f"{tuple(advantages.shape)} and {tuple(counts.shape)}")
    selected = counts > 0
    k = counts.to(advantages.dtype).clamp(min=1.0)
    scaled = (advantages / k).clamp(-a_max, a_max)
    return torch.where(selected, scaled, advantages)


__all__ = [
    "VSPOConfig", "GroupResult", "ReplacementPlan", "VSPOStepResult",
    "group_moments", "is_zero_advantage", "task_value", "value_clip_advantages",
]
