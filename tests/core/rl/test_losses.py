"""Policy/value losses and aggregation: hand-worked values, clipping, masked gradients."""

from __future__ import annotations

import math

import pytest
import torch

from tirl.core.rl.losses import (
    LOSS_AGGREGATIONS, POLICY_LOSSES, VALUE_LOSSES, aggregate_loss, cispo_loss,
    entropy_from_logits, get_aggregation, get_policy_loss, get_value_loss, ppo_clip_loss)


MASK = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 1]])
ADV = torch.tensor([[5.0, 1.0, -2.0, 5.0], [0.5, 9.0, 0.5, -1.0]])


def _batch(seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(2, 4, generator=g) * 3
    new = (old + shift).clone().requires_grad_(True)
    return new, old


def test_unknown_names_list_known():
    for getter, table in ((get_policy_loss, POLICY_LOSSES), (get_value_loss, VALUE_LOSSES),
                          (get_aggregation, LOSS_AGGREGATIONS)):
        with pytest.raises(ValueError, match="known"):
            getter("nope")
        assert table
    assert {"ppo_clip", "cispo"} <= set(POLICY_LOSSES)
    assert {"token_mean", "seq_mean_token_mean"} <= set(LOSS_AGGREGATIONS)


def test_aggregations_hand_worked():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 6.0, 8.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1]])
    # token mean: (1+2+3+4+6+8)/6 = 4
    assert aggregate_loss(values=values, mask=mask).item() == pytest.approx(4.0)
    # seq mean of token means: (2 + 6)/2 = 4; with another mask: rows (1+2)/2=1.5, 4 -> 2.75
    m2 = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    assert aggregate_loss(values=values, mask=m2, mode="seq_mean_token_mean").item() == pytest.approx(2.75)
    assert aggregate_loss(values=values, mask=m2, mode="token_mean").item() == pytest.approx(7 / 3)
    assert aggregate_loss(values=values, mask=m2, mode="seq_mean_token_sum").item() == pytest.approx(3.5)
    # global denominator: two micro-batches sum to the whole-batch token mean
    whole = aggregate_loss(values=values, mask=mask)
    parts = sum(aggregate_loss(values=values[i:i + 1], mask=mask[i:i + 1], num_tokens=6) for i in range(2))
    assert parts.item() == pytest.approx(whole.item())


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_ratio_one_no_clipping_loss_is_minus_mean_advantage(name):
    new, old = _batch()
    loss, stats = get_policy_loss(name)(logprobs=new, old_logprobs=old.clone(), advantages=ADV, mask=MASK)
    if name == "cispo":  # loss = -A * logp: value differs, gradient is -A (checked below)
        expected = -(ADV * old * MASK).sum() / MASK.sum()
    else:
        expected = -(ADV * MASK).sum() / MASK.sum()  # -(1 - 2 + 0.5 + 0.5 - 1)/5 = 0.2
        assert expected.item() == pytest.approx(0.2)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert stats["clip_frac"] == 0.0
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-7)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert all(isinstance(v, float) for v in stats.values())
    loss.backward()
    # At ratio 1 both losses have gradient -A / n_tokens on trainable tokens
    torch.testing.assert_close(new.grad, -(ADV * MASK) / MASK.sum())


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
@pytest.mark.parametrize("aggregation", sorted(LOSS_AGGREGATIONS))
def test_masked_tokens_get_exactly_zero_gradient(name, aggregation):
    new, old = _batch(seed=1, shift=0.05)  # inside the clip range: every trainable token has a gradient
    # Garbage where mask is 0 must not leak (inf/NaN-safe masking).
    with torch.no_grad():
        new[MASK == 0] = -1e9
    old = old.clone()
    old[MASK == 0] = float("nan")
    loss, _ = get_policy_loss(name)(logprobs=new, old_logprobs=old, advantages=ADV * 3, mask=MASK,
                                    aggregation=aggregation)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(new.grad[MASK == 0] == 0)
    assert torch.all(new.grad[MASK == 1] != 0)


