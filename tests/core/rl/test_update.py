"""The update step: behaviour log-probs, micro-batch sums, GAE targets."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from toy_rl import run_toy, toy_config  # noqa: E402

from tirl.core.rl.batch import Batch  # noqa: E402
from tirl.core.rl.update import _last_token_rewards  # noqa: E402


def test_first_minibatch_has_ratio_one():
    """Old log-probs are recomputed under the pre-update policy, so one epoch of one
    minibatch sees ratio 1 exactly and clips nothing."""
    _, hist = run_toy(toy_config(steps=2, ppo_epochs=1, minibatch_size=None, grad_accum=1))
    for h in hist:
        assert h["actor/clip_frac"] == 0.0
        assert h["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("algorithm", ["vspo", "ppo"])
def test_micro_token_budget_changes_memory_not_the_update(algorithm):
    """Splitting each forward into one-row micro-batches (the toy rows are 8 tokens) gives
    the same training run: losses are sums over the global trainable-token count."""
    whole, hist_whole = run_toy(toy_config(algorithm=algorithm, steps=3, micro_tokens=None))
    split, hist_split = run_toy(toy_config(algorithm=algorithm, steps=3, micro_tokens=8))
    for a, b in zip(hist_whole, hist_split, strict=True):
        for key in ("reward/mean", "loss/policy", "loss/kl", "actor/clip_frac", "actor/grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for (name, p), q in zip(whole.named_parameters(), split.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name


def test_ppo_terminal_reward_sits_on_the_last_trainable_token():
    """GAE input: the sequence reward at the last mask-1 position (after a tool response,
    padding or trailing prompt tokens), nowhere else."""
    mask = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
                        dtype=torch.float32)
    batch = Batch(input_ids=torch.zeros(3, 7, dtype=torch.long),
                  attention_mask=torch.ones(3, 7, dtype=torch.long), loss_mask=mask,
                  sample_logprobs=torch.zeros(3, 6), advantages=torch.zeros(3, 6),
                  reused=torch.zeros(3, dtype=torch.bool))
    out = _last_token_rewards(batch, torch.tensor([0.7, -1.0, 5.0]))
    expected = torch.zeros(3, 6)
    expected[0, 4], expected[1, 1] = 0.7, -1.0
    assert torch.equal(out, expected)
