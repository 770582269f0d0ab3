"""KL estimators: hand-worked values, k3 >= 0, masked tokens get zero gradient."""

from __future__ import annotations

import math

import pytest
import torch

from tirl.core.rl.kl import KL_ESTIMATORS, get_kl_estimator, kl_k1, kl_k3


def test_registry():
    assert {"k1", "k3"} <= set(KL_ESTIMATORS)
    with pytest.raises(ValueError, match="known: .*k1.*k3"):
        get_kl_estimator("k4")


def test_hand_worked_values():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(kl_k1(logprobs=logp, ref_logprobs=ref, mask=mask),
                               torch.tensor([[0.5, -1.0, 0.0]]))
    # d = ref - logp = [-0.5, 1.0]: exp(d) - d - 1
    expected = torch.tensor([[math.exp(-0.5) + 0.5 - 1, math.e - 2, 0.0]])
    torch.testing.assert_close(kl_k3(logprobs=logp, ref_logprobs=ref, mask=mask), expected)
    torch.testing.assert_close(get_kl_estimator("k2")(logprobs=logp, ref_logprobs=ref, mask=mask),
                               torch.tensor([[0.125, 0.5, 0.0]]))


def test_k3_nonnegative_and_zero_when_equal():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(8, 50, generator=g) * 5
    ref = -torch.rand(8, 50, generator=g) * 5
    mask = torch.ones(8, 50)
    assert torch.all(kl_k3(logprobs=logp, ref_logprobs=ref, mask=mask) >= 0)
    assert torch.all(kl_k3(logprobs=logp, ref_logprobs=logp.clone(), mask=mask) == 0)
    # Its mean approaches the true KL(pi || ref) for samples from pi: two-point check
    # pi = (0.7, 0.3), ref = (0.5, 0.5): KL = 0.7 ln 1.4 + 0.3 ln 0.6
    p = torch.tensor([0.7, 0.3])
    q = torch.tensor([0.5, 0.5])
    per_outcome = kl_k3(logprobs=p.log()[None], ref_logprobs=q.log()[None], mask=torch.ones(1, 2))[0]
    assert (p * per_outcome).sum().item() == pytest.approx(0.7 * math.log(1.4) + 0.3 * math.log(0.6))


@pytest.mark.parametrize("name", sorted(KL_ESTIMATORS))
def test_masked_tokens_zero_value_and_gradient(name):
    mask = torch.tensor([[1, 0, 1, 0]])
    logp = torch.tensor([[-1.0, -1e9, -0.2, float("nan")]], requires_grad=True)
    ref = torch.tensor([[-0.7, 3.0, -0.9, -1.0]])
    kl = get_kl_estimator(name)(logprobs=logp, ref_logprobs=ref, mask=mask)
    assert torch.all(kl[mask == 0] == 0)
    kl.sum().backward()
    assert torch.all(logp.grad[mask == 0] == 0)
    assert torch.all(logp.grad[mask == 1] != 0)
    assert torch.all(torch.isfinite(logp.grad))


@pytest.mark.parametrize("name", sorted(KL_ESTIMATORS))
def test_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match="share one shape"):
        get_kl_estimator(name)(logprobs=torch.zeros(2, 3), ref_logprobs=torch.zeros(2, 3), mask=torch.ones(3, 2))
