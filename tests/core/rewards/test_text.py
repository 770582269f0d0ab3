"""Answer metrics and the length-aware BLEU: hand-worked values and the properties
docs/rewards.md lists."""

from __future__ import annotations

import doctest
import math

import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

import tirl.core.rewards.text as text_mod
from tirl.core.rewards.text import (
    exact_match,
    length_aware_bleu,
    normalize_answer,
    token_f1,
)

# Words that survive SQuAD normalisation unchanged (lowercase, no punctuation, no articles).
WORDS = st.sampled_from(["paris", "london", "river", "kesh", "valley", "old", "mill", "born",
                         "mirebrook", "tarsk", "1843", "blue", "north", "quen", "alvar"])


def sacre_bleu4(hyp: str, ref: str) -> float:
    return sacrebleu.sentence_bleu(hyp, [ref], smooth_method="exp", tokenize="none",
                                   use_effective_order=True).score / 100.0


def test_doctests() -> None:
    result = doctest.testmod(text_mod)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("raw, norm", [
    ("The Eiffel Tower", "eiffel tower"),
    ("  A   cat,  an owl; the END. ", "cat owl end"),
    ("Theatre", "theatre"),            # article only removed as a whole word
    ("U.S.A.", "usa"),
    ("", ""),
])
def test_normalize_answer(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


def test_exact_match_max_over_golds_and_empty() -> None:
    assert exact_match("paris!", ["London", "The Paris"]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    assert exact_match("", ["", "Paris"]) == 0.0
    assert exact_match(None, ["Paris"]) == 0.0
    assert exact_match("the", ["a"]) == 0.0  # both normalise to empty: still no match
    assert exact_match("Paris", "paris") == 1.0  # a bare string is one gold


def test_token_f1_hand_worked() -> None:
    # hyp tokens: eiffel tower in paris (4); ref: eiffel tower (2); common 2
    # precision 0.5, recall 1.0 -> F1 = 2/3
    assert token_f1("Eiffel Tower in Paris", ["nothing", "The Eiffel Tower"]) == \
        pytest.approx(2 / 3)
    assert token_f1("x", ["y"]) == 0.0
    assert token_f1("", ["y"]) == 0.0


def test_one_word_exact_is_one_while_bleu4_is_near_zero() -> None:
    assert length_aware_bleu("Mirebrook", ["mirebrook"]) == 1.0
    assert length_aware_bleu("Kesh Valley", ["the kesh valley"]) == 1.0
    # Plain sentence BLEU-4 (fixed order 4) gives a one- or two-word exact answer ~0.
    for short in ("mirebrook", "kesh valley"):
        plain = sacrebleu.sentence_bleu(short, [short], tokenize="none",
                                        use_effective_order=False).score / 100
        assert plain < 1e-6
    assert length_aware_bleu("Mirebrook", ["Mirebrook", "other gold"]) == 1.0


def test_two_word_reference_hand_worked() -> None:
    # ref "kesh valley" (order 2), hyp "kesh river": p1 = 1/2, p2 = 0/1 -> exp smoothing
    # gives 100 / (2 * 1) = 50 %; BLEU = sqrt(0.5 * 0.5) = 0.5; no length penalty (2 <= 4).
    assert length_aware_bleu("Kesh river", ["the Kesh Valley"]) == pytest.approx(0.5)


def test_long_answer_penalty_hand_worked() -> None:
    # ref "paris" (1 token), hyp 4 tokens with one hit: BLEU-1 = 1/4, penalty
    # exp(1 - 4 / 2) = e^-1 -> 0.25 / e.
    assert length_aware_bleu("paris london berlin rome", ["Paris"]) == \
        pytest.approx(0.25 * math.exp(-1))


@pytest.mark.parametrize("hyp", ["", "   ", "the", None, "?!"])
def test_empty_answer_scores_zero(hyp) -> None:
    assert length_aware_bleu(hyp, ["Paris"]) == 0.0


def test_max_over_references_and_bad_alpha() -> None:
    assert length_aware_bleu("kesh valley", ["tarsk", "Kesh Valley"]) == 1.0
    with pytest.raises(ValueError, match="alpha"):
        length_aware_bleu("x", ["x"], alpha=0)


@settings(max_examples=150, deadline=None)
@given(ref=st.lists(WORDS, min_size=4, max_size=10), hyp=st.lists(WORDS, min_size=4,
                                                                    max_size=20))
def test_equals_sacrebleu_bleu4_on_long_answers(ref: list[str], hyp: list[str]) -> None:
    if len(hyp) > 2 * len(ref):
        hyp = hyp[:2 * len(ref)]
    h, r = " ".join(hyp), " ".join(ref)
    assert length_aware_bleu(h, [r]) == pytest.approx(min(1.0, sacre_bleu4(h, r)), abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(ref=st.lists(WORDS, min_size=1, max_size=6), extra=st.lists(WORDS, max_size=6),
       pad=st.lists(st.sampled_from(["filler", "zzz", "qqq", "lorem"]), min_size=1,
                    max_size=30))
def test_padding_never_raises_the_score(ref: list[str], extra: list[str],
                                        pad: list[str]) -> None:
    # Padding = appending words the reference does not contain. Once the hypothesis is at
    # least as long as the reference (no brevity penalty left to undo) it can only lower
    # the score; padding an exact answer always lowers it strictly.
    hyp = ref + extra  # >= len(ref)
    r, h = " ".join(ref), " ".join(hyp)
    base = length_aware_bleu(h, [r])
    padded = length_aware_bleu(h + " " + " ".join(pad), [r])
    assert padded <= base + 1e-12
    assert length_aware_bleu(r + " " + " ".join(pad), [r]) < 1.0


@settings(max_examples=100, deadline=None)
@given(ref=st.lists(WORDS, min_size=1, max_size=6), hyp=st.lists(WORDS, max_size=30))
def test_bounded_and_long_answers_damped(ref: list[str], hyp: list[str]) -> None:
    r, h = " ".join(ref), " ".join(hyp)
    score = length_aware_bleu(h, [r])
    assert 0.0 <= score <= 1.0
    # whatever its content, an answer beyond alpha * len(ref) is capped by the penalty
    assert score <= min(1.0, math.exp(1 - len(hyp) / (2 * len(ref)))) + 1e-12
