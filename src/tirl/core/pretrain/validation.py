"""Validation during pretraining: teacher-forced exact match of the assistant's turns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tirl.core.pretrain.stream import WeightedExample, collate_weighted


@torch.no_grad()
def turn_accuracy(model: Any, examples: Sequence[WeightedExample], pad_id: int,
                  batch_size: int = 16) -> dict[str, float]:
    """Teacher-forced exact match of assistant turns on gold chats.

    A turn counts as right when the argmax at every one of its positions is the gold token,
    which is exactly when greedy decoding, given the gold history, writes the gold turn. So
    ``answer_em`` is the exact match given gold searches and ``first_query_em`` the rate of
    a right first query, both in one forward pass per chat. Per question type too.
    """
    model.eval()
    device = next(model.parameters()).device
    hits: dict[str, list[int]] = {}
    for b in range(0, len(examples), batch_size):
        chunk = examples[b:b + batch_size]
        batch = collate_weighted(chunk, pad_id, 1.0)
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        pred = logits.argmax(-1).cpu()
        for row, e in enumerate(chunk):
            ids = batch["input_ids"][row]
            queries = [t for t in e.turns if t[0] == "query"]
            for kind, start, end in e.turns:
                ok = int(torch.equal(pred[row, start - 1:end - 1], ids[start:end]))
                if kind == "answer":
                    hits.setdefault("answer_em", []).append(ok)
                    hits.setdefault(f"answer_em/{e.qtype}", []).append(ok)
                elif queries and (kind, start, end) == queries[0]:
                    hits.setdefault("first_query_em", []).append(ok)
                else:
                    hits.setdefault("later_query_em", []).append(ok)
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}
