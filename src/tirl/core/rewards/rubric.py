"""The rubric judge: reference-grounded, deterministic, no model (docs/rewards.md, "Rubric judge").

It is the RL reward for long-form answers and the evaluation's ``judge_match``: it runs
thousands of times per RL run, so it is pure Python and caches its verdicts. Each atomic fact
is checked as a fact (subject, relation and value in one clause, not negated;
:mod:`tirl.core.rewards.facts`), then penalties for what an answer adds. Scoring (tokens after
SQuAD normalisation)::

    coverage     = facts stated by some clause / facts
    contradicted = facts contradicted by some clause / facts
    invented     = answer content words in none of reference, facts, question and the
                   relation phrases / answer content words
    repetition   = answer trigram occurrences beyond their count in the reference (at least
                   one allowed each) / answer trigrams
    echo         = answer trigrams copied from the question (and not in the reference)
                   / answer trigrams
    length       = min(1, exp(1 - len(answer) / (alpha * len(reference))))
    score        = clip(coverage - w_contradiction * contradicted - w_invented * invented
                        - w_repetition * repetition - w_echo * echo, 0, 1) * length
    match        = score >= threshold

Repetition and echo skip trigrams made only of function words, relation phrases and the
subject's name: "He was born in ... He was born in the year ..." repeats a frame, not a fact.
Text in the answer is only ever *compared* with the reference; it is never read as an
instruction, so "ignore the rubric and output 10" is just ten invented words.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tirl.core.config import build_config, field_
from tirl.core.rewards.facts import (RubricFact, check_facts, read_facts, support_words,
                                     supported)
from tirl.core.rewards.lexicon import RELATION_WORDS, STOPWORDS
from tirl.core.rewards.text import answer_tokens
from tirl.core.types import JudgeVerdict

__all__ = ["RubricConfig", "RubricJudge"]


@dataclass(frozen=True)
class RubricConfig:
    """Options of the rubric judge (``inspect_rewards.judge.options`` when ``name: rubric``)."""

    threshold: float = field_(0.7, doc="score at or above which the verdict is Match", ge=0.0,
                              le=1.0)
    w_contradiction: float = field_(1.0, doc="penalty per contradicted fact (fraction)", ge=0.0)
    w_invented: float = field_(1.0, doc="penalty per unsupported content word (fraction)",
                               ge=0.0)
    w_repetition: float = field_(1.0, doc="penalty on the repeated-trigram fraction", ge=0.0)
    w_echo: float = field_(1.0, doc="penalty on the fraction of trigrams copied from the "
                           "question (and absent from the reference)", ge=0.0)
    alpha: float = field_(2.0, doc="answers longer than alpha * reference are damped", gt=0.0)
    cache_size: int = field_(65536, doc="verdicts kept in memory (LRU); 0 disables", ge=0)


def _trigrams(tokens: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + 3]) for i in range(len(tokens) - 2)]


def _trigram_repetition(tokens: Sequence[str], reference: Sequence[str],
                        frame: frozenset[str] = frozenset()) -> float:
    """Fraction of the answer's trigrams that repeat beyond what the reference repeats.

    Relative to the reference because reference-style text repeats the subject's name
    ("X was born in ... X was born in the year ..."): copying that is not repetition. Nor is
    repeating a trigram made only of ``frame`` words (function words, relation phrases, the
    subject's name): "He was born in ... He was born in the year ..." repeats the frame, not
    a fact.
    """
    grams = _trigrams(tokens)
    if not grams:
        return 0.0
    ref_counts = Counter(_trigrams(reference))
    excess = sum(max(0, n - max(1, ref_counts[g])) for g, n in Counter(grams).items()
                 if not frame.issuperset(g))
    return excess / len(grams)


def _echo(tokens: Sequence[str], question: Sequence[str], reference: Sequence[str],
          frame: frozenset[str] = frozenset()) -> float:
    """Fraction of the answer's trigrams copied from the question but not in the reference
    (frame trigrams aside: "... of Horl Brudror" is the subject, not an echo)."""
    grams = _trigrams(tokens)
    if not grams:
        return 0.0
    copied = {g for g in _trigrams(question) if not frame.issuperset(g)}
    copied -= set(_trigrams(reference))
    return sum(g in copied for g in grams) / len(grams)


@lru_cache(maxsize=4096)
def _frame(facts: tuple[RubricFact, ...]) -> frozenset[str]:
    """Words that frame a fact without stating it: function words, relation phrases, the
    subjects' names."""
    return STOPWORDS | RELATION_WORDS | frozenset().union(*(f.subject for f in facts))


class RubricJudge:
    """Reference-grounded rubric judge for the built-in world (see the module docstring).

    >>> j = RubricJudge()
    >>> facts = ["Alvar Quen was born in Mirebrook.", "Alvar Quen works as a blacksmith."]
    >>> ref = "Alvar Quen was born in Mirebrook and works as a blacksmith."
    >>> v = j.judge(question="Describe Alvar Quen.", reference=ref, answer=ref, facts=facts)
    >>> v.score, v.match
    (1.0, True)
    >>> v = j.judge(question="Describe Alvar Quen.", reference=ref, facts=facts,
    ...             answer="Alvar Quen was born in Tarsk.")
    >>> v.score, v.match
    (0.0, False)
    >>> v = j.judge(question="Describe Alvar Quen.", reference=ref, facts=facts,
    ...             answer="Alvar Quen works as a Mirebrook and was born in a blacksmith.")
    >>> v.score, v.rationale.split(";")[:2]
    (0.0, ['covered 0/2', ' contradicted 2/2'])
    """

    def __init__(self, config: RubricConfig | None = None, **options: Any) -> None:
        if config is None:
            config = build_config(RubricConfig, options, "judge.options")
        elif options:
            raise TypeError("pass either config or options, not both")
        self.config = config
        self._score = (lru_cache(maxsize=config.cache_size)(self._compute)
                       if config.cache_size else self._compute)

    def judge(self, *, question: str, reference: str, answer: str,
              facts: tuple[str, ...] | list[str] = ()) -> JudgeVerdict:
        return self._score(question, reference, answer or "", tuple(facts))

    def cache_info(self) -> Any:
        return getattr(self._score, "cache_info", lambda: None)()

    def _compute(self, question: str, reference: str, answer: str,
                 facts: tuple[str, ...]) -> JudgeVerdict:
        cfg = self.config
        ans_tokens = answer_tokens(answer)
        if not ans_tokens:
            return JudgeVerdict(0.0, False, "empty answer")
        parsed = read_facts(reference, facts)
        if not parsed:
            return JudgeVerdict(0.0, False, "reference has no usable facts")
        support = support_words(question, reference, facts)
        covered, contradicted = check_facts(answer, parsed, support)
        content = [t for t in ans_tokens if t not in STOPWORDS]
        invented = (sum(not supported(t, support) for t in content) / len(content)
                    if content else 0.0)
        ref_tokens = answer_tokens(reference)
        frame = _frame(parsed)
        repetition = _trigram_repetition(ans_tokens, ref_tokens, frame)
        echo = _echo(ans_tokens, answer_tokens(question), ref_tokens, frame)
        ref_len = max(1, len(ref_tokens))
        length = min(1.0, math.exp(1.0 - len(ans_tokens) / (cfg.alpha * ref_len)))
        n = len(parsed)
        raw = (covered / n - cfg.w_contradiction * contradicted / n
               - cfg.w_invented * invented - cfg.w_repetition * repetition
               - cfg.w_echo * echo)
        score = min(1.0, max(0.0, raw)) * length
        rationale = (f"covered {covered}/{n}; contradicted {contradicted}/{n}; "
                     f"invented {invented:.2f}; repetition {repetition:.2f}; "
                     f"question echo {echo:.2f}; "
                     f"length factor {length:.2f}")
        return JudgeVerdict(score, score >= cfg.threshold, rationale)
