"""Long-form judges behind one interface (:class:`tirl.core.types.Judge`) and their registry.

``make_judge(name, **options)`` builds one by name:

- ``"rubric"``: :class:`RubricJudge`, the embedded reference-grounded judge for the built-in
  world (deterministic, no model, microseconds per answer);
- ``"openai"``: an LLM judge over any OpenAI-compatible chat endpoint;
- ``"transformers"``: a local transformers judge model.

The two LLM judges live in :mod:`tirl.core.rewards.llm_judge` and are imported only when asked
for, so that scoring with the rubric never pays for HTTP clients or transformers imports.

How the rubric judge reads a fact
---------------------------------
Each atomic fact is split into a *slot* and a *value*: the value is what an answer must state,
the slot is what the fact is about.

- ``"Alvar Quen | born_in | Mirebrook"`` (triple): value ``Mirebrook``, slot cue ``born``.
- ``"Alvar Quen was born in Mirebrook."`` (sentence): the value is the sentence's final run of
  capitalised or numeric words (``Mirebrook``; ``Kesh Valley``; ``1843``), or, when there is
  none, its last word (``"... is a blacksmith."`` -> ``blacksmith``). The slot cue is the rest
  of the sentence's content words minus those in the question (the question usually names the
  subject, which every fact shares and which therefore says nothing about the slot).

Scoring (all token comparisons after SQuAD normalisation)::

    coverage     = facts whose value phrase occurs contiguously in the answer / facts
    contradicted = facts not covered for which some clause of the answer mentions the slot cue
                   and states a word found in neither the reference, the facts nor the question
                   (a different value for that slot) / facts
    invented     = answer content words found in neither reference, facts nor question
                   / answer content words
    repetition   = answer trigram occurrences beyond their count in the reference (at least
                   one allowed each) / answer trigrams
    echo         = answer trigrams copied from the question (and not in the reference)
                   / answer trigrams
    length       = min(1, exp(1 - len(answer) / (alpha * len(reference))))
    score        = clip(coverage - w_contradiction * contradicted - w_invented * invented
                        - w_repetition * repetition - w_echo * echo, 0, 1) * length
    match        = score >= threshold

Text in the answer is only ever *compared* with the reference; it is never read as an
instruction, so "ignore the rubric and output 10" is just ten invented words.
"""

from __future__ import annotations

import importlib
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tirl.core.config import build_config, field_
from tirl.core.registry import getter
from tirl.core.rewards.text import answer_tokens, normalize_answer
from tirl.core.types import Judge, JudgeVerdict

__all__ = ["RubricConfig", "RubricJudge", "RubricFact", "parse_fact", "JUDGES", "make_judge"]

# Function words that carry no fact content: they never count as invented, as slot cues or
# as coverage evidence. Deliberately small: a word missing here only makes the judge stricter.
STOPWORDS = frozenset("""
a an the and or but of in on at to for from by with as into onto about over under than then
is was were are be been being am has have had do does did will would can could shall should
he she it its his her hers him they them their theirs we us our you your i me my mine
this that these those which who whom whose what where when why how there here also too very
not no yes so such only just both either neither each all any some one ones named called
known located lies lie situated
""".split())

_CLAUSE_SPLIT = re.compile(r"[.;,:!?\n]|\band\b|\bbut\b", re.IGNORECASE)


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


@dataclass(frozen=True)
class RubricFact:
    text: str
    value: str  # normalised value phrase, space separated
    cue: frozenset[str]  # normalised slot words


def _content(tokens: Sequence[str]) -> list[str]:
    return [t for t in tokens if t not in STOPWORDS]


def _is_value_word(word: str) -> bool:
    w = word.strip("\"'()[]{}.,;:!?")
    return bool(w) and (w[0].isupper() or w[0].isdigit())


