"""The greedy probe after SFT."""

from __future__ import annotations

from tirl.core.agent import protocol as P
from tirl.core.sft.probe import probe_generation

TOOLS = P.SEARCH_TOOL_SCHEMAS


def test_probe_counts_turns(tiny_model, tiny_tokenizer, tiny_gold):
    out = probe_generation(tiny_model, tiny_tokenizer, tiny_gold[:1], tools=TOOLS, max_new_tokens=3)
    assert out["probe/turns"] == 2.0
    assert 0.0 <= out["probe/answer_em"] <= 1.0
