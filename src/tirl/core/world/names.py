"""Fictional names made of random syllables, and near-miss variants of them.

Names are built from syllables so that no fact about them can be memorised from
pretraining: an agent must search to answer. Distractor names differ from a real name by one
or two characters so that lexical retrieval (BM25) sees near collisions and has to rank the
exact name first.
"""

from __future__ import annotations

import random

ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "k", "kl", "l", "m", "n", "p", "pr",
          "r", "s", "st", "t", "tr", "v", "z", "th", "sh", "h", "j")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "ar", "or", "el", "an")
CODAS = ("", "", "", "n", "r", "l", "s", "m", "k", "th")
CITY_SUFFIXES = ("ton", "holm", "burg", "ford", "vale", "mouth", "stad", "wick", "port")
COUNTRY_SUFFIXES = ("ia", "land", "stan", "ora", "esh", "avia")
COMPANY_KINDS = ("Industries", "Labs", "Works", "Systems", "Motors", "Foods", "Textiles",
                 "Shipping", "Mining", "Pharma")
UNIVERSITY_KINDS = ("University", "Institute", "College", "Academy")
_SWAP_VOWELS = "aeiou"
_SWAP_CONSONANTS = "bdfgklmnprstvz"


def word(rng: random.Random, syllables: int) -> str:
    """A capitalised pseudo-word of ``syllables`` onset+vowel(+coda) syllables."""
    parts = []
    for i in range(syllables):
        coda = rng.choice(CODAS) if i == syllables - 1 else ""
        parts.append(rng.choice(ONSETS) + rng.choice(VOWELS) + coda)
    return "".join(parts).capitalize()


def person_name(rng: random.Random) -> str:
    return f"{word(rng, rng.choice((1, 2)))} {word(rng, rng.choice((2, 3)))}"


def city_name(rng: random.Random) -> str:
    return word(rng, rng.choice((1, 2))) + rng.choice(CITY_SUFFIXES)


def country_name(rng: random.Random) -> str:
    return word(rng, 2) + rng.choice(COUNTRY_SUFFIXES)


def company_name(rng: random.Random) -> str:
    return f"{word(rng, 2)} {rng.choice(COMPANY_KINDS)}"


def university_name(rng: random.Random) -> str:
    return f"{word(rng, 2)} {rng.choice(UNIVERSITY_KINDS)}"


NAME_MAKERS = {
    "person": person_name,
    "city": city_name,
    "country": country_name,
    "company": company_name,
    "university": university_name,
}


def near_miss(rng: random.Random, name: str, edits: int) -> str:
    """``name`` with ``edits`` (1 or 2) single-character substitutions in its first word.

    Only letters of the first word change (for companies and universities the last word is
    the kind, shared by many entities, so changing it would not make a near miss). Vowels are
    swapped for vowels and consonants for consonants so the variant stays pronounceable.
    """
    first, sep, rest = name.partition(" ")
    chars = list(first)
    positions = [i for i, c in enumerate(chars) if c.lower() in _SWAP_VOWELS + _SWAP_CONSONANTS]
    for pos in rng.sample(positions, min(edits, len(positions))):
        c = chars[pos]
        pool = _SWAP_VOWELS if c.lower() in _SWAP_VOWELS else _SWAP_CONSONANTS
        new = rng.choice([p for p in pool if p != c.lower()])
        chars[pos] = new.upper() if c.isupper() else new
    return "".join(chars) + sep + rest
