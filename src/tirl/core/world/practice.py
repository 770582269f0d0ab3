"""Practice worlds: gold chats from freshly generated worlds, for the warm start only.

A from-scratch model trained on the gold chats of one world learns that world: after a few
epochs it recalls the training entities instead of copying the entity the question names
(docs/results.md). Chats from other worlds, same generator and templates but other names
and facts, cannot be memorised into answers, so the cheapest way to lower the loss on them is
the skill the agent needs: copy the question's entity into the query and the answer out of
the retrieved passage. Practice worlds are never searched during RL or evaluation; the
benchmark world stays the only one the agent is tested on.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable

import pandas as pd

from tirl.core.data.gold import searched_gold_trajectories
from tirl.core.types import GOLD_COLUMNS
from tirl.core.world.config import WorldConfig
from tirl.core.world.generator import generate_world

log = logging.getLogger(__name__)


def _mentions(names: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching any of ``names`` as whole words (None when there are none)."""
    names = sorted({n for n in names if n}, key=len, reverse=True)
    if not names:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b")


def practice_seeds(first_seed: int, worlds: int, benchmark_seed: int) -> range:
    """The practice worlds' seeds; raises if there is a negative count or if they include the
    benchmark world's seed (that practice world would be the benchmark world itself)."""
    if worlds < 0:
        raise ValueError(f"worlds must be >= 0, got {worlds}")
    seeds = range(first_seed, first_seed + worlds)
    if benchmark_seed in seeds:
        raise ValueError(f"practice seeds {first_seed}..{first_seed + worlds - 1} include the "
                         f"benchmark world's seed {benchmark_seed}: that practice world would "
                         "be the benchmark world")
    return seeds


def practice_trajectories(base: WorldConfig, *, worlds: int, first_seed: int,
                          splits: Iterable[str] = ("train",), top_k: int = 3,
                          max_passage_tokens: int | None = None,
                          avoid_names: Iterable[str] = ()) -> pd.DataFrame:
    """Gold chats (GOLD_COLUMNS) of ``worlds`` worlds shaped like ``base`` with seeds
    ``first_seed, first_seed + 1, ...``, questions of ``splits`` only.

    Ids are ``practice<seed>-<question id>`` so that they never collide with the benchmark
    world's. A practice chat whose question or answer names one of ``avoid_names`` (the
    benchmark world's entities: the name generator can repeat a name) is dropped, so the
    warm start never learns a false fact about a benchmark entity.
    """
    from tirl.core.tools.search import build_search_tool

    seeds = practice_seeds(first_seed, worlds, base.seed)
    wanted = list(splits)
    avoid = _mentions(avoid_names)
    frames, dropped = [], 0
    for seed in seeds:
        cfg = dataclasses.replace(base, seed=seed, questions={
            s: counts for s, counts in base.questions.items() if s in wanted})
        world = generate_world(cfg)
        questions = world.questions
        if avoid is not None:
            clash = [bool(avoid.search(q)) or any(avoid.search(a) for a in answers)
                     for q, answers in zip(questions["question"], questions["answers"])]
            dropped += sum(clash)
            questions = questions[[not c for c in clash]]
        tool = build_search_tool(world.corpus, kind="bm25", top_k=top_k,
                                 max_passage_tokens=max_passage_tokens)
        gold = searched_gold_trajectories(questions, world.plans, tool, splits=wanted,
                                          fallback_to_question=False)
        gold["id"] = [f"practice{seed}-{i}" for i in gold["id"]]
        gold["question_id"] = [f"practice{seed}-{q}" for q in gold["question_id"]]
        frames.append(gold)
    out = (pd.concat(frames, ignore_index=True) if frames
           else pd.DataFrame(columns=list(GOLD_COLUMNS)))
    log.info("practice worlds: %d worlds, %d chats (%d dropped for naming a benchmark entity)",
             worlds, len(out), dropped)
    return out[list(GOLD_COLUMNS)]
