"""Answer normalisation, exact match, token F1 and the length-aware BLEU (docs/rewards.md).

All functions take a hypothesis string and a sequence of gold strings and return the maximum
over the golds, as SQuAD / Search-R1 evaluation does. Normalisation and BLEU scores are cached
because RL groups repeat the same answers many times (``G`` rollouts of one prompt).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from sacrebleu.metrics.bleu import BLEU

__all__ = ["normalize_answer", "answer_tokens", "exact_match", "token_f1", "length_aware_bleu",
           "sentence_bleu_order"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


@lru_cache(maxsize=65536)
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, squeeze whitespace.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    >>> normalize_answer("  An apple a day ")
    'apple day'
    """
    # Same order as the SQuAD v1.1 script: lower, remove punctuation, articles, whitespace.
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> tuple[str, ...]:
    """Normalised tokens of ``text`` (split on spaces after :func:`normalize_answer`)."""
    norm = normalize_answer(text)
    return tuple(norm.split()) if norm else ()


def _as_list(references: str | Sequence[str]) -> Sequence[str]:
    # A bare string is one gold answer, not a sequence of characters.
    return [references] if isinstance(references, str) else references


def exact_match(hypothesis: str | None, references: str | Sequence[str]) -> float:
    """1.0 if the normalised hypothesis equals a normalised gold answer, else 0.0.

    An empty (or ``None``) hypothesis never matches, even an empty gold: an agent that
    answers nothing must not be paid.

    >>> exact_match("the Eiffel Tower.", ["Eiffel Tower", "Paris"])
    1.0
    >>> exact_match("Tower", ["Eiffel Tower"])
    0.0
    """
    if not hypothesis:
        return 0.0
    hyp = normalize_answer(hypothesis)
    if not hyp:
        return 0.0
    return 1.0 if any(hyp == normalize_answer(r) for r in _as_list(references)) else 0.0


def token_f1(hypothesis: str | None, references: str | Sequence[str]) -> float:
    """SQuAD token F1 between normalised token bags, max over gold answers.

    >>> round(token_f1("Eiffel Tower in Paris", ["the Eiffel Tower"]), 4)
    0.6667
    """
    hyp = answer_tokens(hypothesis or "")
    if not hyp:
        return 0.0
    best = 0.0
    hyp_counts = Counter(hyp)
    for ref in _as_list(references):
        ref_toks = answer_tokens(ref)
        if not ref_toks:
            continue
        common = sum((hyp_counts & Counter(ref_toks)).values())
        if common == 0:
            continue
        precision, recall = common / len(hyp), common / len(ref_toks)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


@lru_cache(maxsize=8)
def _bleu(order: int) -> BLEU:
    # One BLEU object per n-gram order: building one costs more than scoring a sentence.
    return BLEU(tokenize="none", smooth_method="exp", effective_order=True,
                max_ngram_order=order)


def sentence_bleu_order(hypothesis: str, reference: str, order: int) -> float:
    """sacrebleu sentence BLEU of ``order`` (tokenize='none', smooth 'exp', effective order),
    in [0, 100], on strings that are already normalised and space-separated."""
    return _bleu(order).sentence_score(hypothesis, [reference]).score


@lru_cache(maxsize=262144)
def _la_bleu_pair(hyp: str, ref: str, alpha: float) -> float:
    """Length-aware BLEU of one normalised hypothesis against one normalised reference."""
    if not hyp or not ref:
        return 0.0
    if hyp == ref:
        return 1.0  # BLEU of order len(ref) is exactly 100 here; skip the work.
    hyp_len, ref_len = hyp.count(" ") + 1, ref.count(" ") + 1
    order = min(4, ref_len)
    # min(): float round-off can put sacrebleu a hair above 100.
    bleu = min(1.0, sentence_bleu_order(hyp, ref, order) / 100.0)
    penalty = min(1.0, math.exp(1.0 - hyp_len / (alpha * ref_len)))
    return bleu * penalty


def length_aware_bleu(hypothesis: str | None, references: str | Sequence[str],
                      alpha: float = 2.0) -> float:
    """Length-aware BLEU in [0, 1], max over gold answers (docs/rewards.md, "Length-aware BLEU").

    Hypothesis and references are SQuAD-normalised and split on spaces; against a reference of
    ``m`` tokens the score is sacrebleu's sentence BLEU of order ``n = min(4, m)``
    (``tokenize='none'``, ``smooth_method='exp'``, ``effective_order=True``) / 100, times the
    long-answer penalty ``min(1, exp(1 - len(hyp) / (alpha * m)))``.

    >>> length_aware_bleu("Paris", ["paris"])          # one-word exact answer
    1.0
    >>> round(length_aware_bleu("Paris France", ["Paris"]), 4)   # 1 of 2 unigrams correct
    0.5
    >>> round(length_aware_bleu("Paris London Berlin Rome", ["Paris"]), 4)  # stuffed
    0.092
    >>> length_aware_bleu("", ["Paris"])
    0.0
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    hyp = normalize_answer(hypothesis) if hypothesis else ""
    if not hyp:
        return 0.0
    return max((_la_bleu_pair(hyp, normalize_answer(r), float(alpha))
                for r in _as_list(references)), default=0.0)
