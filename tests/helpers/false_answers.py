"""Honest and false long-form answers to the built-in world's questions, for the judge tests.

Rendered from the world's own sentence templates (``tirl.core.world.templates``), so that an
honest paraphrase is worded as the corpus words it, and a false answer differs from a true one
only in which value sits in which slot, or in a "not": exactly what a judge that looks for
words present somewhere in the answer cannot see (issue 15, item 2).

- honest: the reference; its sentences reversed; the facts in the corpus's other wordings; one
  merged sentence; later sentences with a pronoun; one fact missing (the bar every false
  answer must stay below);
- false: two values swapped between slots, every value moved one slot on (permuted), the facts
  negated (all, or just one), the bare list of values (salad), with and without the subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tirl.core.world import templates as T
from tirl.core.world.corpus import canonical_fact, render_value

HONEST = ("reference", "reordered", "corpus_wording", "merged", "pronoun")
FALSE = ("swapped", "permuted", "negated", "one_negated", "salad", "salad_with_subject")

# The first auxiliary of each canonical sentence, and its negation.
_NEGATIONS = ((" is ", " is not "), (" was ", " was not "), (" works for ", " does not work for "),
              (" studied at ", " did not study at "))


@dataclass(frozen=True)
class LongQuestion:
    """A long-form question with what it asks about: subject name and (relation, value)s."""

    record: dict[str, Any]
    name: str
    slots: tuple[tuple[str, str], ...]  # (relation, rendered value), in the facts' order


def long_questions(world: Any) -> list[LongQuestion]:
    """The world's long-form questions with their subject and slots (from the kb)."""
    ents = {e["id"]: e for e in world.kb["entities"]}
    by_name = {e["name"]: eid for eid, e in ents.items() if e["distractor_of"] is None}
    out = []
    for q in world.questions.to_dict("records"):
        if q["task"] != "long":
            continue
        eid = by_name[world.plans[q["id"]]["queries"][0]]
        rels = [rel for f in q["facts"] for rel in ents[eid]["facts"]
                if canonical_fact(ents, eid, rel) == f]
        slots = tuple((rel, render_value(ents, ents[eid]["facts"][rel])) for rel in rels)
        out.append(LongQuestion(dict(q), ents[eid]["name"], slots))
    return out


def negate(sentence: str) -> str:
    for old, new in _NEGATIONS:
        if old in sentence:
            return sentence.replace(old, new, 1)
    raise ValueError(f"no auxiliary to negate in {sentence!r}")


def _say(rel: str, name: str, value: str, wording: int = 0) -> str:
    return T.sentence(T.SENTENCES[rel][wording], name, value)


def _noun(rel: str, name: str, value: str) -> str:
    return f"the {T.MULTI_NOUNS[rel]} of {name} is {value}"


def _state(q: LongQuestion, values: list[str]) -> str:
    """The question's slots filled with ``values``, worded as its reference is."""
    rels = [rel for rel, _ in q.slots]
    if q.record["qtype"] == "multi_question":
        a, b = (_noun(r, q.name, v) for r, v in zip(rels, values))
        return f"{a[0].upper()}{a[1:]}, and {b}."
    return " ".join(_say(r, q.name, v) for r, v in zip(rels, values))


def answers(q: LongQuestion) -> dict[str, str]:
    """Every honest and false answer to ``q``, by case name (HONEST + FALSE + one_missing)."""
    rels = [rel for rel, _ in q.slots]
    values = [v for _, v in q.slots]
    canonical = [_say(r, q.name, v) for r, v in q.slots]
    merged = [_say(r, "", v).strip().rstrip(".") for r, v in q.slots]
    out = {
        "reference": q.record["answers"][0],
        "reordered": " ".join(reversed(canonical)),
        "corpus_wording": " ".join(_say(r, q.name, v, 1 + i % 2) for i, (r, v)
                                   in enumerate(q.slots)),
        "merged": f"{q.name} {', '.join(merged[:-1])} and {merged[-1]}.",
        "pronoun": " ".join([canonical[0]] + [_say(r, "It" if r.startswith("founded")
                                                   or r == "headquartered_in" else "He", v)
                                              for r, v in q.slots[1:]]),
        "one_missing": (_state(q, values)[:-1].split(", and ")[0] + "."
                        if q.record["qtype"] == "multi_question" else " ".join(canonical[:-1])),
        "swapped": _state(q, [values[1], values[0]] + values[2:]),
        "permuted": " ".join(_say(r, q.name, v) for r, v in zip(rels, values[1:] + values[:1])),
        "negated": " ".join(negate(s) for s in canonical),
        "one_negated": " ".join([negate(canonical[0])] + canonical[1:]),
        "salad": ", ".join(values),
        "salad_with_subject": f"{q.name}: {', '.join(values)}.",
    }
    return out
