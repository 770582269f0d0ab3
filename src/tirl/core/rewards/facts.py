"""Atomic facts, and the clauses of an answer that state or contradict them: how the rubric
judge (:mod:`tirl.core.rewards.rubric`) checks each fact *as a fact*, its subject, relation
and value stated together in one clause and not negated, rather than as words present
somewhere in the answer ("the occupation of X is Rarlholm, and the birthplace of X is
architect" holds every value of the reference and states none of its facts).

How a fact is read
------------------
- value: for a triple ``"Alvar Quen | born_in | Mirebrook"`` its last field; for a sentence
  the final run of capitalised or numeric words (``Mirebrook``; ``Kesh Valley``; ``1843``),
  else its last word (``"... is a blacksmith."`` -> ``blacksmith``);
- subject: the triple's first field, or the sentence's other capitalised words (``Alvar Quen``);
- relation: its *kinds*, the entries of :data:`RELATIONS` whose phrases it contains ("born
  in", "works for"; a triple's field when it is one, ``born_in``), with those of the reference
  clause that holds its value alone (a multi-question reference says "the birthplace of X is
  ..."); its *cue*, the content words left over (``member``); and, when there is nothing else
  (``"X is a blacksmith."``), the *copula* before the value. A phrase can name two kinds
  ("born in": place or year); a fact drops the kinds that another fact holds alone.

How an answer is read
---------------------
Sentences, split into clauses at ``, ; :`` (not inside numbers) and "and"/"but". A clause
*states* a fact when
- its sentence names the subject (a word of the name, or a pronoun);
- the clause holds the value phrase and words the relation: a phrase of one of its kinds,
  half of its cue words, or for a copula fact "is"/"was" right before the value or a relation
  that no fact of the question holds ("works as");
- no relation phrase in the clause belongs to another slot whose value is absent from it
  ("X was born in Mirebrook in 1843" states two facts; "the birthplace of X is blacksmith"
  none);
- and the clause is not negated ("not", "never", "isn't", ...).

A clause *contradicts* a fact when it would state it but is negated, or when it words the
fact's relation with something else where the value should be: another slot's value that the
clause does not word, or a word found in none of reference, facts and question.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from tirl.core.rewards.lexicon import (COPULA_KINDS, COPULAS, MAX_PHRASE, NEGATIONS,
                                       PHRASE_STARTS, PHRASES, PRONOUNS, RELATION_WORDS,
                                       RELATIONS, STOPWORDS)
from tirl.core.rewards.text import answer_tokens

__all__ = ["RubricFact", "check_facts", "parse_fact", "read_facts", "support_words",
           "supported"]

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
# Clause breaks; a comma or full stop between two digits ("12,400", "3.5") is no break.
_CLAUSE_SPLIT = re.compile(r"[;:!?\n]|[.,](?!\d)|(?<!\d)[.,]|\band\b|\bbut\b", re.IGNORECASE)


@dataclass(frozen=True)
class RubricFact:
    """One atomic fact as the rubric reads it (see the module docstring)."""

    text: str
    subject: frozenset[str]  # normalised subject words; empty: any clause may state it
    value: tuple[str, ...]  # normalised value phrase
    kinds: frozenset[str]  # RELATIONS entries that word the relation
    cue: frozenset[str]  # remaining relation content words
    copula: bool = False  # "is" before the value words it ("X is a blacksmith")


def _content(tokens: Sequence[str]) -> list[str]:
    return [t for t in tokens if t not in STOPWORDS]


def _is_value_word(word: str) -> bool:
    w = word.strip("\"'()[]{}.,;:!?")
    return bool(w) and (w[0].isupper() or w[0].isdigit())


def _find(tokens: tuple[str, ...], phrase: tuple[str, ...]) -> int | None:
    """Start of the first occurrence of ``phrase`` in ``tokens``, or None."""
    if not phrase:
        return None
    n, i = len(phrase), -1
    while True:
        try:
            i = tokens.index(phrase[0], i + 1)
        except ValueError:
            return None
        if tokens[i:i + n] == phrase:
            return i


def _relation_spans(tokens: tuple[str, ...], masked: frozenset[int] = frozenset()
                    ) -> list[tuple[int, int, frozenset[str]]]:
    """(start, end, kinds) of each relation phrase in ``tokens`` (leftmost longest match, no
    overlaps), skipping phrases that touch a masked position (a value or a subject word: a
    company called "Capital Works" is not a capital)."""
    spans, i = [], 0
    while i < len(tokens):
        if tokens[i] not in PHRASE_STARTS:
            i += 1
            continue
        for n in range(min(MAX_PHRASE, len(tokens) - i), 0, -1):
            kinds = PHRASES.get(tokens[i:i + n])
            if kinds is not None and not masked.intersection(range(i, i + n)):
                spans.append((i, i + n, kinds))
                i += n
                break
        else:
            i += 1
    return spans


def parse_fact(fact: str) -> RubricFact:
    """Read one atomic fact as subject, relation and value (see the module docstring).

    >>> f = parse_fact("Alvar Quen was born in Mirebrook.")
    >>> sorted(f.subject), f.value, sorted(f.kinds)
    (['alvar', 'quen'], ('mirebrook',), ['birth_year', 'born_in'])
    >>> f = parse_fact("Alvar Quen | works_for | Iron Guild")
    >>> sorted(f.subject), f.value, sorted(f.kinds)
    (['alvar', 'quen'], ('iron', 'guild'), ['works_for'])
    >>> parse_fact("Alvar Quen is a blacksmith.").copula
    True
    """
    if "|" in fact:
        parts = [p.strip() for p in fact.split("|")]
        subject = frozenset(_content(answer_tokens(parts[0])))
        relation = " ".join(parts[1:-1])
        value = answer_tokens(parts[-1])
        rel_tokens = answer_tokens(relation.replace("_", " "))
        named = frozenset({relation}) if relation in RELATIONS else None
    else:
        words = fact.strip().rstrip(".!?;").split()
        run = 0
        # Walk back over the final capitalised/numeric run; the first word of a sentence is
        # capitalised anyway, so it never counts as value evidence on its own.
        while run < len(words) - 1 and _is_value_word(words[len(words) - 1 - run]):
            run += 1
        run = max(run, 1)  # no capitalised value: the last word is ("... is a blacksmith")
        value = answer_tokens(" ".join(words[len(words) - run:]))
        rest = words[:len(words) - run]
        subject = frozenset(t for w in rest if _is_value_word(w) for t in answer_tokens(w)
                            if t not in STOPWORDS)
        rel_tokens = tuple(t for t in answer_tokens(" ".join(rest)) if t not in subject)
        named = None
    spans = _relation_spans(rel_tokens)
    kinds = named if named is not None else frozenset().union(*(k for _, _, k in spans))
    phrase_words = {rel_tokens[i] for start, end, _ in spans for i in range(start, end)}
    cue = frozenset(_content(rel_tokens)) - phrase_words - set(value) - subject
    copula = (bool(kinds & COPULA_KINDS)
              or not kinds and not cue and rel_tokens[-1:] in {(c,) for c in COPULAS})
    return RubricFact(fact, subject, value, kinds, cue, copula)


@dataclass
class _Clause:
    tokens: tuple[str, ...]
    words: frozenset[str]
    spans: tuple[frozenset[str], ...]  # kinds of each relation phrase
    objects: tuple[tuple[str, ...] | None, ...]  # the fact value right after each phrase
    negated: bool
    sentence: frozenset[str]  # words of its sentence (with possessive "s" dropped too)
    at: dict[tuple[str, ...], int]  # where each fact value in the clause starts
    apposition: bool = False  # "a"/"an" opens it, right after a clause naming only a subject


def _read_clauses(text: str, facts: Sequence[RubricFact] = ()) -> list[_Clause]:
    masked_words = frozenset().union(*(f.subject for f in facts))
    clauses = []
    for sentence in _SENTENCE_SPLIT.split(text.replace("\u2019", "'")):
        sent_tokens = answer_tokens(sentence)
        sent_words = frozenset(sent_tokens) | {t[:-1] for t in sent_tokens if t.endswith("s")}
        previous: tuple[str, ...] = ()
        for part in _CLAUSE_SPLIT.split(sentence):
            tokens = answer_tokens(part)
            if not tokens:
                continue
            # "Alvar Quen, a blacksmith, ...": an apposition states what the subject is.
            apposition = (part.split()[0].lower() in ("a", "an") and bool(previous)
                          and all(t in masked_words for t in previous))
            previous = tokens
            masked = {i for i, t in enumerate(tokens) if t in masked_words}
            at = {}
            for f in facts:
                i = _find(tokens, f.value)
                if i is not None:
                    at[f.value] = i
                    masked.update(range(i, i + len(f.value)))
            # A "no" inside a name or value ("No Limits Ltd") negates nothing.
            negated = any(t in NEGATIONS for i, t in enumerate(tokens) if i not in masked)
            spans = _relation_spans(tokens, frozenset(masked))
            objects = tuple(next((v for v, i in at.items() if i == end), None)
                            for _, end, _ in spans)
            clauses.append(_Clause(tokens, frozenset(tokens), tuple(k for _, _, k in spans),
                                   objects, negated, sent_words, at, apposition))
    return clauses


def _about(fact: RubricFact, clause: _Clause) -> bool:
    return (not fact.subject or bool(fact.subject & clause.sentence)
            or bool(PRONOUNS & clause.sentence))


def _worded(fact: RubricFact, clause: _Clause, at: int | None, held: frozenset[str]) -> bool:
    """The clause words the fact's relation (``at``: where its value starts, if present;
    ``held``: the kinds the question's facts hold)."""
    if fact.kinds and any(kinds & fact.kinds for kinds in clause.spans):
        return True
    if fact.cue and len(fact.cue & clause.words) >= math.ceil(len(fact.cue) / 2):
        return True
    if fact.copula:
        # "X is a blacksmith" is also worded by a relation no other slot has ("works as").
        if any(not kinds & held for kinds in clause.spans):
            return True
        if at is None:
            return False
        if at == 0 and clause.apposition:
            return True
        j = at - 1
        while j >= 0 and clause.tokens[j] in NEGATIONS - COPULAS:  # "is not a", "isn't a"
            j -= 1
        return j >= 0 and clause.tokens[j] in COPULAS
    return not (fact.kinds or fact.cue)  # nothing to check it against