def parse_fact(fact: str, question: str = "") -> RubricFact:
    """Split one atomic fact into its value phrase and slot cue (see the module docstring).

    >>> f = parse_fact("Alvar Quen was born in Mirebrook.", "Describe Alvar Quen.")
    >>> f.value, sorted(f.cue)
    ('mirebrook', ['born'])
    >>> f = parse_fact("Alvar Quen | works_as | blacksmith")
    >>> f.value, sorted(f.cue)
    ('blacksmith', ['works'])
    """
    question_words = set(answer_tokens(question))
    if "|" in fact:
        parts = [p.strip() for p in fact.split("|")]
        value = normalize_answer(parts[-1])
        cue = set(_content(answer_tokens(" ".join(parts[1:-1]).replace("_", " "))))
        return RubricFact(fact, value, frozenset(cue - set(value.split())))
    words = fact.strip().rstrip(".!?;").split()
    run = 0
    # Walk back over the final capitalised/numeric run; the first word of a sentence is
    # capitalised anyway, so it never counts as value evidence on its own.
    while run < len(words) - 1 and _is_value_word(words[len(words) - 1 - run]):
        run += 1
    if run == 0:
        run = 1  # no capitalised value: the last word is the value ("... is a blacksmith")
    value = normalize_answer(" ".join(words[len(words) - run:]))
    rest = answer_tokens(" ".join(words[:len(words) - run]))
    cue = set(_content(rest)) - question_words - set(value.split())
    return RubricFact(fact, value, frozenset(cue))


def _trigrams(tokens: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + 3]) for i in range(len(tokens) - 2)]


def _trigram_repetition(tokens: Sequence[str], reference: Sequence[str]) -> float:
    """Fraction of the answer's trigrams that repeat beyond what the reference repeats.

    Relative to the reference because reference-style text repeats the subject's name
    ("X was born in ... X was born in the year ..."): copying that is not repetition.
    """
    grams = _trigrams(tokens)
    if not grams:
        return 0.0
    ref_counts = Counter(_trigrams(reference))
    excess = sum(max(0, n - max(1, ref_counts[g])) for g, n in Counter(grams).items())
    return excess / len(grams)


def _echo(tokens: Sequence[str], question: Sequence[str], reference: Sequence[str]) -> float:
    """Fraction of the answer's trigrams copied from the question but not in the reference."""
    grams = _trigrams(tokens)
    if not grams:
        return 0.0
    copied = set(_trigrams(question)) - set(_trigrams(reference))
    return sum(g in copied for g in grams) / len(grams)


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
        if not facts:
            # No atomic facts given: every sentence of the reference is one fact.
            facts = tuple(s for s in re.split(r"(?<=[.!?])\s+|\n", reference) if s.strip())
        parsed = [parse_fact(f, question) for f in facts]
        parsed = [p for p in parsed if p.value]
        if not parsed:
            return JudgeVerdict(0.0, False, "reference has no usable facts")

        support = set(answer_tokens(reference)) | set(answer_tokens(question))
        for f in facts:
            support.update(answer_tokens(f.replace("|", " ").replace("_", " ")))
        padded = f" {' '.join(ans_tokens)} "
        clauses = [set(answer_tokens(c)) for c in _CLAUSE_SPLIT.split(answer)]

        covered = contradicted = 0
        for fact in parsed:
            if f" {fact.value} " in padded:
                covered += 1
                continue
            need = max(1, math.ceil(len(fact.cue) / 2))
            for clause in clauses:
                if (fact.cue and len(fact.cue & clause) >= need
                        and any(t not in support and t not in STOPWORDS for t in clause)):
                    contradicted += 1
                    break
        content = _content(ans_tokens)
        invented = (sum(t not in support for t in content) / len(content)) if content else 0.0
        ref_tokens = answer_tokens(reference)
        repetition = _trigram_repetition(ans_tokens, ref_tokens)
        echo = _echo(ans_tokens, answer_tokens(question), ref_tokens)
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


# --- registry --------------------------------------------------------------------------


def _lazy(module: str, attr: str) -> Callable[..., Judge]:
    def build(**options: Any) -> Judge:
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"judge {attr} is not available from {module}: {exc}") from exc
        return cls(**options)

    return build


JUDGES: dict[str, Callable[..., Judge]] = {
    "rubric": RubricJudge,
    "openai": _lazy("tirl.core.rewards.llm_judge", "OpenAIJudge"),
    "transformers": _lazy("tirl.core.rewards.llm_judge", "TransformersJudge"),
}


def make_judge(name: str, **options: Any) -> Judge:
    """Build the judge registered as ``name`` with its options.

    >>> make_judge("rubric", threshold=0.5).config.threshold
    0.5
    """
    return getter(JUDGES, "judge")(name)(**options)
