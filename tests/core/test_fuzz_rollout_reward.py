"""Fuzz of the whole rollout-to-reward path (issue 15): random model outputs go through the
parser, the tools (BM25 search and a tool that fails on some inputs), the rollout engine,
PRS and the binary reward with a local and a batched judge, and the Parquet save, all in one
batch. Nothing raises, and every trajectory and its reward are exactly what the same row
gets when it is rolled out and scored alone: no trajectory's reward depends on another's.

Random text comes from hypothesis; ``TIRL_FUZZ_EXAMPLES`` sets how many batches (default 30,
about 15 s on the 2-core CI machine). Before the fixes of issue 15 it failed three ways:
one blank query changed its neighbours' search results, and a lone surrogate crashed the
tokenizer and the Parquet save.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scripted import scripted_out
from tirl.core.agent import protocol as P
from tirl.core.agent.rollout import RolloutConfig, run_rollouts
from tirl.core.rewards import make_judge, make_reward_fn
from tirl.core.rewards.prs import score_batch
from tirl.core.tools.base import FunctionTool
from tirl.core.tools.search import build_search_tool
from tirl.core.types import JudgeVerdict
from tirl.datasets.trajectories import TrajectoryDataset

CORPUS = pd.DataFrame({
    "id": ["1", "2", "3"], "title": ["Alice Marlow", "Kestrel Works", "Norvale"],
    "text": ["Alice Marlow was born in Norvale in 1931.",
             "Kestrel Works was founded by Brin Adler in 1902.",
             "Norvale is a river town in Ostmark."]})
REFERENCE = "Alice Marlow was born in Norvale in 1931. She founded Kestrel Works."
QUESTIONS = [
    {"question": "Where was Alice Marlow born?", "answers": ["Norvale"], "task": "short",
     "facts": []},
    {"question": "Who founded Kestrel Works?", "answers": ["Brin Adler"], "task": "short",
     "facts": []},
    {"question": "Describe Alice Marlow.", "answers": [REFERENCE], "task": "long",
     "facts": ["Alice Marlow was born in Norvale.", "Alice Marlow was born in 1931.",
               "Alice Marlow founded Kestrel Works."]},
    {"question": "Describe Alice Marlow.", "answers": [REFERENCE], "task": "long",
     "facts": ["Alice Marlow | born_in | Norvale", "Alice Marlow | birth_year | 1931",
               "Alice Marlow | founded | Kestrel Works"]},
]


def _lookup(query: str) -> str:
    if "x" in query:
        raise KeyError(query)
    return f"{query[::-1]} \udcff"  # a tool whose text holds a lone surrogate


class _BatchJudge:
    """A judge with ``judge_batch``, as the LLM judges have (score_batch prefetches with it):
    deterministic in its item, so a verdict can only differ if the batch leaks into it."""

    def judge(self, *, question, reference, answer, facts=()):
        score = (sum(map(ord, answer)) % 11) / 10
        return JudgeVerdict(score=score, match=score >= 0.5)

    def judge_batch(self, items):
        return [self.judge(**item) for item in items]


class _Rows:
    """A backend that writes row ``r``'s scripted turns, whichever rows are still live (the
    engine's ``cache_ids`` name the rows, so a row's text does not move when others end)."""

    def __init__(self, tokenizer, scripts, rows):
        self.tok, self.scripts, self.rows, self.turn = tokenizer, scripts, rows, 0

    def generate(self, prompts, *, max_new_tokens, stop_token_ids=frozenset(), stop_strings=(),
                 temperature=1.0, top_p=1.0, seed=None, cache_ids=None):
        turn, self.turn = self.turn, self.turn + 1
        outs = []
        for slot, budget in zip(cache_ids, max_new_tokens):
            script = self.scripts[self.rows[slot]]
            text = script[turn] if turn < len(script) else "<|im_end|>"
            outs.append(scripted_out(self.tok, text, budget, stop_token_ids, -0.5))
        return outs


# --- random model outputs ----------------------------------------------------------------

_chars = st.characters(blacklist_categories=("Cs",))  # sampled tokens decode to valid text
_text = st.text(_chars, max_size=12)
_query = st.one_of(st.sampled_from(["Alice Marlow", "Kestrel Works founder", "Norvale", "   ",
                                    "", "the", "caf\ud800", "x", "xylophone"]),
                   st.text(max_size=20))
# ensure_ascii: a lone surrogate in a query reaches the parser as a JSON escape, as a model
# would write it.
_call = st.builds(lambda name, q: "<tool_call>\n" + json.dumps(
    {"name": name, "arguments": {"query": q}}) + "\n</tool_call>",
    st.sampled_from(["search", "search", "lookup", "lookup", "browse"]), _query)
_answer = st.builds(P.format_answer, st.one_of(st.sampled_from(
    ["Norvale", "Brin Adler", "norvale.", REFERENCE, "Kestrel Works was born in Alice Marlow.",
     "", " "]), _text))
_tags = st.sampled_from(["<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>",
                         "</answer>", "<|im_end|>", "<|endoftext|>", "<tool_response>", "{",
                         "\"", "\n"])
# Well-formed turns (one or more calls, an answer) as often as random compositions of tags,
# calls, answers and text, so that tools and judges are reached, not only parse errors.
_turn = st.one_of(
    st.lists(_call, min_size=1, max_size=3).map("\n".join),
    st.builds("<think>{}</think>\n{}".format, _text, _call),
    _answer,
    st.lists(st.one_of(_call, _answer, _tags, _text), max_size=6).map("".join))
_batch = st.lists(st.tuples(st.integers(0, len(QUESTIONS) - 1), st.lists(_turn, min_size=1,
                                                                          max_size=3)),
                  min_size=2, max_size=5)

CONFIG = RolloutConfig(max_turns=3, max_new_tokens_per_turn=96, max_total_tokens=1536,
                       max_tool_response_tokens=32, tool_timeout_s=10.0)
EXAMPLES = int(os.environ.get("TIRL_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def tools():
    return {"search": build_search_tool(CORPUS, top_k=2),
            "lookup": FunctionTool("lookup", "Look a word up.", dict(P.SEARCH_PARAMETERS),
                                   _lookup)}


def _roll(tokenizer, tools, rows, scripts, questions):
    return run_rollouts(backend=_Rows(tokenizer, scripts, rows), tokenizer=tokenizer,
                        tools=tools, questions=questions, group_size=1, config=CONFIG)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(batch=_batch, step=st.integers(0, 30))
def test_no_trajectory_or_reward_depends_on_its_batch(tiny_tokenizer, tools, tmp_path_factory,
                                                      batch, step):
    questions = [{"id": f"r{i}", **QUESTIONS[q]} for i, (q, _) in enumerate(batch)]
    scripts = [turns for _, turns in batch]
    by_id = {q["id"]: q for q in questions}
    together = _roll(tiny_tokenizer, tools, list(range(len(batch))), scripts, questions)
    alone = [_roll(tiny_tokenizer, tools, [i], scripts, [q])[0] for i, q in enumerate(questions)]
    assert [t.to_record() for t in together] == [t.to_record() for t in alone]
    for t in together:  # what the examples reached (pytest --hypothesis-show-statistics)
        event(f"finish: {t.finish_reason}")
        event(f"tool calls: {'failed' if t.num_tool_failures else 'ok' if t.tool_calls else 'none'}")

    for name in ("prs", "binary"):
        for judge in (make_judge("rubric"), _BatchJudge()):
            fn = make_reward_fn(name, judge=judge)
            scores = score_batch(fn, together, by_id, step=step)
            assert scores == [score_batch(fn, [t], by_id, step=step)[0] for t in alone]
            assert all(0.0 <= s.reward <= 1.0 and s.stage in (0, 1, 2) for s in scores)
    event(f"stage 2 (answered, well formed): {any(s.stage == 2 for s in scores)}")

    data = TrajectoryDataset(str(tmp_path_factory.mktemp("fuzz") / "t.parquet"), scored=True)
    data.save(list(zip(together, scores)))
    assert [t.to_record() for t, _ in data.load()] == [t.to_record() for t in together]
