"""PPO critic: a value head on a copy of the policy's transformer body."""

from __future__ import annotations

import torch

from toy_rl import make_policy

from tirl.core.rl.critic import make_critic


def test_values_have_one_per_token_and_start_at_zero():
    policy = make_policy()
    critic = make_critic(policy)
    ids = torch.tensor([[1, 4, 3, 3, 0], [1, 5, 6, 0, 0]])
    attn = (ids != 0).long()
    values = critic(input_ids=ids, attention_mask=attn)
    assert values.shape == (2, 5) and values.dtype == torch.float32
    assert torch.equal(values, torch.zeros(2, 5))  # zero-initialised head: neutral baseline


def test_critic_is_a_copy_and_trains_without_moving_the_policy():
    policy = make_policy()
    before = [p.detach().clone() for p in policy.parameters()]
    critic = make_critic(policy)
    assert not ({id(p) for p in critic.parameters()} & {id(p) for p in policy.parameters()})
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    ids = torch.tensor([[1, 4, 3, 3]])
    losses = []
    for _ in range(20):
        loss = (critic(input_ids=ids, attention_mask=torch.ones_like(ids)) - 1.0).pow(2).mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the head and (after the head moved off zero) the backbone both learned
    assert critic.head.weight.abs().sum() > 0
    body_now = dict(critic.backbone.named_parameters())
    body_then = dict(policy.base_model.named_parameters())
    assert any(not torch.equal(body_now[k], body_then[k]) for k in body_now)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert losses[-1] < 0.1 * losses[0]
