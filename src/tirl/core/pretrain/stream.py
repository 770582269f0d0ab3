"""The pretraining data: gold chats of freshly generated worlds, tokenised with loss weights.

Every world is generated from its own seed, searched with the same BM25 tool and rendered
with the same chat template as the benchmark's gold chats, so the base sees exactly the
agent format it will be trained and evaluated in. No world is ever seen twice, so facts
cannot be memorised into answers: the only way to lower the loss on an answer is to read it
off the passages in the context.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tirl.core.agent.protocol import (ANSWER_OPEN, GENERATION_PROMPT, IM_END, default_tools,
                                      render_text)
from tirl.core.data.chats import chats_with_qtype, passage_texts
from tirl.core.data.gold import searched_gold_trajectories
from tirl.core.modeling.factory import render_chats_as_text
from tirl.core.sft.examples import length_grouped_batches
from tirl.core.tools.search import build_search_tool
from tirl.core.world.config import WorldConfig
from tirl.core.world.generator import generate_world

Chat = list[dict[str, str]]


def world_config(seed: int, questions: Mapping[str, int], overrides: Mapping[str, Any]) -> WorldConfig:
    """The WorldConfig of one pretraining world: default shape, ``overrides``, train split only."""
    base = WorldConfig(seed=seed, questions={"train": dict(questions)})
    return dataclasses.replace(base, **dict(overrides)) if overrides else base


def world_chats(cfg: WorldConfig, *, top_k: int = 3, max_passage_tokens: int | None = None,
                world: Any = None) -> list[tuple[str, Chat]]:
    """``(qtype, chat)`` for every question of the world ``cfg`` (or of ``world``, already
    generated from it), system prompt included."""
    world = world if world is not None else generate_world(cfg)
    tool = build_search_tool(world.corpus, kind="bm25", top_k=top_k,
                             max_passage_tokens=max_passage_tokens)
    gold = searched_gold_trajectories(world.questions, world.plans, tool, splits=["train"],
                                      fallback_to_question=False)
    return chats_with_qtype(gold, world.questions)


def world_texts(cfg: WorldConfig, *, top_k: int = 3) -> list[str]:
    """Rendered chats and passages of one world: what the tokenizer is trained on."""
    world = generate_world(cfg)
    chats = [c for _, c in world_chats(cfg, top_k=top_k, world=world)]
    return render_chats_as_text(chats, default_tools()) + passage_texts(world.corpus)


#: Token roles: the loss weight of a token is chosen by its role (see :func:`collate_weighted`).
SYSTEM, CONTEXT, ASSISTANT = 0, 1, 2


@dataclass(frozen=True)
class WeightedExample:
    """One tokenised chat. ``roles[t]`` is the role of ``input_ids[t]`` (SYSTEM, CONTEXT or
    ASSISTANT); ``turns`` lists ``(kind, start, end)`` of assistant turns, kind ``query`` (a
    tool call) or ``answer``; ``qtype`` is the question's type."""

    input_ids: list[int]
    roles: list[int]
    turns: list[tuple[str, int, int]]
    qtype: str


def chatml_assistant_spans(ids: Sequence[int], header: Sequence[int], im_end: int) -> list[tuple[int, int]]:
    """``[start, end)`` of every assistant turn in ChatML token ids: after the
    ``<|im_start|>assistant\\n`` header, up to and including its ``<|im_end|>``.

    The same spans as :func:`tirl.core.sft.examples.assistant_spans` (a test checks it) in one pass
    over the ids instead of two template renders per turn, which would cost more than the
    training step on this stream.
    """
    spans, n, h = [], len(ids), len(header)
    i = 0
    while i <= n - h:
        if list(ids[i:i + h]) == list(header):
            start = i + h
            end = start
            while end < n and ids[end] != im_end:
                end += 1
            spans.append((start, min(end + 1, n)))
            i = end + 1
        else:
            i += 1
    return spans


class ChatEncoder:
    """Tokenises chats into :class:`WeightedExample`."""

    def __init__(self, tokenizer: Any, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.tokenizer = tokenizer
        self.tools = list(tools) if tools is not None else default_tools()
        self.header = tokenizer(GENERATION_PROMPT, add_special_tokens=False)["input_ids"]
        self.im_end = tokenizer.convert_tokens_to_ids(IM_END)

    def encode(self, chats: Sequence[tuple[str, Chat]],
               max_len: int | None = None) -> list[WeightedExample]:
        texts = [render_text(self.tokenizer, chat, self.tools) for _, chat in chats]
        out = []
        for (qtype, chat), ids in zip(chats, self.tokenizer(texts, add_special_tokens=False)["input_ids"]):
            if max_len is not None and len(ids) > max_len:
                continue
            spans = chatml_assistant_spans(ids, self.header, self.im_end)
            kinds = [m for m in chat if m["role"] == "assistant"]
            if len(spans) != len(kinds):
                raise ValueError(f"found {len(spans)} assistant turns in the rendered chat, "
                                 f"expected {len(kinds)}: the chat template is not ChatML")
            # The system turn is the same in every chat: it gets no loss. It ends at the
            # first <|im_end|>.
            system_end = ids.index(self.im_end) + 1 if chat[0]["role"] == "system" else 0
            roles = [SYSTEM] * system_end + [CONTEXT] * (len(ids) - system_end)
            turns = []
            for (start, end), msg in zip(spans, kinds):
                roles[start:end] = [ASSISTANT] * (end - start)
                turns.append(("answer" if ANSWER_OPEN in msg["content"] else "query", start, end))
            out.append(WeightedExample(ids, roles, turns, qtype))
        return out


def collate_weighted(examples: Sequence[WeightedExample], pad_id: int,
                     context_weight: float) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and per-token loss ``weights``:
    0 on the system turn and padding, 1 on assistant tokens, ``context_weight`` elsewhere."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    roles = torch.full((len(examples), width), SYSTEM, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        roles[row, :n] = torch.tensor(e.roles)
    table = torch.tensor([0.0, context_weight, 1.0])
    return {"input_ids": ids, "attention_mask": mask, "weights": table[roles]}


def block_batches(examples: Sequence[WeightedExample], batch_size: int, seed: int) -> list[list[int]]:
    """Batches (index lists) over one block, grouped by length as SFT groups them
    (:func:`tirl.core.sft.examples.length_grouped_batches`)."""
    batches = length_grouped_batches([len(e.input_ids) for e in examples], batch_size,
                                     random.Random(seed))
    # A short last batch would weigh its few chats more; drop it (the stream never ends).
    return [b for b in batches if len(b) == batch_size] or batches[:1]


def block_seeds(first_seed: int, block: int, worlds_per_block: int) -> range:
    start = first_seed + block * worlds_per_block
    return range(start, start + worlds_per_block)


def iter_blocks(*, first_seed: int, worlds_per_block: int, start_block: int,
                make_examples: Any) -> Iterator[tuple[int, list[WeightedExample]]]:
    """``(block, examples)`` for blocks ``start_block, start_block + 1, ...``; block ``b``
    holds the worlds of :func:`block_seeds` ``(first_seed, b, worlds_per_block)``."""
    block = start_block
    while True:
        seeds = block_seeds(first_seed, block, worlds_per_block)
        yield block, make_examples(seeds)
        block += 1
