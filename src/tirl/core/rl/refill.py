"""VSPO's replacement inside the loop (docs/algorithms.md, VSPO steps 1-5): the value table
sees the step's groups, zero-advantage groups are dropped and refilled, and each process
keeps its share. The math is :mod:`tirl.core.rl.vspo_table` (table) and
:mod:`tirl.core.rl.vspo_step` (plan, refill); this module only places it across processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tirl.core.rl.batch import group_trajectories
from tirl.core.rl.config import TrainConfig
from tirl.core.rl.dist import all_groups, global_sum
from tirl.core.rl.sampling import RolloutFn, score
from tirl.core.rl.vspo import GroupResult, ReplacementPlan, is_zero_advantage
from tirl.core.rl.vspo_step import finalise_refill, plan_replacement
from tirl.core.rl.vspo_table import ValueTable
from tirl.core.types import RewardFn


def vspo_replace(*, config: TrainConfig, acc: Any, groups: list[GroupResult],
                 table: ValueTable, step: int, questions: dict[str, dict[str, Any]],
                 rollout_fn: RolloutFn, reward_fn: RewardFn, rollout_seed: int
                 ) -> tuple[list[GroupResult], list[int], dict[str, float]]:
    """VSPO steps 1-5 on this process's ``groups``; returns (groups, select counts, metrics).

    Under several processes every process sees the *global* batch (gathered), so the value
    table and the replacement plan (same seeded RNG) are identical everywhere; each process
    re-rolls the refills of the slots it owns, and the refills are gathered again so that
    every table records the same visits. Without replacement (ppo, cispo) only the
    zero-advantage fraction is measured.
    """
    vcfg = config.effective_vspo
    if not config.uses_replacement:
        zero = [is_zero_advantage(g.signal(vcfg.zero_signal), vcfg.zero_eps) for g in groups]
        frac = global_sum(acc, [sum(zero), len(groups)])
        return groups, [0] * len(groups), {"vspo/zero_adv_frac": frac[0] / max(frac[1], 1)}

    rank, per_proc = acc.process_index, len(groups)
    everyone = all_groups(acc, groups)
    table.update(step=step, groups=everyone)
    rng = np.random.default_rng([config.seed, step, 0x5650])
    plan = plan_replacement(groups=everyone, table=table, rng=rng, step=step)
    # refill_ids[i] takes the slot of drop[i]; the slot's owner rolls it out.
    owner = {pid: plan.drop[i] // per_proc for i, pid in enumerate(plan.refill_ids)}
    refills = _refills(config=config, acc=acc, plan=plan, table=table, step=step,
                       mine=[pid for pid in plan.refill_ids if owner[pid] == rank],
                       questions=questions, rollout_fn=rollout_fn, reward_fn=reward_fn,
                       rollout_seed=rollout_seed)
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


def _refills(*, config: TrainConfig, acc: Any, plan: ReplacementPlan, table: ValueTable,
             step: int, mine: list[str], questions: dict[str, dict[str, Any]],
             rollout_fn: RolloutFn, reward_fn: RewardFn, rollout_seed: int
             ) -> list[GroupResult]:
    """The refill groups of ``plan.refill_ids``, in that order, the same on every process:
    stored groups (``reuse``), or fresh rollouts of the current policy (``reroll``), each
    process rolling out ``mine`` (the refills of its slots) and all of them gathered."""
    if config.effective_vspo.refill == "reuse":
        return [table.stored_group(pid) for pid in plan.refill_ids]
    if not plan.refill_ids:
        return []
    local: list[GroupResult] = []
    if mine:
        qs = [questions[pid] for pid in mine]
        seed = int(np.random.SeedSequence([rollout_seed, 1]).generate_state(1)[0])
        with torch.no_grad():
            trajs = rollout_fn(qs, config.group_size, seed)
        local = group_trajectories(qs, trajs, score(reward_fn, qs, trajs, step))
        for g in local:
            g.origin = "reroll"
    by_id = {g.prompt_id: g for g in all_groups(acc, local)}
    return [by_id[pid] for pid in plan.refill_ids]
