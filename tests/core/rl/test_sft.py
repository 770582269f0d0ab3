"""SFT: assistant-only labels, loss decreases, determinism, packing, lr schedule."""

from __future__ import annotations

import copy

import pytest
import torch

from tirl.core.agent import protocol as P
from tirl.core.config import ConfigError, build_config
from tirl.core.rl.sft import (
    IGNORE_INDEX, SFTConfig, SFTExample, assistant_spans, build_sft_examples, collate, lr_at,
    masked_lm_loss, pack_texts, probe_generation, train_sft,
)

TOOLS = P.SEARCH_TOOL_SCHEMAS

CHAT = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "Who?"},
    {"role": "assistant", "content": '<tool_call>\n{"name": "search", "arguments": {"query": "q"}}\n</tool_call>'},
    {"role": "tool", "content": "Doc 1 (Title: T) Bob did it."},
    {"role": "assistant", "content": "<answer>Bob</answer>"},
]


def test_labels_cover_exactly_assistant_turns_and_their_im_end(tiny_tokenizer):
    tok = tiny_tokenizer
    (ex,) = build_sft_examples(tok, [CHAT], TOOLS)
    ids, labels = ex.input_ids, ex.labels
    trainable = [i for i, l in enumerate(labels) if l != IGNORE_INDEX]
    assert all(labels[i] == ids[i] for i in trainable)
    # The trainable tokens, decoded in order, are the two assistant turns each closed by
    # <|im_end|>; nothing of the system/user/tool turns and no template header.
    spans_text = []
    run: list[int] = []
    for i in range(len(ids)):
        if labels[i] != IGNORE_INDEX:
            run.append(ids[i])
        elif run:
            spans_text.append(tok.decode(run))
            run = []
    assert spans_text == [CHAT[2]["content"] + "<|im_end|>", "<answer>Bob</answer><|im_end|>"]
    # Hand-worked: everything before the first span is the prompt + the assistant header.
    first = trainable[0]
    assert tok.decode(ids[:first]).endswith("<|im_start|>user\nWho?<|im_end|>\n<|im_start|>assistant\n")
    # The tool response is entirely masked.
    text_masked = tok.decode([t for t, l in zip(ids, labels) if l == IGNORE_INDEX])
    assert "<tool_response>\nDoc 1 (Title: T) Bob did it.\n</tool_response>" in text_masked
    assert ex.num_trainable == len(trainable)


def test_span_offsets_by_hand(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, spans = assistant_spans(tok, CHAT, TOOLS)
    prompt = P.render(tok, CHAT[:2], TOOLS, add_generation_prompt=True)
    n_call = len(tok.encode(CHAT[2]["content"], add_special_tokens=False))
    assert spans[0] == (len(prompt), len(prompt) + n_call + 1)  # + <|im_end|>
    assert ids[spans[0][1] - 1] == tok.convert_tokens_to_ids(P.IM_END)
    assert tok.decode(ids[spans[0][1]:spans[0][1] + 1]) == "\n"  # template newline: not trained
    assert spans[1][1] == len(ids) - 1  # last token is the template's "\n"


def test_long_chats_are_dropped(tiny_tokenizer):
    n = len(P.render(tiny_tokenizer, CHAT, TOOLS))
    assert len(build_sft_examples(tiny_tokenizer, [CHAT, CHAT], TOOLS, max_len=n)) == 2
    with pytest.raises(ValueError, match="no SFT examples"):
        build_sft_examples(tiny_tokenizer, [CHAT], TOOLS, max_len=n - 1)


def test_loss_ignores_masked_positions():
    # Hand example: 1 sequence, 4 positions; only the transition 1->2 is trainable.
    logits = torch.zeros(1, 4, 3, requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, IGNORE_INDEX]])
    loss = masked_lm_loss(logits=logits, labels=labels)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(3.0)).item())
    loss.backward()
    # Gradient flows only into the logits that predict the trainable label (position 1).
    assert logits.grad[0, 1].abs().sum() > 0
    assert logits.grad[0, [0, 2, 3]].abs().sum() == 0


def test_collate_pads_right_with_ignored_labels():
    batch = collate([SFTExample([5, 6, 7], [IGNORE_INDEX, 6, 7]), SFTExample([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_pack_texts_rows(tiny_tokenizer):
    tok = tiny_tokenizer
    a, b = tok.encode("Velden", add_special_tokens=False), tok.encode("Norvale", add_special_tokens=False)
    stream = a + [tok.pad_token_id] + b + [tok.pad_token_id]
    rows = pack_texts(tok, ["Velden", "Norvale"], seq_len=2)
    assert rows.tolist() == [stream[i:i + 2] for i in range(0, len(stream) // 2 * 2, 2)]
    with pytest.raises(ValueError, match="shorter than one row"):
        pack_texts(tok, ["x"], seq_len=1000)


def test_lr_schedule_shapes():
    kw = dict(total=10, warmup=2, min_ratio=0.1)
    assert [lr_at(s, schedule="constant", **kw) for s in (0, 1, 5)] == [0.5, 1.0, 1.0]
    assert lr_at(2, schedule="cosine", **kw) == pytest.approx(1.0)
    cos = [lr_at(s, schedule="cosine", **kw) for s in range(2, 10)]
    assert all(x > y for x, y in zip(cos, cos[1:])) and cos[-1] > 0.1
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, schedule="step", **kw)


def test_config_errors_name_key():
    with pytest.raises(ConfigError, match="sft.precision"):
        build_config(SFTConfig, {"precision": "fp8"}, "sft")


def _eval_loss(model, examples, pad_id):
    batch = collate(examples, pad_id)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return masked_lm_loss(logits=out.logits, labels=batch["labels"]).item()


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
    assert summary["sft/final_loss"] < summary["sft/first_loss"]
    assert [s for s, _ in seen] == list(range(18))
    assert {"sft/pretrain/loss", "sft/pretrain/lr"} <= set(seen[0][1])
    assert {"sft/loss", "sft/lr", "sft/tokens_per_s", "sft/grad_norm"} <= set(seen[-1][1])
    if pretrain_chats:  # rendered chats join the passages: more rows to pack
        assert summary["sft/pretrain/rows"] > len(pack_texts(tok, passages, 32))
    assert seen[3][1]["sft/lr"] == pytest.approx(3e-3 * 0.5)  # first SFT step: warmup 1/2


def test_deterministic_on_cpu(tiny_model, tiny_tokenizer, tiny_gold):
    cfg = SFTConfig(max_steps=3, batch_size=2, probe_size=0, progress_bar=False)
    a, _ = train_sft(copy.deepcopy(tiny_model), tiny_tokenizer, tiny_gold, cfg, tools=TOOLS)
    b, _ = train_sft(copy.deepcopy(tiny_model), tiny_tokenizer, tiny_gold, cfg, tools=TOOLS)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(a.parameters()), next(tiny_model.parameters()))


def test_probe_counts_turns(tiny_model, tiny_tokenizer, tiny_gold):
    out = probe_generation(tiny_model, tiny_tokenizer, tiny_gold[:1], tools=TOOLS, max_new_tokens=3)
    assert out["probe/turns"] == 2.0
    assert 0.0 <= out["probe/answer_em"] <= 1.0