def _has(clause: _Clause, fact: RubricFact) -> bool:
    return fact.value in clause.at


def _foreign(fact: RubricFact, clause: _Clause, facts: Sequence[RubricFact],
             held: frozenset[str]) -> bool:
    """The clause words another slot whose value it does not hold: it is about that slot."""
    others = [g for g in facts if g is not fact and _has(clause, g)]
    for kinds in clause.spans:
        if kinds & fact.kinds or any(kinds & g.kinds for g in others):
            continue
        if not fact.copula or kinds & held:  # a copula fact may be worded by a free relation
            return True
    return any(g is not fact and (g.cue - fact.cue) & clause.words and g not in others
               for g in facts)


def _misbound(fact: RubricFact, clause: _Clause, facts: Sequence[RubricFact]) -> bool:
    """A phrase of the fact's relation is followed right away by a value of another slot
    that the phrase does not word."""
    for kinds, obj in zip(clause.spans, clause.objects):
        if obj is None or obj == fact.value or not kinds & fact.kinds:
            continue
        if not any(g.value == obj and kinds & g.kinds for g in facts):
            return True
    return False


def _hedged(clause: _Clause, support: frozenset[str]) -> bool:
    """The clause offers an alternative found nowhere in the reference ("Mirebrook or Tarsk")."""
    tokens = clause.tokens
    return any(t == "or" and not all(supported(u, support) for u in _content(tokens[i + 1:i + 3]))
               for i, t in enumerate(tokens))


