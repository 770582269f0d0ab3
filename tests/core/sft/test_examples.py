"""SFT examples: assistant-only labels, dropped long chats, padding, packing."""

from __future__ import annotations

import pytest

from tirl.core.agent import protocol as P
from tirl.core.sft.examples import (IGNORE_INDEX, SFTExample, assistant_spans, build_sft_examples, collate,
                                    pack_texts)

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
