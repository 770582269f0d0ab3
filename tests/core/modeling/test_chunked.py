"""Logits a chunk at a time give the full logits' log-probs, entropy, SFT loss and gradients,
and the output head never runs on more than ``chunk_tokens`` positions at once."""

from __future__ import annotations

import copy

import pytest
import torch

from tirl.core.modeling import chunked
from tirl.core.modeling import prefix as P
from tirl.core.rl.batch import model_token_logprobs

VOCAB, CHUNK = 1000, 7


@pytest.fixture(scope="module")
def llama():
    """A random 2-layer Llama with an untied 1000-way head, built locally (no hub)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def _batch(p: int, rows: int = 3, width: int = 40, seed: int = 0):
    """Right-padded rows sharing their first ``p`` tokens; ``needed`` [N, T-1] reads some
    targets after the prefix (gaps like tool responses), ``weights`` [N, T] the SFT weights."""
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(0, VOCAB, (1, p), generator=g)
    ids = torch.cat([head.expand(rows, p), torch.randint(0, VOCAB, (rows, width - p), generator=g)], 1)
    ids[1:, p] = (ids[0, p] + 1) % VOCAB  # rows differ right after the prefix
    lens = torch.tensor([width, width - 7, width - 3])[:rows]
    mask = (torch.arange(width)[None] < lens[:, None]).long()
    needed = (torch.rand(rows, width - 1, generator=g) < 0.6).float() * mask[:, 1:]
    needed[:, :p + 2] = 0
    weights = torch.rand(rows, width, generator=g) * mask * (torch.rand(rows, width, generator=g) < 0.7)
    return ids, mask, needed, weights


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _close(a, b, atol=1e-5):
    assert torch.allclose(a, b, atol=atol, rtol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("p", [0, 20])
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("entropy_grad", [True, False])
def test_logprobs_entropy_and_gradients_equal_the_full_logits(llama, p, share, entropy_grad):
    ids, mask, needed, _ = _batch(p)
    full_model, chunk_model = copy.deepcopy(llama), copy.deepcopy(llama)
    values = {}
    for name, model, chunk in (("full", full_model, None), ("chunked", chunk_model, CHUNK)):
        lp, ent = model_token_logprobs(model, input_ids=ids, attention_mask=mask, with_entropy=True,
                                       entropy_grad=entropy_grad, needed=needed if share else None,
                                       logits_chunk=chunk)
        loss = (lp * needed).sum() + ((ent * needed).sum() if entropy_grad else 0.0)
        loss.backward()
        values[name] = (lp * needed, ent * needed, ent.requires_grad)
    (lp_f, ent_f, g_f), (lp_c, ent_c, g_c) = values["full"], values["chunked"]
    _close(lp_f, lp_c)
    _close(ent_f, ent_c)
    assert g_f == g_c == entropy_grad
    for a, b in zip(_grads(full_model), _grads(chunk_model)):
        _close(a, b, atol=1e-6)


def test_prefix_once_hidden_states_give_the_plain_forward_logits(llama):
    ids, mask, needed, _ = _batch(20)
    hidden, start = P.next_token_hidden(llama, ids, mask, max_prefix=21)
    assert start == 19
    logits = llama(input_ids=ids, attention_mask=mask).logits[:, :-1]
    with torch.no_grad():
        lp, _ = model_token_logprobs(llama, input_ids=ids, attention_mask=mask, needed=needed,
                                     logits_chunk=CHUNK)
    picked = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    keep = mask[:, 1:].bool()[:, start:]
    _close(llama.get_output_embeddings()(hidden)[keep], logits[:, start:][keep], atol=1e-5)
    _close(lp, picked * needed)


@pytest.mark.parametrize("p", [0, 16, 25])
def test_sft_loss_and_gradients_equal_the_full_logits(llama, p):
    ids, mask, _, weights = _batch(p)
    plain_model, full_model, chunk_model = (copy.deepcopy(llama) for _ in range(3))
    plain = P.weighted_lm_loss(plain_model(input_ids=ids, attention_mask=mask).logits, ids, weights)
    full = P.lm_loss(full_model, ids, mask, weights)
    chunk = P.lm_loss(chunk_model, ids, mask, weights, logits_chunk=CHUNK)
    for loss in (plain, full, chunk):
        loss.backward()
    _close(plain, chunk)
    _close(full, chunk)
    for a, b, c in zip(_grads(plain_model), _grads(full_model), _grads(chunk_model)):
        _close(a, c, atol=1e-6)
        _close(b, c, atol=1e-6)


def _head_rows(model):
    """Rows of every input the output head sees (forward and recomputation alike)."""
    rows: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda _m, args, _out: rows.append(args[0].shape[:-1].numel()))
    return rows, hook


@pytest.mark.parametrize("p", [0, 20])
def test_the_head_never_sees_more_than_chunk_tokens_positions(llama, p):
    ids, mask, needed, weights = _batch(p)
    model = copy.deepcopy(llama)
    rows, hook = _head_rows(model)
    try:
        lp, ent = model_token_logprobs(model, input_ids=ids, attention_mask=mask, with_entropy=True,
                                       entropy_grad=True, needed=needed, logits_chunk=CHUNK)
        ((lp + ent) * needed).sum().backward()
        rl_rows = list(rows)
        P.lm_loss(model, ids, mask, weights, logits_chunk=CHUNK).backward()
        sft_rows = rows[len(rl_rows):]
    finally:
        hook.remove()
    assert max(rl_rows) <= CHUNK and max(sft_rows) <= CHUNK
    # Only the read positions reach the head: once in the forward, once recomputed in the
    # backward.
    assert sum(rl_rows) == 2 * int(needed.sum())
    if p == 0:
        assert sum(sft_rows) == 2 * int((weights[:, 1:] != 0).sum())


def test_no_needed_position_still_gives_a_graph(llama):
    ids, mask, needed, _ = _batch(20)
    model = copy.deepcopy(llama)
    lp, _ = model_token_logprobs(model, input_ids=ids, attention_mask=mask, needed=needed * 0,
                                 logits_chunk=CHUNK)
    assert not lp.any()
    lp.sum().backward()  # a placeholder micro-batch's zero loss still backpropagates
    assert all(g is None or not g.any() for g in (q.grad for q in model.parameters()))


def test_a_softcapped_head_falls_back_to_the_full_logits():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=128, final_logit_softcapping=3.0,
        tie_word_embeddings=False)).eval()
    with torch.no_grad():  # logits well beyond the cap, so that it changes the values
        model.get_output_embeddings().weight.mul_(100.0)
    assert chunked.output_head(model) is None
    ids, mask, needed, _ = _batch(0)
    rows, hook = _head_rows(model)
    with torch.no_grad():
        got, _ = model_token_logprobs(model, input_ids=ids, attention_mask=mask, logits_chunk=CHUNK)
        want, _ = model_token_logprobs(model, input_ids=ids, attention_mask=mask)
    hook.remove()
    _close(got, want)
    assert max(rows) == ids.numel()  # the full forward: every position at once
    # The softcap matters here: the head alone would give other values.
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    raw = torch.log_softmax(model.get_output_embeddings()(hidden), -1).gather(-1, ids[:, 1:, None])
    assert not torch.allclose(raw[..., 0], want, atol=1e-3)


def test_a_wrapped_model_falls_back(llama):
    class Wrapper(torch.nn.Module):  # what DDP looks like from outside: no HF methods
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, **kw):
            return self.module(**kw)

    assert chunked.output_head(llama) is llama.get_output_embeddings()
    assert chunked.output_head(Wrapper(llama)) is None
