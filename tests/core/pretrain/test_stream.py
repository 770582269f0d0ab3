"""The pretraining stream: fresh worlds, token roles, assistant spans, the shared prefix."""

from __future__ import annotations

import pytest
import torch

from tirl.core.modeling.factory import train_tokenizer
from tirl.core.pretrain import stream as S
from tirl.core.sft.examples import assistant_spans

SMALL = {"n_persons": 30, "n_companies": 10, "n_universities": 4, "n_cities": 8, "n_countries": 3}
QUESTIONS = {"single_hop": 6, "bridge": 4, "comparison": 3, "description": 1, "multi_question": 1}


@pytest.fixture(scope="module")
def world_tok():
    cfg = S.world_config(1_000_000, QUESTIONS, SMALL)
    tok = train_tokenizer(S.world_texts(cfg), vocab_size=600)
    return cfg, tok


def test_world_chats_cover_every_question_type_with_the_system_prompt(world_tok):
    cfg, _ = world_tok
    chats = S.world_chats(cfg)
    assert sorted({q for q, _ in chats}) == sorted(QUESTIONS)
    assert len(chats) == sum(QUESTIONS.values())
    assert all(c[0]["role"] == "system" and c[-1]["content"].startswith("<answer>") for _, c in chats)


def test_chatml_spans_equal_the_sft_template_spans(world_tok):
    cfg, tok = world_tok
    enc = S.ChatEncoder(tok)
    chats = S.world_chats(cfg)
    for (qtype, chat), ex in zip(chats, enc.encode(chats)):
        ids, spans = assistant_spans(tok, chat, enc.tools)
        assert ex.input_ids == ids
        assert [(s, e) for _, s, e in ex.turns] == spans
        assert [k for k, _, _ in ex.turns][-1] == "answer"
        assert ex.qtype == qtype


def test_roles_give_no_loss_to_the_system_turn_and_full_weight_to_the_assistant(world_tok):
    cfg, tok = world_tok
    enc = S.ChatEncoder(tok)
    ex = enc.encode(S.world_chats(cfg)[:2])
    p = ex[0].input_ids.index(enc.im_end) + 1  # the system turn ends at the first <|im_end|>
    assert all(e.input_ids[:p] == ex[0].input_ids[:p] for e in ex)
    batch = S.collate_weighted(ex, tok.pad_token_id, 0.25)
    w = batch["weights"]
    assert torch.all(w[:, :p] == 0)
    for row, e in enumerate(ex):
        for _, start, end in e.turns:
            assert torch.all(w[row, start:end] == 1.0)
        assert w[row, len(e.input_ids):].sum() == 0  # padding
        assert set(w[row, p:len(e.input_ids)].tolist()) == {0.25, 1.0}


def test_block_batches_are_full_deterministic_and_cover_the_block(world_tok):
    cfg, tok = world_tok
    ex = S.ChatEncoder(tok).encode(S.world_chats(cfg))
    a = S.block_batches(ex, 4, seed=7)
    assert a == S.block_batches(ex, 4, seed=7)
    assert a != S.block_batches(ex, 4, seed=8)
    assert all(len(b) == 4 for b in a)
    flat = [i for b in a for i in b]
    assert len(set(flat)) == len(flat) == 4 * (len(ex) // 4)


def test_block_seeds_are_consecutive_and_disjoint():
    assert list(S.block_seeds(100, 0, 3)) == [100, 101, 102]
    assert list(S.block_seeds(100, 2, 3)) == [106, 107, 108]
