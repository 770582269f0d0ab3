"""One VSPO step on a batch of groups (docs/algorithms.md, VSPO steps 2, 4 and 6): which
groups to drop and refill, the refilled batch and its metrics, and its advantages.
Options and maths: :mod:`tirl.core.rl.vspo`; the table: :mod:`tirl.core.rl.vspo_table`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from tirl.core.rl.advantages import ADVANTAGE_LEVELS, get_advantage_estimator
from tirl.core.rl.vspo import (GroupResult, ReplacementPlan, VSPOConfig, VSPOStepResult,
                               is_zero_advantage, value_clip_advantages)
from tirl.core.rl.vspo_table import ValueTable


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


__all__ = ["plan_replacement", "finalise_refill", "compute_advantages"]
