"""Advantage estimators: hand-worked values, invariants, GAE vectorised == loop."""

from __future__ import annotations

import pytest
import torch

from tirl.core.rl.advantages import (
    ADVANTAGE_ESTIMATORS, ADVANTAGE_LEVELS, broadcast_sequence_advantage, gae_advantage,
    get_advantage_estimator, grpo_advantage, group_stats)

SEQUENCE_ESTIMATORS = sorted(n for n, lvl in ADVANTAGE_LEVELS.items() if lvl == "sequence")


def test_registry_lists_known_names_on_unknown():
    assert {"grpo", "drgrpo", "gae"} <= set(ADVANTAGE_ESTIMATORS)
    assert set(ADVANTAGE_LEVELS) == set(ADVANTAGE_ESTIMATORS)
    with pytest.raises(ValueError, match="known: .*drgrpo.*gae.*grpo"):
        get_advantage_estimator("gpro")


def test_grpo_hand_worked():
    # group 7: [1, 0, 0, 1] -> mu 0.5, population std 0.5 -> +-1
    # group 3: [0.2, 0.2] -> std 0 -> 0 (no NaN)
    rewards = torch.tensor([1.0, 0.0, 0.2, 0.0, 1.0, 0.2])
    index = torch.tensor([7, 7, 3, 7, 7, 3])
    adv = grpo_advantage(rewards=rewards, group_index=index, eps=0.0 + 1e-6)
    expected = torch.tensor([1.0, -1.0, 0.0, -1.0, 1.0, 0.0])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    # Three values: [0, 0, 3] -> mu 1, pop std sqrt(2) -> [-1, -1, 2] / sqrt 2
    adv3 = grpo_advantage(rewards=torch.tensor([0.0, 0.0, 3.0]), group_index=torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(adv3, torch.tensor([-1.0, -1.0, 2.0]) / 2 ** 0.5, atol=1e-5, rtol=0)


def test_drgrpo_has_no_std_division():
    rewards = torch.tensor([0.0, 0.0, 3.0, 5.0, 1.0])
    index = torch.tensor([0, 0, 0, 1, 1])
    adv = get_advantage_estimator("drgrpo")(rewards=rewards, group_index=index)
    torch.testing.assert_close(adv, torch.tensor([-1.0, -1.0, 2.0, 2.0, -2.0]))
    same = grpo_advantage(rewards=rewards, group_index=index, norm_std=False)
    torch.testing.assert_close(adv, same)


@pytest.mark.parametrize("name", SEQUENCE_ESTIMATORS)
def test_sequence_estimators_zero_mean_per_group(name):
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(40, generator=g)
    index = torch.randint(0, 6, (40,), generator=g) * 11  # non-contiguous labels
    adv = get_advantage_estimator(name)(rewards=rewards, group_index=index)
    for label in index.unique():
        assert abs(adv[index == label].sum().item()) < 1e-4


def test_group_stats_population_std_and_shape_check():
    mean, std = group_stats(rewards=torch.tensor([1.0, 3.0]), group_index=torch.tensor([0, 0]))
    torch.testing.assert_close(std, torch.tensor([1.0, 1.0]))  # not sqrt(2) (sample std)
    torch.testing.assert_close(mean, torch.tensor([2.0, 2.0]))
    with pytest.raises(ValueError, match="rewards and group_index"):
        group_stats(rewards=torch.zeros(3), group_index=torch.zeros(2, dtype=torch.long))


def test_broadcast_sequence_advantage():
    out = broadcast_sequence_advantage(advantages=torch.tensor([2.0, -1.0]),
                                       mask=torch.tensor([[0, 1, 1], [1, 0, 1]]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 2.0, 2.0], [-1.0, 0.0, -1.0]]))


def gae_loop(token_rewards, values, mask, gamma, lam):
    """Plain reference: walk each row backwards over trainable tokens only."""
    B, T = values.shape
    adv = torch.zeros(B, T, dtype=torch.float64)
    ret = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        positions = [t for t in range(T) if mask[b, t]]
        next_value, next_adv = 0.0, 0.0
        for t in reversed(positions):
            delta = float(token_rewards[b, t]) + gamma * next_value - float(values[b, t])
            a = delta + gamma * lam * next_adv
            adv[b, t], ret[b, t] = a, a + float(values[b, t])
            next_value, next_adv = float(values[b, t]), a
    return adv, ret


def test_gae_hand_worked_skips_tool_span():
    # tokens: prompt, a0, a1, [tool, tool], a2, pad ; reward 1 on a2
    mask = torch.tensor([[0, 1, 1, 0, 0, 1, 0]])
    values = torch.tensor([[9.0, 0.5, 0.6, 7.0, 7.0, 0.8, 9.0]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    adv, ret = gae_advantage(token_rewards=rewards, values=values, mask=mask, gamma=1.0, lam=0.5)
    # a2: delta = 1 - 0.8 = 0.2 ; A = 0.2
    # a1: next value is a2's 0.8 (tool values 7.0 skipped): delta = 0.8 - 0.6 = 0.2 ; A = 0.2 + 0.5*0.2 = 0.3
    # a0: delta = 0.6 - 0.5 = 0.1 ; A = 0.1 + 0.5*0.3 = 0.25
    expected = torch.tensor([[0.0, 0.25, 0.3, 0.0, 0.0, 0.2, 0.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, (expected + values) * mask)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_vectorised_equals_loop_with_tool_spans(seed, gamma, lam):
    g = torch.Generator().manual_seed(seed)
    B, T = 5, 300 if seed == 0 else 37  # T > chunk exercises the carry between chunks
    mask = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        # prompt, then alternating assistant spans and tool spans, then padding
        t = int(torch.randint(1, 6, (1,), generator=g))
        end = T - int(torch.randint(0, 5, (1,), generator=g))
        trainable = True
        while t < end:
            span = int(torch.randint(1, 12, (1,), generator=g))
            if trainable:
                mask[b, t:min(t + span, end)] = 1
            t += span
            trainable = not trainable
    mask[B - 1] = 0  # a row with no trainable token at all
    values = torch.randn(B, T, generator=g)
    rewards = torch.randn(B, T, generator=g) * mask  # rewards live on trainable tokens
    adv, ret = gae_advantage(token_rewards=rewards, values=values, mask=mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = gae_loop(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv.double(), ref_adv, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ret.double(), ref_ret, atol=1e-4, rtol=1e-4)
    assert torch.all(adv[mask == 0] == 0) and torch.all(ret[mask == 0] == 0)


def test_gae_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\[B,T\]"):
        gae_advantage(token_rewards=torch.zeros(2, 3), values=torch.zeros(2, 4), mask=torch.ones(2, 3))