def _verdicts(fact: RubricFact, clause: _Clause, facts: Sequence[RubricFact],
              support: frozenset[str], held: frozenset[str]) -> tuple[bool, bool]:
    """(states, contradicts) for one fact and one clause."""
    if not _about(fact, clause):
        return False, False
    at = clause.at.get(fact.value)
    if at is not None:
        said = _worded(fact, clause, at, held) and not _foreign(fact, clause, facts, held)
        if said and (_misbound(fact, clause, facts) or _hedged(clause, support)):
            return False, True  # "X born in blacksmith works as Mirebrook", "... or Tarsk"
        return said and not clause.negated, said and clause.negated
    if clause.negated:
        return False, False  # "X was not born in Tarsk" states no value for the slot
    others = [g for g in facts if g is not fact and _has(clause, g)]
    claimed = frozenset().union(*(g.kinds for g in others))
    if any((kinds & fact.kinds) - claimed for kinds in clause.spans):
        slot = True
    elif fact.cue and len(fact.cue & clause.words) >= math.ceil(len(fact.cue) / 2):
        slot = True
    elif fact.copula:  # "X is <something>" or a free relation, and no other slot's
        slot = (all(not kinds & held for kinds in clause.spans)
                and (bool(clause.spans) or any(t in COPULAS for t in clause.tokens[:-1])))
    else:
        slot = False
    if not slot:
        return False, False
    wrong_value = any(not _worded(g, clause, clause.at[g.value], held) for g in others)
    invented = any(not supported(t, support) for t in _content(clause.tokens))
    return False, wrong_value or invented


