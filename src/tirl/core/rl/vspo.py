"""VSPO: value-based replacement of zero-advantage groups (docs/algorithms.md, "VSPO").

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

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from tirl.core.config import field_
from tirl.core.rl.advantages import ADVANTAGE_LEVELS, get_advantage_estimator
from tirl.core.types import Trajectory

log = logging.getLogger(__name__)

_STATE_VERSION = 1


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


# --- the value table ---------------------------------------------------------------------


@dataclass
class _Entry:
    value: float  # V at the latest visit
    ema: float  # moving average of V over visits
    mu: float
    sigma: float
    step: int  # step of the latest visit
    visits: int
    selected: list[int] = field(default_factory=list)  # steps it was selected at (in window)
    stored: dict[str, Any] | None = None  # refill "reuse": records, rewards, outcomes, step


_ENTRY_KEYS = tuple(f.name for f in dataclasses.fields(_Entry))


class ValueTable:
    """Per-prompt statistics for VSPO (docs/algorithms.md, VSPO steps 1, 3 and 5).

    Each entry holds the latest task value ``V``, its moving average over visits, the latest
    ``mu``/``sigma``, the step last seen, the number of visits, the steps at which it was
    selected for a refill (pruned to the window) and, for ``refill == "reuse"``, the last
    group with non-zero spread (pruned once it falls out of the window).
    """

    def __init__(self, config: VSPOConfig) -> None:
        self.config = config
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prompt_id: str) -> bool:
        return prompt_id in self._entries

    def entry(self, prompt_id: str) -> dict[str, Any]:
        """A copy of one entry's fields (for inspection and tests)."""
        return dataclasses.asdict(self._entries[prompt_id])

    def _in_window(self, seen: int, step: int) -> bool:
        return step - seen <= self.config.window

    def update(self, *, step: int, groups: Sequence[GroupResult]) -> None:
        """Record a visit of each group's prompt at ``step`` (mu, sigma, V, EMA, visits)."""
        cfg = self.config
        for g in groups:
            signal = g.signal(cfg.zero_signal)
            mu, sigma = group_moments(signal)
            if mu > cfg.r_max + 1e-9:
                log.warning("prompt %r: signal mean %.4g exceeds r_max %.4g; task value "
                            "clamped to 0 (check vspo.r_max)", g.prompt_id, mu, cfg.r_max)
            value = task_value(mu, sigma, cfg.r_max, cfg.p)
            e = self._entries.get(g.prompt_id)
            if e is None:
                e = _Entry(value=value, ema=value, mu=mu, sigma=sigma, step=step, visits=0)
                self._entries[g.prompt_id] = e
            else:
                e.ema = cfg.ema * value + (1.0 - cfg.ema) * e.ema
            e.value, e.mu, e.sigma, e.step = value, mu, sigma, step
            e.visits += 1
            if cfg.refill == "reuse":
                if sigma > cfg.zero_eps:
                    e.stored = {
                        "records": [t.to_record() if hasattr(t, "to_record") else dict(t)
                                    for t in g.trajectories],
                        "rewards": [float(r) for r in g.rewards],
                        "outcomes": (None if g.outcomes is None
                                     else [float(o) for o in g.outcomes]),
                        "step": step,
                    }
                else:
                    e.stored = None  # a zero-spread replay would be dropped anyway
        self._prune(step)

    def _prune(self, step: int) -> None:
        for e in self._entries.values():
            e.selected = [s for s in e.selected if self._in_window(s, step)]
            if e.stored is not None and not self._in_window(e.stored["step"], step):
                e.stored = None  # bounded memory: only the window's groups are replayable

    def candidates(self, step: int, exclude: Sequence[str] = ()) -> list[str]:
        """Prompt ids with ``V > 0`` seen within the window (and, for reuse, with a stored
        group), not in ``exclude``; in first-seen order."""
        skip = set(exclude)
        need_stored = self.config.refill == "reuse"
        return [pid for pid, e in self._entries.items()
                if e.value > 0.0 and self._in_window(e.step, step) and pid not in skip
                and (e.stored is not None or not need_stored)]

    def smoothed_values(self, prompt_ids: Sequence[str]) -> np.ndarray:
        """The selection weights of ``prompt_ids``: each EMA capped at the ``cap_quantile``
        quantile of these ids' EMAs (the pool), so one prompt cannot take the pool."""
        if not prompt_ids:
            return np.zeros(0)
        ema = np.array([self._entries[pid].ema for pid in prompt_ids], dtype=np.float64)
        cap = float(np.quantile(ema, self.config.cap_quantile))
        return np.minimum(ema, cap)

    def select(self, *, n: int, rng: np.random.Generator, step: int,
               exclude: Sequence[str] = ()) -> list[str]:
        """Draw up to ``n`` distinct candidates: "value" with probability proportional to
        the smoothed value, "random" uniformly, "none" nothing. Fewer than ``n`` when the
        pool is smaller. Does not record the selection (see :meth:`record_selection`)."""
        mode = self.config.selection
        if mode == "none" or n <= 0:
            return []
        pool = self.candidates(step, exclude)
        if not pool:
            return []
        size = min(n, len(pool))
        if mode == "random":
            idx = rng.choice(len(pool), size=size, replace=False)
        else:
            w = self.smoothed_values(pool)
            positive = int((w > 0).sum())
            size = min(size, positive)
            idx = rng.choice(len(pool), size=size, replace=False, p=w / w.sum())
        return [pool[i] for i in idx]

    def record_selection(self, prompt_ids: Sequence[str], step: int) -> None:
        for pid in prompt_ids:
            self._entries[pid].selected.append(step)

    def selection_count(self, prompt_id: str, step: int) -> int:
        """``k``: how often ``prompt_id`` was selected within the window ending at ``step``."""
        e = self._entries.get(prompt_id)
        return 0 if e is None else sum(1 for s in e.selected if self._in_window(s, step))

    def selected_unique(self, step: int) -> int:
        """How many distinct prompts were selected within the window ending at ``step``."""
        return sum(1 for e in self._entries.values()
                   if any(self._in_window(s, step) for s in e.selected))

    def stored_group(self, prompt_id: str) -> GroupResult:
        """The stored group of ``prompt_id`` (refill "reuse"), trajectories rebuilt from
        their records, each with the log-probs it was sampled with."""
        e = self._entries.get(prompt_id)
        if e is None or e.stored is None:
            raise KeyError(f"no stored group for prompt {prompt_id!r}")
        s = e.stored
        return GroupResult(prompt_id=prompt_id, rewards=list(s["rewards"]),
                           outcomes=None if s["outcomes"] is None else list(s["outcomes"]),
                           trajectories=[Trajectory.from_record(r) for r in s["records"]],
                           origin="reuse")

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (for checkpoints)."""
        return {"version": _STATE_VERSION,
                "entries": {pid: dataclasses.asdict(e) for pid, e in self._entries.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the table's contents with ``state`` from :meth:`state_dict`."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"value table state: expected version {_STATE_VERSION}, got "
                             f"{state.get('version') if isinstance(state, dict) else state!r}")
        entries: dict[str, _Entry] = {}
        for pid, raw in state.get("entries", {}).items():
            missing = [k for k in _ENTRY_KEYS if k not in raw]
            if missing:
                raise ValueError(f"value table state: entry {pid!r} lacks {missing}")
            entries[pid] = _Entry(value=float(raw["value"]), ema=float(raw["ema"]),
                                  mu=float(raw["mu"]), sigma=float(raw["sigma"]),
                                  step=int(raw["step"]), visits=int(raw["visits"]),
                                  selected=[int(s) for s in raw["selected"]],
                                  stored=raw["stored"])
        self._entries = entries


# --- one step of replacement -------------------------------------------------------------


def plan_replacement(*, groups: Sequence[GroupResult], table: ValueTable,
                     rng: np.random.Generator, step: int,
                     config: VSPOConfig | None = None) -> ReplacementPlan:
    """Which groups to drop and which prompts refill them (docs/algorithms.md, VSPO steps 2 and 4). Pure: reads
    ``table`` (already updated with ``groups`` at ``step``), changes nothing but ``rng``.

    With ``selection == "none"`` nothing is dropped (plain GRPO). Otherwise every
    zero-advantage group is dropped and up to as many prompts are drawn from the table's
    candidates, excluding every prompt of the current batch.
    """
    cfg = config or table.config
    if cfg != table.config:
        raise ValueError("plan_replacement: config differs from the value table's config")
    zero = tuple(is_zero_advantage(g.signal(cfg.zero_signal), cfg.zero_eps) for g in groups)
    if cfg.selection == "none":
        return ReplacementPlan(zero_adv=zero, drop=(), refill_ids=(), num_candidates=0)
    drop = tuple(i for i, z in enumerate(zero) if z)
    exclude = [g.prompt_id for g in groups]
    num_candidates = len(table.candidates(step, exclude))
    refill_ids = tuple(table.select(n=len(drop), rng=rng, step=step, exclude=exclude))
    return ReplacementPlan(zero_adv=zero, drop=drop, refill_ids=refill_ids,
                           num_candidates=num_candidates)


def finalise_refill(*, groups: Sequence[GroupResult], plan: ReplacementPlan,
                    refills: Sequence[GroupResult], table: ValueTable,
                    step: int) -> VSPOStepResult:
    """Put the refills in place of the dropped groups and compute the step's metrics.

    ``refills[i]`` is the scored group of ``plan.refill_ids[i]``. Records the selections and,
    for "reroll", the refills' visits in ``table``; drops (and counts) refills that are
    zero-advantage again: there is no second round.
    """
    cfg = table.config
    if len(refills) != len(plan.refill_ids):
        raise ValueError(f"expected {len(plan.refill_ids)} refills, got {len(refills)}")
    for pid, g in zip(plan.refill_ids, refills):
        if g.prompt_id != pid:
            raise ValueError(f"refill for {pid!r} carries prompt id {g.prompt_id!r}")
    table.record_selection(plan.refill_ids, step)
    if cfg.refill == "reroll":
        table.update(step=step, groups=refills)
    dropped = set(plan.drop)
    kept = [g for i, g in enumerate(groups) if i not in dropped]
    counts = [0] * len(kept)
    refill_dropped = 0
    for g in refills:
        if is_zero_advantage(g.signal(cfg.zero_signal), cfg.zero_eps):
            refill_dropped += 1
            continue
        kept.append(dataclasses.replace(g, origin=cfg.refill))
        counts.append(table.selection_count(g.prompt_id, step))
    n = len(groups)
    metrics = {
        "vspo/zero_adv_frac": (sum(plan.zero_adv) / n) if n else 0.0,
        "vspo/dropped": float(len(plan.drop)),
        "vspo/selected": float(len(plan.refill_ids)),
        "vspo/replaced": float(len(refills) - refill_dropped),
        "vspo/refill_dropped": float(refill_dropped),
        "vspo/shortfall": float(len(plan.drop) - len(plan.refill_ids)),
        "vspo/candidates": float(plan.num_candidates),
        "vspo/table_size": float(len(table)),
        "vspo/selected_unique": float(table.selected_unique(step)),
        "vspo/select_count_max": float(max(counts, default=0)),
    }
    return VSPOStepResult(groups=kept, select_counts=counts, metrics=metrics)


def compute_advantages(*, result: VSPOStepResult, config: VSPOConfig, estimator: str = "grpo",
                       eps: float = 1e-6) -> Tensor:
    """Group-relative advantages of the final batch (docs/algorithms.md, VSPO step 6), with the
    sequence-level estimator registered as ``estimator`` ("grpo", or "drgrpo" without the std
    division), value-clipped when ``clip`` is on.

    Returns Tensor[N] (float32) in the order of ``result.trajectories()``.
    """
    if ADVANTAGE_LEVELS.get(estimator) != "sequence":
        raise ValueError(f"advantage estimator {estimator!r} is not a sequence-level one "
                         f"(known: {sorted(k for k, v in ADVANTAGE_LEVELS.items() if v == 'sequence')})")
    if not result.groups:
        return torch.zeros(0)
    rewards = torch.tensor(result.rewards(), dtype=torch.float32)
    index = torch.tensor(result.group_index(), dtype=torch.long)
    adv = get_advantage_estimator(estimator)(rewards=rewards, group_index=index, eps=eps)
    if config.clip_on:
        counts = torch.tensor(result.sample_counts(), dtype=torch.long)
        adv = value_clip_advantages(advantages=adv, counts=counts, a_max=config.a_max)
    return adv


__all__ = [
    "VSPOConfig", "GroupResult", "ReplacementPlan", "VSPOStepResult", "ValueTable",
    "group_moments", "is_zero_advantage", "task_value", "value_clip_advantages",
    "plan_replacement", "finalise_refill", "compute_advantages",
]
