import math

import pytest
import torch

from tirl.core.modeling.logprobs import logprobs_and_entropy, token_entropy, token_logprobs

LOGITS = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]]])


def test_token_logprobs_pick_the_target_of_the_log_softmax():
    lp = token_logprobs(logits=LOGITS, token_ids=torch.tensor([[2, 0]]))
    assert lp[0, 0].item() == pytest.approx(-math.log(4))
    torch.testing.assert_close(lp[0], torch.log_softmax(LOGITS[0], -1)[[0, 1], [2, 0]])


def test_token_entropy_is_log_v_when_uniform_and_near_zero_when_peaked():
    ent = token_entropy(logits=LOGITS)
    assert ent[0, 0].item() == pytest.approx(math.log(4))
    assert 0 < ent[0, 1].item() < 0.01


def test_half_precision_logits_are_computed_in_float32():
    lp = token_logprobs(logits=LOGITS.bfloat16(), token_ids=torch.tensor([[2, 0]]))
    assert lp.dtype == torch.float32


@pytest.mark.parametrize("entropy_grad", [True, False])
def test_logprobs_and_entropy_gives_a_graph_to_the_entropy_only_when_asked(entropy_grad):
    logits = LOGITS.clone().requires_grad_()
    lp, ent = logprobs_and_entropy(logits=logits, token_ids=torch.tensor([[2, 0]]),
                                   with_entropy=True, entropy_grad=entropy_grad)
    assert lp.requires_grad
    assert ent.requires_grad is entropy_grad
    torch.testing.assert_close(ent, token_entropy(logits=LOGITS))


def test_logprobs_and_entropy_without_entropy_returns_none():
    lp, ent = logprobs_and_entropy(logits=LOGITS, token_ids=torch.tensor([[2, 0]]),
                                   with_entropy=False, entropy_grad=True)
    assert ent is None
    torch.testing.assert_close(lp, token_logprobs(logits=LOGITS, token_ids=torch.tensor([[2, 0]])))
