"""The SFT loop: masked loss, lr schedule, loss decreases, determinism."""

from __future__ import annotations

import copy

import pytest
import torch

from tirl.core.agent import protocol as P
from tirl.core.modeling.prefix import weighted_lm_loss
from tirl.core.sft.config import SFTConfig
from tirl.core.sft.examples import IGNORE_INDEX, build_sft_examples, collate, pack_texts
from tirl.core.sft.loop import lr_at, train_sft

TOOLS = P.SEARCH_TOOL_SCHEMAS


def test_loss_ignores_masked_positions():
    # Hand example: 1 sequence, 4 positions; only the transition 1->2 is trainable. SFT
    # weighs each target token by ``labels != IGNORE_INDEX`` (see _accumulate).
    logits = torch.zeros(1, 4, 3, requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, IGNORE_INDEX]])
    loss = weighted_lm_loss(logits, labels.clamp_min(0), (labels != IGNORE_INDEX).float())
    assert loss.item() == pytest.approx(torch.log(torch.tensor(3.0)).item())
    loss.backward()
    # Gradient flows only into the logits that predict the trainable label (position 1).
    assert logits.grad[0, 1].abs().sum() > 0
    assert logits.grad[0, [0, 2, 3]].abs().sum() == 0


def test_lr_schedule_shapes():
    kw = dict(total=10, warmup=2, min_ratio=0.1)
    assert [lr_at(s, schedule="constant", **kw) for s in (0, 1, 5)] == [0.5, 1.0, 1.0]
    assert lr_at(2, schedule="cosine", **kw) == pytest.approx(1.0)
    cos = [lr_at(s, schedule="cosine", **kw) for s in range(2, 10)]
    assert all(x > y for x, y in zip(cos, cos[1:])) and cos[-1] > 0.1
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, schedule="step", **kw)


def _eval_loss(model, examples, pad_id):
    batch = collate(examples, pad_id)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return weighted_lm_loss(out.logits, batch["input_ids"],
                            (batch["labels"] != IGNORE_INDEX).float()).item()


@pytest.mark.parametrize("precision,pretrain_chats", [("fp32", False), ("bf16", True)])
def test_a_few_steps_lower_the_loss(fresh_tiny_model, tiny_tokenizer, tiny_gold, precision, pretrain_chats):
    tok = tiny_tokenizer
    examples = build_sft_examples(tok, tiny_gold, TOOLS)
    before = _eval_loss(fresh_tiny_model, examples, tok.pad_token_id)
    seen = []
    cfg = SFTConfig(max_steps=15, batch_size=4, lr=3e-3, warmup_steps=2, precision=precision,
                    probe_size=0, progress_bar=False, pretrain_steps=3, pretrain_seq_len=32,
                    pretrain_batch_size=2, pretrain_chats=pretrain_chats)
    passages = [m["content"] for c in tiny_gold for m in c if m["role"] == "tool"] * 4
    model, summary = train_sft(fresh_tiny_model, tok, tiny_gold, cfg, tools=TOOLS, pretrain_texts=passages,
                               on_metrics=lambda m, s: seen.append((s, dict(m))))
    after = _eval_loss(model, examples, tok.pad_token_id)
    assert after < before - 0.5
    assert summary["final_loss"] < summary["first_loss"]
    assert [s for s, _ in seen] == list(range(18))
    assert {"pretrain/loss", "pretrain/lr"} <= set(seen[0][1])
    assert {"loss", "lr", "tokens_per_s", "grad_norm"} <= set(seen[-1][1])
    if pretrain_chats:  # rendered chats join the passages: more rows to pack
        assert summary["pretrain/rows"] > len(pack_texts(tok, passages, 32))
    assert seen[3][1]["lr"] == pytest.approx(3e-3 * 0.5)  # first SFT step: warmup 1/2


def test_deterministic_on_cpu(tiny_model, tiny_tokenizer, tiny_gold):
    cfg = SFTConfig(max_steps=3, batch_size=2, probe_size=0, progress_bar=False)
    a, _ = train_sft(copy.deepcopy(tiny_model), tiny_tokenizer, tiny_gold, cfg, tools=TOOLS)
    b, _ = train_sft(copy.deepcopy(tiny_model), tiny_tokenizer, tiny_gold, cfg, tools=TOOLS)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(a.parameters()), next(tiny_model.parameters()))
