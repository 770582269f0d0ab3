"""A shared prefix run once gives the same loss, logits and gradients as the full batch."""

from __future__ import annotations

import copy

import pytest
import torch

from tirl.core.modeling import prefix as P
from tirl.core.sft.examples import IGNORE_INDEX, build_sft_examples, collate


def _batch(vocab: int, p: int, rows: int = 3, width: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(0, vocab, (1, p), generator=g)
    ids = torch.cat([head.expand(rows, p), torch.randint(0, vocab, (rows, width - p), generator=g)], 1)
    ids[1:, p] = (ids[0, p] + 1) % vocab  # rows differ right after the prefix
    lens = torch.tensor([width, width - 7, width - 3])[:rows]
    mask = (torch.arange(width)[None] < lens[:, None]).long()
    weights = torch.rand(rows, width, generator=g) * mask  # nonzero inside the prefix too
    return ids, mask, weights


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_common_prefix_len():
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 5, 4]])
    assert P.common_prefix_len(ids) == 2
    assert P.common_prefix_len(ids[:1]) == 4
    assert P.common_prefix_len(ids, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])) == 0


@pytest.mark.parametrize("p", [16, 25])
def test_shared_prefix_loss_and_gradients_equal_the_full_forward(tiny_model, p):
    vocab = tiny_model.config.vocab_size
    ids, mask, weights = _batch(vocab, p)
    assert P.common_prefix_len(ids, mask) == p
    full_model, shared_model = copy.deepcopy(tiny_model).train(), copy.deepcopy(tiny_model).train()
    full = P.weighted_lm_loss(full_model(input_ids=ids, attention_mask=mask).logits, ids, weights)
    full.backward()
    shared = P.lm_loss(shared_model, ids, mask, weights)
    shared.backward()
    assert torch.allclose(full, shared, atol=1e-5)
    for a, b in zip(_grads(full_model), _grads(shared_model)):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_lm_loss_is_the_sft_masked_loss_on_gold_chats(tiny_model, tiny_tokenizer, tiny_gold):
    from tirl.core.agent.protocol import default_tools

    batch = collate(build_sft_examples(tiny_tokenizer, tiny_gold, default_tools()),
                    tiny_tokenizer.pad_token_id)
    assert P.common_prefix_len(batch["input_ids"], batch["attention_mask"]) >= P.MIN_SHARED_PREFIX
    logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # The plain masked loss: cross-entropy of every next token whose label is not ignored.
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX)
    got = P.lm_loss(tiny_model, batch["input_ids"], batch["attention_mask"],
                    (batch["labels"] != IGNORE_INDEX).float())
    assert torch.allclose(expected, got, atol=1e-5)


def test_no_shared_prefix_falls_back_to_the_plain_forward(tiny_model):
    ids, mask, weights = _batch(tiny_model.config.vocab_size, 0)
    ids[1, 0] = (ids[0, 0] + 1) % tiny_model.config.vocab_size
    logits = tiny_model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(P.lm_loss(tiny_model, ids, mask, weights),
                          P.weighted_lm_loss(logits, ids, weights))


def _picked(logits, ids):
    return torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]


@pytest.mark.parametrize("p", [16, 25])
def test_shared_prefix_logits_and_gradients_equal_the_full_forward(tiny_model, p):
    ids, mask, _ = _batch(tiny_model.config.vocab_size, p)
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
    ids, mask, _ = _batch(tiny_model.config.vocab_size, 0)
    ids[1, 0] = (ids[0, 0] + 1) % tiny_model.config.vocab_size
    full = tiny_model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    for batch in ((ids, mask), (ids[:1], mask[:1])):
        logits, start = P.next_token_logits(tiny_model, *batch)
        assert start == 0 and torch.equal(logits, full[:len(batch[0])])
