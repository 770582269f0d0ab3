"""RL log-probabilities with the shared prefix run once equal those of the full forward."""

from __future__ import annotations

import copy

import pytest
import torch

from tirl.core.modeling import prefix as P


def _batch(vocab: int, p: int, rows: int = 3, width: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(0, vocab, (1, p), generator=g)
    ids = torch.cat([head.expand(rows, p), torch.randint(0, vocab, (rows, width - p), generator=g)], 1)
    ids[1:, p] = (ids[0, p] + 1) % vocab  # rows differ right after the prefix
    lens = torch.tensor([width, width - 7, width - 3])[:rows]
    mask = (torch.arange(width)[None] < lens[:, None]).long()
    return ids, mask


def _picked(logits, ids):
    return torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]


@pytest.mark.parametrize("p", [16, 25])
def test_shared_prefix_logits_and_gradients_equal_the_full_forward(tiny_model, p):
    ids, mask = _batch(tiny_model.config.vocab_size, p)
    full_model, shared_model = copy.deepcopy(tiny_model).train(), copy.deepcopy(tiny_model).train()
    full = full_model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    logits, start = P.next_token_logits(shared_model, ids, mask)
    assert start == p - 1 and logits.shape[1] == ids.shape[1] - 1 - start
    real = mask[:, start + 1:].bool()  # targets that are real tokens
    assert torch.allclose(full[:, start:][real], logits[real], atol=1e-5)
    # the gradient of a loss over the targets after the prefix (where an RL loss lives)
    (_picked(full[:, start:], ids[:, start + 1:]) * real).sum().backward()
    (_picked(logits, ids[:, start + 1:]) * real).sum().backward()
    for a, b in zip(full_model.parameters(), shared_model.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_no_shared_prefix_or_one_row_is_the_plain_forward(tiny_model):
    ids, mask = _batch(tiny_model.config.vocab_size, 0)
    ids[1, 0] = (ids[0, 0] + 1) % tiny_model.config.vocab_size
    full = tiny_model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    for batch in ((ids, mask), (ids[:1], mask[:1])):
        logits, start = P.next_token_logits(tiny_model, *batch)
        assert start == 0 and torch.equal(logits, full[:len(batch[0])])