def test_ppo_clip_hand_worked_and_asymmetric():
    mask = torch.ones(1, 4)
    old = torch.zeros(1, 4)
    ratios = torch.tensor([[1.1, 1.5, 1.5, 0.5]])
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0]])
    new = ratios.log().requires_grad_(True)
    # tok0 inside: -1.1; tok1 A>0 ratio 1.5 clipped at 1.2: -1.2 (no grad);
    # tok2 A=-2 ratio 1.5: max(3.0, 2.4) = 3.0 (grad 3.0); tok3 A<0 ratio 0.5: max(0.5, 0.8) = 0.8 (no grad)
    loss, stats = ppo_clip_loss(logprobs=new, old_logprobs=old, advantages=adv, mask=mask, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.1 - 1.2 + 3.0 + 0.8) / 4)
    assert stats["clip_frac"] == pytest.approx(0.5)
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([[-1.1, 0.0, 3.0, 0.0]]) / 4)
    # Clip-higher: eps_high 0.6 lets tok1 through (1.5 < 1.6); the low side stays at 0.8.
    new2 = ratios.log().requires_grad_(True)
    loss2, stats2 = ppo_clip_loss(logprobs=new2, old_logprobs=old, advantages=adv, mask=mask,
                                  clip_eps=0.2, clip_eps_high=0.6)
    assert loss2.item() == pytest.approx((-1.1 - 1.5 + 3.0 + 0.8) / 4)
    assert stats2["clip_frac"] == pytest.approx(0.25)
    loss2.backward()
    torch.testing.assert_close(new2.grad, torch.tensor([[-1.1, -1.5, 3.0, 0.0]]) / 4)


def test_cispo_gradient_is_detached_weight_times_advantage():
    mask = torch.tensor([[1, 1, 1, 0]])
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.0]])
    ratios = torch.tensor([[1.5, 0.5, 1.1, 3.0]])
    new = (old + ratios.log()).requires_grad_(True)
    adv = torch.tensor([[1.0, -2.0, 3.0, 7.0]])
    loss, stats = cispo_loss(logprobs=new, old_logprobs=old, advantages=adv, mask=mask,
                             clip_eps=0.2)
    w = torch.tensor([[1.2, 0.5, 1.1, 0.0]])  # upper clip only; masked token contributes 0
    loss.backward()
    # d/dlogp of -sg(w) A logp = -w A (PPO would give 0 on the clipped tok0)
    torch.testing.assert_close(new.grad, -(w * adv * mask) / 3)
    expected = -(w * adv * new.detach() * mask).sum() / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["clip_frac"] == pytest.approx(1 / 3)
    # A lower bound when asked for
    new2 = (old + ratios.log()).requires_grad_(True)
    loss2, _ = cispo_loss(logprobs=new2, old_logprobs=old, advantages=adv, mask=mask,
                          clip_eps=0.2, eps_low_is=0.2)
    loss2.backward()
    torch.testing.assert_close(new2.grad, -(torch.tensor([[1.2, 0.8, 1.1, 0.0]]) * adv * mask) / 3)


@pytest.mark.parametrize("name", sorted(VALUE_LOSSES))
def test_value_losses_hand_worked_and_masked(name):
    mask = torch.tensor([[1, 1, 0]])
    old = torch.tensor([[0.0, 0.0, 0.0]])
    ret = torch.tensor([[1.0, 1.0, 1.0]])
    values = torch.tensor([[0.5, -0.5, float("inf")]], requires_grad=True)
    loss, stats = get_value_loss(name)(values=values, old_values=old, returns=ret, mask=mask, clip_eps=0.2)
    if name == "clipped":
        # tok0: max((0.5-1)^2, (0.2-1)^2)=0.64 ; tok1: max(2.25, (-0.2-1)^2=1.44) = 2.25
        assert loss.item() == pytest.approx(0.5 * (0.64 + 2.25) / 2)
        assert stats["vf_clip_frac"] == pytest.approx(0.5)
        expected_grad = torch.tensor([[0.0, 0.5 * 2 * (-1.5) / 2, 0.0]])
    else:
        assert loss.item() == pytest.approx(0.5 * (0.25 + 2.25) / 2)
        expected_grad = torch.tensor([[0.5 * 2 * (-0.5) / 2, 0.5 * 2 * (-1.5) / 2, 0.0]])
    loss.backward()
    torch.testing.assert_close(values.grad, expected_grad)


def test_entropy_from_logits_is_the_masked_mean_entropy():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]]])
    assert entropy_from_logits(logits=logits, mask=torch.tensor([[1, 0]])).item() == pytest.approx(math.log(4))


def test_entropy_masked_tokens_zero_gradient():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    entropy_from_logits(logits=logits, mask=mask).backward()
    assert torch.all(logits.grad[mask == 0] == 0)
    assert torch.any(logits.grad[mask == 1] != 0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="share one shape"):
        ppo_clip_loss(logprobs=torch.zeros(2, 3), old_logprobs=torch.zeros(2, 3),
                      advantages=torch.zeros(2, 4), mask=torch.ones(2, 3))
