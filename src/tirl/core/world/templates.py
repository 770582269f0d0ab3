"""Sentence and question templates of the built-in world.

The first template of each relation is the *canonical* sentence used for long-form
references and atomic facts (so the rubric judge sees one fixed wording); passages draw
from all of them so that retrieval and reading are not template matching.
"""

from __future__ import annotations

#: (subject type, relation) -> object type, or "year"/"text" for literal values.
RELATIONS: dict[tuple[str, str], str] = {
    ("person", "occupation"): "text",
    ("person", "born_in"): "city",
    ("person", "birth_year"): "year",
    ("person", "works_for"): "company",
    ("person", "educated_at"): "university",
    ("company", "headquartered_in"): "city",
    ("company", "founded_by"): "person",
    ("company", "founded_year"): "year",
    ("university", "located_in"): "city",
    ("university", "founded_year"): "year",
    ("city", "located_in"): "country",
    ("country", "capital"): "city",
}

OCCUPATIONS = ("chemist", "painter", "engineer", "architect", "novelist", "physician",
               "botanist", "composer", "lawyer", "sculptor", "astronomer", "economist")

SENTENCES: dict[str, tuple[str, ...]] = {
    "occupation": ("{s} is {art} {o}.", "{s} works as {art} {o}.",
                   "By profession, {s} is {art} {o}."),
    "born_in": ("{s} was born in {o}.", "{s} is a native of {o}.", "{o} is the birthplace of {s}."),
    "birth_year": ("{s} was born in the year {o}.", "The birth year of {s} is {o}.",
                   "{s} came into the world in {o}."),
    "works_for": ("{s} works for {o}.", "{s} is employed by {o}.", "{s} has a job at {o}."),
    "educated_at": ("{s} studied at {o}.", "{s} graduated from {o}.", "{s} was educated at {o}."),
    "headquartered_in": ("{s} is headquartered in {o}.", "The headquarters of {s} are in {o}.",
                         "{s} has its head office in {o}."),
    "founded_by": ("{s} was founded by {o}.", "{o} founded {s}.", "{s} was started by {o}."),
    "founded_year": ("{s} was founded in the year {o}.", "{s} was established in {o}.",
                     "{s} dates from the year {o}."),
    "located_in": ("{s} is located in {o}.", "{s} lies in {o}.", "{s} can be found in {o}."),
    "capital": ("The capital of {s} is {o}.", "{o} is the capital city of {s}.",
                "{s} has {o} as its capital."),
}

SINGLE_HOP: dict[tuple[str, str], tuple[str, ...]] = {
    ("person", "occupation"): ("What is the occupation of {s}?", "What does {s} do for a living?"),
    ("person", "born_in"): ("Where was {s} born?", "In which city was {s} born?"),
    ("person", "birth_year"): ("In what year was {s} born?", "When was {s} born?"),
    ("person", "works_for"): ("Which company does {s} work for?", "Who employs {s}?"),
    ("person", "educated_at"): ("Where did {s} study?", "Which school did {s} graduate from?"),
    ("company", "headquartered_in"): ("Where is {s} headquartered?",
                                      "In which city are the headquarters of {s}?"),
    ("company", "founded_by"): ("Who founded {s}?", "Who was the founder of {s}?"),
    ("company", "founded_year"): ("When was {s} founded?", "In what year was {s} established?"),
    ("university", "located_in"): ("In which city is {s}?", "Where is {s} located?"),
    ("university", "founded_year"): ("When was {s} founded?", "In what year was {s} established?"),
    ("city", "located_in"): ("Which country is {s} in?", "In which country is {s} located?"),
    ("country", "capital"): ("What is the capital of {s}?", "Which city is the capital of {s}?"),
}

#: Two-hop compositions used in the in-domain splits.
BRIDGE: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {
    ("person", ("born_in", "located_in")): ("In which country was {s} born?",
                                            "Which country is the birthplace of {s} in?"),
    ("person", ("works_for", "headquartered_in")): (
        "In which city is the employer of {s} headquartered?",
        "Where is the company that {s} works for headquartered?"),
    ("person", ("educated_at", "located_in")): ("In which city did {s} go to school?",
                                                "In which city is the school {s} graduated from?"),
    ("company", ("founded_by", "birth_year")): ("In what year was the founder of {s} born?",
                                                "When was the person who founded {s} born?"),
    ("company", ("headquartered_in", "located_in")): (
        "In which country is {s} headquartered?",
        "Which country are the headquarters of {s} in?"),
}

#: Compositions that never occur in training: the out-of-domain split (Bamboogle-like).
COMPOSITION: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {
    ("company", ("founded_by", "born_in")): ("Where was the founder of {s} born?",),
    ("person", ("works_for", "founded_by")): ("Who founded the company that {s} works for?",),
    ("person", ("born_in", "located_in", "capital")): (
        "What is the capital of the country where {s} was born?",),
    ("person", ("educated_at", "located_in", "located_in")): (
        "In which country did {s} go to school?",),
    ("person", ("works_for", "founded_year")): ("When was the employer of {s} founded?",),
    ("company", ("founded_by", "occupation")): ("What is the occupation of the founder of {s}?",),
}

COMPARISON: dict[tuple[str, str, str], tuple[str, ...]] = {
    # (subject type, year relation, "min"|"max") -> templates
    ("person", "birth_year", "min"): ("Who was born earlier, {a} or {b}?",
                                      "Who is older, {a} or {b}?"),
    ("person", "birth_year", "max"): ("Who was born later, {a} or {b}?",
                                      "Who is younger, {a} or {b}?"),
    ("company", "founded_year", "min"): ("Which company was founded earlier, {a} or {b}?",),
}

#: Long-form multi-question: nouns for the relations a person can be asked about.
MULTI_NOUNS = {
    "occupation": "occupation",
    "born_in": "birthplace",
    "birth_year": "birth year",
    "works_for": "employer",
    "educated_at": "alma mater",
}
DESCRIPTION = ("Describe {s}.", "Tell me about {s}.", "Give a short description of {s}.")


def sentence(template: str, s: str, o: str) -> str:
    """Fill a sentence template; ``{art}`` is the indefinite article for ``o``."""
    return template.format(s=s, o=o, art="an" if o[:1].lower() in "aeiou" else "a")


MULTI = ("What are the {n1} and the {n2} of {s}?", "Tell me the {n1} and the {n2} of {s}.")