@lru_cache(maxsize=4096)
def read_facts(reference: str, facts: tuple[str, ...]) -> tuple[RubricFact, ...]:
    """The question's facts with their kinds completed from the reference and disambiguated.

    Without facts, each clause of the reference is one.
    """
    if not facts:
        facts = tuple(p.strip() for s in _SENTENCE_SPLIT.split(reference)
                      for p in _CLAUSE_SPLIT.split(s) if answer_tokens(p))
    parsed = [p for p in map(parse_fact, facts) if p.value]
    # The reference's own wording of a slot ("the birthplace of X is ...") words it too; a
    # reference clause that holds two values says nothing about which phrase is whose.
    clauses = _read_clauses(reference, parsed)
    for i, f in enumerate(parsed):
        extra = [k for c in clauses if _has(c, f) and sum(_has(c, g) for g in parsed) == 1
                 for k in c.spans]
        if extra:
            parsed[i] = RubricFact(f.text, f.subject, f.value, f.kinds.union(*extra), f.cue,
                                   f.copula)
    # A kind that another fact holds alone is that fact's: "born in" in "X was born in
    # Mirebrook" is the birthplace when "X was born in the year 1843" is also a fact.
    sole = {k for f in parsed if len(f.kinds) == 1 for k in f.kinds}
    out = []
    for f in parsed:
        kinds = f.kinds
        if len(kinds) > 1 and (kinds - sole):
            kinds = kinds - sole
        out.append(RubricFact(f.text, f.subject, f.value, kinds, f.cue, f.copula))
    return tuple(out)


@lru_cache(maxsize=4096)
def support_words(question: str, reference: str, facts: tuple[str, ...]) -> frozenset[str]:
    """Words an answer may use without inventing: the reference's, the facts', the
    question's, the relation phrases' and negations (a wording is not a fact; values are)."""
    words = (set(answer_tokens(reference)) | set(answer_tokens(question)) | RELATION_WORDS
             | NEGATIONS)
    for f in facts:
        words.update(answer_tokens(f.replace("|", " ").replace("_", " ")))
    return frozenset(words)


def supported(token: str, support: frozenset[str]) -> bool:
    """``token`` is in ``support``, or is a possessive or plural of a word that is."""
    return token in support or (token.endswith("s") and token[:-1] in support)


def check_facts(answer: str, facts: Sequence[RubricFact], support: frozenset[str]
                ) -> tuple[int, int]:
    """(facts stated by some clause of ``answer``, facts contradicted by some clause).

    >>> given = ("Alvar Quen is a blacksmith.", "Alvar Quen | born_in | Tarsk")
    >>> facts, support = read_facts("", given), support_words("", "", given)
    >>> check_facts("Alvar Quen is a blacksmith, born in Tarsk.", facts, support)
    (2, 0)
    >>> check_facts("Alvar Quen is a Tarsk and was born in a blacksmith.", facts, support)
    (0, 2)
    >>> check_facts("Alvar Quen is not a blacksmith. Tarsk, blacksmith.", facts, support)
    (0, 1)
    """
    clauses = _read_clauses(answer, facts)
    held = frozenset().union(*(f.kinds for f in facts))
    stated = contradicted = 0
    for fact in facts:
        said = [_verdicts(fact, c, facts, support, held) for c in clauses]
        stated += any(s for s, _ in said)
        contradicted += any(x for _, x in said)
    return stated, contradicted
