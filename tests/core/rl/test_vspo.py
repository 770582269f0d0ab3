"""VSPO (docs/algorithms.md, "VSPO"): task value, value table, replacement, smoothing, clipping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tirl.core.config import ConfigError, build_config
from tirl.core.rl.vspo import (
    VSPOStepResult,
    GroupResult, VSPOConfig, is_zero_advantage, task_value, value_clip_advantages)
from tirl.core.rl.vspo_step import compute_advantages, finalise_refill, plan_replacement
from tirl.core.rl.vspo_table import ValueTable
from tirl.core.types import Trajectory

# 99.9% quantiles of chi-square (df -> value): a correct sampler fails 1 in 1000 seeds, and
# the seed is fixed, so the test is deterministic.
CHI2_999 = {4: 18.467, 9: 27.877, 10: 29.588}


def cfg(**kw) -> VSPOConfig:
    return build_config(VSPOConfig, kw)


def traj(pid: str, i: int, logprob: float = -0.5) -> Trajectory:
    return Trajectory(question_id=pid, sample_idx=i, prompt_len=2, token_ids=[1, 2, 3, 4, 5],
                      mask=[0, 0, 1, 0, 1], logprobs=[0.0, 0.0, logprob, 0.0, logprob + 0.1],
                      messages=[{"role": "user", "content": pid}], turns=[])


def group(pid: str, rewards, outcomes=None, logprob: float = -0.5) -> GroupResult:
    return GroupResult(prompt_id=pid, rewards=list(rewards), outcomes=outcomes,
                       trajectories=[traj(pid, i, logprob) for i in range(len(rewards))])


def chi2(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# --- config and pure maths ------------------------------------------------------------


def test_config_defaults_and_errors():
    c = cfg()
    assert (c.selection, c.refill, c.clip, c.zero_signal) == ("value", "reroll", "on", "reward")
    assert (c.p, c.r_max, c.cap_quantile, c.a_max, c.zero_eps) == (1.0, 1.0, 0.9, 2.0, 1e-6)
    with pytest.raises(ConfigError, match="selection: 'valu' is not one of"):
        cfg(selection="valu")
    with pytest.raises(ConfigError, match="cap_quantile"):
        cfg(cap_quantile=1.5)
    with pytest.raises(ConfigError, match="unknown key"):
        cfg(windw=3)
    # YAML 1.1 reads bare on/off as booleans
    assert cfg(clip=False).clip == "off" and cfg(clip=True).clip_on
    with pytest.raises(ConfigError, match="clip"):
        cfg(clip="maybe")


def test_task_value_hand_worked():
    assert task_value(0.25, math.sqrt(3) / 4, 1.0, 1.0) == pytest.approx(0.75 * math.sqrt(3) / 4)
    assert task_value(0.5, 0.5, 1.0, 2.0) == pytest.approx(0.125)
    assert task_value(1.0, 0.0) == 0.0 and task_value(0.0, 0.0) == 0.0
    assert task_value(1.2, 0.1, r_max=1.0) == 0.0  # never negative


@pytest.mark.parametrize("p,peak", [(1.0, 1 / 4), (2.0, 1 / 3)])
def test_task_value_peak_for_binary_rewards(p, peak):
    # 0/1 rewards with success rate q: mu = q, sigma = sqrt(q (1 - q)); V peaks at p/(2(1+p)).
    q = np.linspace(0.0, 1.0, 100001)
    v = np.array([task_value(x, math.sqrt(x * (1 - x)), 1.0, p) for x in q])
    assert q[v.argmax()] == pytest.approx(peak, abs=1e-4)
    # plain variance filtering (no difficulty factor) prefers q = 1/2: VSPO prefers harder
    assert q[(q * (1 - q)).argmax()] == pytest.approx(0.5, abs=1e-4)


def test_is_zero_advantage():
    assert is_zero_advantage([1.0] * 5) and is_zero_advantage([0.0] * 5)
    assert is_zero_advantage([0.1] * 5)  # float noise in the std stays under eps
    assert not is_zero_advantage([0.0, 0.0, 0.0, 0.0, 1.0])
    assert is_zero_advantage([0.5, 0.5 + 1e-7])  # spread below eps
    assert not is_zero_advantage([0.5, 0.5 + 1e-7], eps=1e-9)


def test_value_clip_advantages_hand_worked():
    adv = torch.tensor([3.0, -1.0, 6.0, -9.0, 1.0])
    counts = torch.tensor([0, 1, 2, 3, 4])
    out = value_clip_advantages(advantages=adv, counts=counts, a_max=2.0)
    # k = 0 untouched (even beyond a_max); 1: -1; 2: 3 -> 2 (clipped); 3: -3 -> -2; 4: 0.25
    torch.testing.assert_close(out, torch.tensor([3.0, -1.0, 2.0, -2.0, 0.25]))


# --- value table ----------------------------------------------------------------------


def test_update_records_stats_and_ema():
    t = ValueTable(cfg(ema=0.25))
    t.update(step=0, groups=[group("a", [0, 0, 0, 1])])  # mu .25, sigma sqrt(3)/4
    e = t.entry("a")
    v1 = 0.75 * math.sqrt(3) / 4
    assert (e["mu"], e["sigma"], e["value"], e["ema"], e["visits"], e["step"]) == pytest.approx(
        (0.25, math.sqrt(3) / 4, v1, v1, 1, 0))
    t.update(step=3, groups=[group("a", [0, 1])])  # V = 0.5 * 0.5
    e = t.entry("a")
    assert e["value"] == pytest.approx(0.25)
    assert e["ema"] == pytest.approx(0.25 * 0.25 + 0.75 * v1)
    assert (e["visits"], e["step"]) == (2, 3)


def test_candidates_need_positive_value_window_and_not_excluded():
    t = ValueTable(cfg(window=2))
    t.update(step=0, groups=[group("old", [0, 1])])
    t.update(step=2, groups=[group("a", [0, 1]), group("solved", [1, 1]), group("b", [0, 0, 1])])
    assert t.candidates(2) == ["old", "a", "b"]
    assert t.candidates(3) == ["a", "b"]  # "old" seen at 0: 3 - 0 > window
    assert t.candidates(2, exclude=["a"]) == ["old", "b"]
    t.update(step=3, groups=[group("a", [1, 1])])  # the latest visit decides: V = 0 now
    assert t.candidates(3) == ["b"]


@pytest.mark.parametrize("cap_quantile", [1.0, 0.9])
def test_value_selection_frequency_follows_smoothed_value(cap_quantile):
    t = ValueTable(cfg(selection="value", cap_quantile=cap_quantile, ema=1.0))
    # 0/1 groups of 5 with 1..4 successes, plus 1 of 4 (the peak, q = 1/4): distinct values
    groups = [group(f"p{k}", [1] * k + [0] * (5 - k)) for k in range(1, 5)]
    groups.append(group("p5", [1, 0, 0, 0]))
    t.update(step=0, groups=groups)
    ids = t.candidates(0)
    ema = np.array([t.entry(i)["ema"] for i in ids])
    weights = np.minimum(ema, np.quantile(ema, cap_quantile))
    np.testing.assert_allclose(t.smoothed_values(ids), weights)
    if cap_quantile < 1.0:
        assert weights.max() < ema.max()  # the cap binds on the top prompt
    rng = np.random.default_rng(1234)
    n = 20000
    draws = [t.select(n=1, rng=rng, step=0)[0] for _ in range(n)]
    counts = np.array([draws.count(i) for i in ids], dtype=float)
    probs = weights / weights.sum()
    assert chi2(counts, probs) < CHI2_999[len(ids) - 1]
    # and it is not uniform (the test can fail)
    assert chi2(counts, np.full(len(ids), 1 / len(ids))) > CHI2_999[len(ids) - 1]


def test_random_selection_is_uniform():
    t = ValueTable(cfg(selection="random"))
    t.update(step=0, groups=[group(f"p{k}", [1] * k + [0] * (10 - k)) for k in range(1, 10)]
             + [group("huge", [0] * 9 + [1])])
    ids = t.candidates(0)
    assert len(ids) == 10
    rng = np.random.default_rng(7)
    draws = [t.select(n=1, rng=rng, step=0)[0] for _ in range(20000)]
    counts = np.array([draws.count(i) for i in ids], dtype=float)
    assert chi2(counts, np.full(10, 0.1)) < CHI2_999[9]


def test_cap_prevents_one_prompt_taking_the_pool():
    def share_of_top(cap_quantile):
        t = ValueTable(cfg(cap_quantile=cap_quantile, ema=1.0, r_max=100.0))
        t.update(step=0, groups=[group(f"s{i}", [0, 0.02]) for i in range(10)]
                 + [group("top", [0, 2])])  # V_top / V_small = (99 * 1) / (99.99 * .01) ~ 99
        rng = np.random.default_rng(0)
        draws = [t.select(n=1, rng=rng, step=0)[0] for _ in range(4000)]
        return draws.count("top") / len(draws)

    assert share_of_top(1.0) > 0.85  # uncapped: the top prompt takes the pool
    # capped at the 90th percentile of 11 values (= a small one): every prompt ~ 1/11
    assert abs(share_of_top(0.9) - 1 / 11) < 0.03


def test_select_draws_distinct_and_at_most_pool():
    t = ValueTable(cfg())
    t.update(step=0, groups=[group(f"p{i}", [0, 1]) for i in range(3)])
    rng = np.random.default_rng(0)
    picked = t.select(n=5, rng=rng, step=0)
    assert sorted(picked) == ["p0", "p1", "p2"]
    assert t.select(n=2, rng=rng, step=0, exclude=["p0", "p1", "p2"]) == []
    assert ValueTable(cfg(selection="none")).select(n=3, rng=rng, step=0) == []


# --- one replacement step ---------------------------------------------------------------


def _seeded_table(config, step=0, n=6):
    t = ValueTable(config)
    t.update(step=step, groups=[group(f"pool{i}", [0, 1, 0, 0, 0], logprob=-2.0 - i) for i in range(n)])
    return t


def _batch():
    return [group("q0", [1, 0, 0, 1, 0]), group("q1", [1, 1, 1, 1, 1]),
            group("q2", [0.2, 0.5, 0.2, 0.2, 0.2]), group("q3", [0, 0, 0, 0, 0]),
            group("q4", [0, 1, 1, 1, 1])]


@pytest.mark.parametrize("selection", ["value", "random"])
def test_replaces_exactly_the_zero_advantage_groups(selection):
    config = cfg(selection=selection)
    table = _seeded_table(config)
    batch = _batch()
    table.update(step=1, groups=batch)
    plan = plan_replacement(groups=batch, table=table, rng=np.random.default_rng(0), step=1)
    assert plan.zero_adv == (False, True, False, True, False)
    assert plan.drop == (1, 3)
    assert len(plan.refill_ids) == 2 and len(set(plan.refill_ids)) == 2
    assert all(pid.startswith("pool") for pid in plan.refill_ids)  # batch prompts excluded
    refills = [group(pid, [0, 1, 1, 0, 0], logprob=-3.0) for pid in plan.refill_ids]
    res = finalise_refill(groups=batch, plan=plan, refills=refills, table=table, step=1)
    assert [g.prompt_id for g in res.groups] == ["q0", "q2", "q4", *plan.refill_ids]
    assert res.select_counts == [0, 0, 0, 1, 1]
    assert [g.origin for g in res.groups] == ["batch"] * 3 + ["reroll"] * 2
    # refilled groups carry their own trajectories (masks, log-probs)
    assert [t.logprobs[2] for t in res.trajectories()[-10:]] == [-3.0] * 10
    assert len(res.rewards()) == len(res.group_index()) == len(res.sample_counts()) == 25
    m = res.metrics
    assert m["vspo/zero_adv_frac"] == pytest.approx(0.4)
    assert (m["vspo/replaced"], m["vspo/refill_dropped"], m["vspo/dropped"]) == (2, 0, 2)
    assert m["vspo/table_size"] == 11 and m["vspo/selected_unique"] == 2
    # a reroll is a visit: the table saw the refills at step 1
    assert all(table.entry(pid)["visits"] == 2 for pid in plan.refill_ids)


def test_selection_none_is_plain_grpo():
    config = cfg(selection="none")
    table = _seeded_table(config)
    batch = _batch()
    table.update(step=1, groups=batch)
    plan = plan_replacement(groups=batch, table=table, rng=np.random.default_rng(0), step=1)
    assert plan.drop == () and plan.refill_ids == ()
    res = finalise_refill(groups=batch, plan=plan, refills=[], table=table, step=1)
    assert [g.prompt_id for g in res.groups] == [g.prompt_id for g in batch]
    assert res.metrics["vspo/replaced"] == 0 and res.metrics["vspo/zero_adv_frac"] == pytest.approx(0.4)
    adv = compute_advantages(result=res, config=config)
    ref = compute_advantages(result=res, config=cfg(selection="none", clip="off"))
    torch.testing.assert_close(adv, ref)  # nothing selected: clip changes nothing


def test_refill_zero_again_is_dropped_and_counted():
    config = cfg()
    table = _seeded_table(config, n=3)
    batch = _batch()
    table.update(step=1, groups=batch)
    plan = plan_replacement(groups=batch, table=table, rng=np.random.default_rng(0), step=1)
    refills = [group(plan.refill_ids[0], [1, 1, 1, 1, 1]), group(plan.refill_ids[1], [1, 0, 0, 0, 0])]
    res = finalise_refill(groups=batch, plan=plan, refills=refills, table=table, step=1)
    assert [g.prompt_id for g in res.groups] == ["q0", "q2", "q4", plan.refill_ids[1]]
    assert res.metrics["vspo/refill_dropped"] == 1 and res.metrics["vspo/replaced"] == 1
    # the solved refill now has V = 0: no longer a candidate
    assert plan.refill_ids[0] not in table.candidates(1)


def test_shortfall_when_pool_is_small_and_empty_batch_possible():
    config = cfg()
    table = ValueTable(config)
    batch = [group("z0", [0, 0]), group("z1", [1, 1])]
    table.update(step=0, groups=batch)
    plan = plan_replacement(groups=batch, table=table, rng=np.random.default_rng(0), step=0)
    assert plan.drop == (0, 1) and plan.refill_ids == ()
    res = finalise_refill(groups=batch, plan=plan, refills=[], table=table, step=0)
    assert res.groups == [] and res.metrics["vspo/shortfall"] == 2
    assert compute_advantages(result=res, config=config).numel() == 0


def test_mismatched_refills_raise():
    config = cfg()
    table = _seeded_table(config)
    batch = _batch()
    table.update(step=1, groups=batch)
    plan = plan_replacement(groups=batch, table=table, rng=np.random.default_rng(0), step=1)
    with pytest.raises(ValueError, match="expected 2 refills"):
        finalise_refill(groups=batch, plan=plan, refills=[], table=table, step=1)
    with pytest.raises(ValueError, match="carries prompt id"):
        finalise_refill(groups=batch, plan=plan, refills=[group("x", [0, 1])] * 2, table=table, step=1)


def test_plan_is_pure():
    config = cfg()
    table = _seeded_table(config)
    batch = _batch()
    table.update(step=1, groups=batch)
    before = json.dumps(table.state_dict(), sort_keys=True)
    plan_replacement(groups=batch, table=table, rng=np.random.default_rng(0), step=1)
    assert json.dumps(table.state_dict(), sort_keys=True) == before


def test_reuse_replays_stored_group_with_stored_logprobs():
    config = cfg(refill="reuse")
    table = ValueTable(config)
    table.update(step=0, groups=[group("old", [0, 1, 0], logprob=-4.0), group("flat", [1, 1, 1])])
    assert table.candidates(1) == ["old"]  # "flat" has no stored group (and V = 0)
    batch = [group("q", [0, 0, 0])]
    table.update(step=1, groups=batch)
    plan = plan_replacement(groups=batch, table=table, rng=np.random.default_rng(0), step=1)
    assert plan.refill_ids == ("old",)
    refills = [table.stored_group("old")]
    res = finalise_refill(groups=batch, plan=plan, refills=refills, table=table, step=1)
    (g,) = res.groups
    assert g.origin == "reuse" and g.rewards == [0, 1, 0]
    assert [t.logprobs[2] for t in g.trajectories] == [-4.0] * 3
    assert table.entry("old")["visits"] == 1  # a replay is not a new visit
    with pytest.raises(KeyError, match="flat"):
        table.stored_group("flat")


def test_reuse_stored_groups_expire_with_the_window():
    table = ValueTable(cfg(refill="reuse", window=1))
    table.update(step=0, groups=[group("old", [0, 1])])
    table.update(step=2, groups=[group("new", [0, 1])])
    assert table.entry("old")["stored"] is None and table.candidates(2) == ["new"]


# --- clipping ---------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["on", "off"])
def test_repeated_selection_scales_by_one_over_k_and_clips(clip):
    config = cfg(clip=clip, window=5)
    table = ValueTable(config)
    table.update(step=0, groups=[group("hot", [0, 0, 0, 0, 1])])
    res = None
    for step in (1, 2, 3):
        batch = [group(f"z{step}", [0, 0, 0, 0, 0]), group(f"n{step}", [0, 0, 0, 0, 1])]
        table.update(step=step, groups=batch)
        plan = plan_replacement(groups=batch, table=table, rng=np.random.default_rng(step), step=step)
        assert plan.refill_ids[0] in {"hot", "n1", "n2"}
        plan = type(plan)(zero_adv=plan.zero_adv, drop=plan.drop, refill_ids=("hot",),
                          num_candidates=plan.num_candidates)  # force the hot prompt
        res = finalise_refill(groups=batch, plan=plan, refills=[group("hot", [0, 0, 0, 0, 1])],
                              table=table, step=step)
    assert res.select_counts == [0, 3]  # "hot" selected at steps 1, 2, 3
    adv = compute_advantages(result=res, config=config)
    # GRPO of [0,0,0,0,1]: std 0.4, A = [-0.5]*4 + [2.0] for both groups
    grpo = torch.tensor([-0.5] * 4 + [2.0])
    torch.testing.assert_close(adv[:5], grpo, atol=1e-4, rtol=0)  # batch group untouched
    if clip == "on":
        torch.testing.assert_close(adv[5:], grpo / 3, atol=1e-4, rtol=0)
    else:
        torch.testing.assert_close(adv[5:], grpo, atol=1e-4, rtol=0)
    # k falls as selections leave the window
    assert [table.selection_count("hot", s) for s in (6, 7, 8, 9)] == [3, 2, 1, 0]


def test_clip_bounds_refilled_advantages():
    config = cfg(a_max=1.0)
    table = ValueTable(config)
    table.update(step=0, groups=[group("hot", [0, 0, 0, 0, 1])])
    batch = [group("z", [1, 1, 1, 1, 1])]
    table.update(step=1, groups=batch)
    plan = plan_replacement(groups=batch, table=table, rng=np.random.default_rng(0), step=1)
    res = finalise_refill(groups=batch, plan=plan, refills=[group("hot", [0, 0, 0, 0, 1])],
                          table=table, step=1)
    adv = compute_advantages(result=res, config=config)  # k = 1: scale 1, 2.0 clipped to 1.0
    torch.testing.assert_close(adv, torch.tensor([-0.5] * 4 + [1.0]), atol=1e-4, rtol=0)
    dr = compute_advantages(result=res, config=config, estimator="drgrpo")  # Dr.GRPO: [-0.2]*4 + [0.8]
    torch.testing.assert_close(dr, torch.tensor([-0.2] * 4 + [0.8]), atol=1e-6, rtol=0)


# --- zero_signal ------------------------------------------------------------------------


def test_zero_signal_outcome_vs_reward():
    # PRS rewards differ (format), the correctness part does not
    g = group("q", [0.1, 0.2, 0.1, 0.28], outcomes=[0.0, 0.0, 0.0, 0.0])
    for signal, zero in (("reward", False), ("outcome", True)):
        config = cfg(zero_signal=signal)
        table = ValueTable(config)
        table.update(step=0, groups=[g])
        plan = plan_replacement(groups=[g], table=table, rng=np.random.default_rng(0), step=0)
        assert plan.zero_adv == (zero,)
        assert (table.entry("q")["value"] == 0.0) == zero  # V uses the same signal
    with pytest.raises(ValueError, match="'q'.*outcomes"):
        ValueTable(cfg(zero_signal="outcome")).update(step=0, groups=[group("q", [0, 1])])


# --- checkpointing ----------------------------------------------------------------------


@pytest.mark.parametrize("refill", ["reroll", "reuse"])
def test_state_dict_round_trip(refill):
    config = cfg(refill=refill)
    table = _seeded_table(config)
    table.update(step=1, groups=_batch())
    table.record_selection(["pool1"], 1)
    state = json.loads(json.dumps(table.state_dict()))  # JSON-serialisable
    clone = ValueTable(config)
    clone.load_state_dict(state)
    assert clone.state_dict() == table.state_dict()
    assert clone.selection_count("pool1", 1) == 1
    a = table.select(n=3, rng=np.random.default_rng(5), step=1, exclude=["q0"])
    b = clone.select(n=3, rng=np.random.default_rng(5), step=1, exclude=["q0"])
    assert a == b
    if refill == "reuse":
        assert clone.stored_group("pool2").trajectories == table.stored_group("pool2").trajectories
    with pytest.raises(ValueError, match="version"):
        clone.load_state_dict({"entries": {}})
    with pytest.raises(ValueError, match="'pool0' lacks"):
        clone.load_state_dict({"version": 1, "entries": {"pool0": {"value": 1.0}}})


# --- the ablation grid: selection x clip, several steps ------------------------------------


@pytest.mark.parametrize("selection", ["none", "random", "value"])
@pytest.mark.parametrize("clip", ["off", "on"])
def test_ablation_grid_modes_do_what_they_say(selection, clip):
    config = cfg(selection=selection, clip=clip, a_max=1.5)
    table = ValueTable(config)
    rng = np.random.default_rng(0)
    sim = np.random.default_rng(1)
    success = {f"p{i}": (i % 5) / 4 for i in range(40)}  # 0, .25, .5, .75, 1
    prompts = sorted(success)
    for step in range(6):
        ids = prompts[(step * 8) % 40:(step * 8) % 40 + 8]

        def rollout(pid):
            return group(pid, (sim.random(5) < success[pid]).astype(float).tolist())

        batch = [rollout(pid) for pid in ids]
        table.update(step=step, groups=batch)
        plan = plan_replacement(groups=batch, table=table, rng=rng, step=step)
        refills = [rollout(pid) for pid in plan.refill_ids]
        res = finalise_refill(groups=batch, plan=plan, refills=refills, table=table, step=step)
        n_zero = sum(plan.zero_adv)
        if selection == "none":
            assert len(res.groups) == len(batch) and res.metrics["vspo/replaced"] == 0
        else:
            assert plan.drop == tuple(i for i, z in enumerate(plan.zero_adv) if z)
            assert len(res.groups) == len(batch) - n_zero + res.metrics["vspo/replaced"]
            assert all(not is_zero_advantage(g.rewards) for g in res.groups)
            assert not set(plan.refill_ids) & set(ids)
            if step > 0 and n_zero:
                assert plan.refill_ids  # the pool is non-empty after the first step
        adv = compute_advantages(result=res, config=config)
        counts = torch.tensor(res.sample_counts())
        if clip == "on" and bool((counts > 0).any()):
            assert adv[counts > 0].abs().max() <= 1.5 + 1e-6
        unclipped = compute_advantages(result=res, config=cfg(selection=selection, clip="off"))
        torch.testing.assert_close(adv[counts == 0], unclipped[counts == 0])
        if clip == "off":
            torch.testing.assert_close(adv, unclipped)


def test_compute_advantages_refuses_a_token_level_estimator():
    res = VSPOStepResult(groups=[], select_counts=[], metrics={})
    with pytest.raises(ValueError, match="gae"):
        compute_advantages(result=res, config=VSPOConfig(), estimator="gae")
