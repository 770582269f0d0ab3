"""Where gold chats become SFT training tensors: token ids with labels on assistant tokens
only, packed rows of pretraining text, and padded batches in length-grouped order.

Assistant spans are found by rendering the chat prefix by prefix through the tokenizer's
chat template (:func:`assistant_spans`), so the same code serves the built-in tokenizer and a
real Qwen one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tirl.core.agent.protocol import ENDOFTEXT, IM_END, render

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # torch cross-entropy's ignore_index: these positions carry no loss


@dataclass(frozen=True)
class SFTExample:
    """One tokenised chat. ``labels[t] == input_ids[t]`` on assistant tokens, else -100."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def assistant_spans(tokenizer: Any, messages: Sequence[Mapping[str, str]],
                    tools: Sequence[Mapping[str, Any]] | None = None) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the whole chat and the ``[start, end)`` span of each assistant turn.

    A span starts after the ``<|im_start|>assistant\\n`` header (the generation prompt, which
    the rollout writes, not the model) and ends just after the turn's ``<|im_end|>``, which
    the model must learn to emit to stop. The newline the template puts after ``<|im_end|>``
    is outside: generation stops before it.

    Raises ValueError if the template is not prefix-stable (a rendered prefix is not a token
    prefix of the whole chat), since then no token-exact mask exists.
    """
    full = render(tokenizer, messages, tools)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start_ids = render(tokenizer, messages[:i], tools, add_generation_prompt=True)
        end_ids = render(tokenizer, messages[: i + 1], tools)
        if full[: len(end_ids)] != end_ids or end_ids[: len(start_ids)] != start_ids:
            raise ValueError(f"chat template is not prefix-stable at message {i}; cannot mask tokens")
        start, end = len(start_ids), len(end_ids)
        # Trim the template's trailing text after the turn's last <|im_end|>.
        while end > start and end_ids[end - 1] != im_end:
            end -= 1
        if end == start:
            raise ValueError(f"assistant message {i} rendered without a closing {IM_END}")
        spans.append((start, end))
    return full, spans


def build_sft_examples(tokenizer: Any, chats: Sequence[Sequence[Mapping[str, str]]],
                       tools: Sequence[Mapping[str, Any]] | None = None, *,
                       max_len: int | None = None) -> list[SFTExample]:
    """Tokenise gold chats with labels on assistant tokens only (see :func:`assistant_spans`).

    Chats longer than ``max_len`` tokens are dropped (truncating would cut off the answer
    and teach the model to stop mid-trajectory); the count is logged.
    """
    examples, dropped = [], 0
    for chat in chats:
        ids, spans = assistant_spans(tokenizer, chat, tools)
        if max_len is not None and len(ids) > max_len:
            dropped += 1
            continue
        labels = [IGNORE_INDEX] * len(ids)
        for start, end in spans:
            labels[start:end] = ids[start:end]
        examples.append(SFTExample(input_ids=ids, labels=labels))
    if dropped:
        log.warning("dropped %d of %d chats longer than max_len=%s tokens", dropped, len(chats), max_len)
    if not examples:
        raise ValueError(f"no SFT examples: all {len(chats)} chats were empty or longer than max_len={max_len}")
    return examples


def pack_texts(tokenizer: Any, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """Concatenate ``texts`` separated by ``<|endoftext|>`` and cut into rows.

    Returns a LongTensor of shape ``(n_rows, seq_len)``; the ragged tail is dropped.
    """
    sep = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    if sep is None or sep == tokenizer.unk_token_id:
        sep = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(sep)
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"pretraining text is {len(stream)} tokens, shorter than one row of {seq_len}")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def collate(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch. Returns ``input_ids``, ``labels``, ``attention_mask``, each ``(B, T)``."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One pass of index batches: shuffled, sorted by length in windows of 32 batches and cut
    into batches (so little compute goes to padding), then the batch order shuffled again (so
    a step's batch size in tokens varies, not its order)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w: w + window], key=lambda i: lengths[i])
        batches += [chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sft_batches(examples: Sequence[SFTExample], batch_size: int, rng: random.Random) -> Iterator[list[SFTExample]]:
    """Endless shuffled batches, grouped by length (:func:`length_grouped_batches`, a new
    pass each time the previous one is used up)."""
    lengths = [len(e.input_ids) for e in examples]
    while True:
        for b in length_grouped_batches(lengths, batch_size, rng):
            yield [examples[i] for i in b]
