"""The rubric judge's lexicon (:mod:`tirl.core.rewards.facts`): function words, pronouns,
copulas, negations, and the phrases that word each relation.

Data, not logic: a paraphrase the judge should accept is a phrase added here
(``tests/core/rewards/test_judges.py`` checks that every corpus wording of the built-in world
is read as its relation).
"""

from __future__ import annotations

from tirl.core.rewards.text import answer_tokens

__all__ = ["COPULAS", "COPULA_KINDS", "MAX_PHRASE", "NEGATIONS", "PHRASES", "PHRASE_STARTS",
           "PRONOUNS", "RELATIONS", "RELATION_WORDS", "STOPWORDS"]

# Function words that carry no fact content: they never count as invented, as cues or as
# subjects. Deliberately small: a word missing here only makes the judge stricter.
STOPWORDS = frozenset("""
a an the and or but of in on at to for from by with as into onto about over under than then
is was were are be been being am has have had do does did will would can could shall should
he she it its his her hers him they them their theirs we us our you your i me my mine
this that these those which who whom whose what where when why how there here also too very
not no yes so such only just both either neither each all any some one ones named called
known located lies lie situated
""".split())
PRONOUNS = frozenset("he she it they his her its their him them".split())
COPULAS = frozenset("is was are were isnt wasnt arent werent".split())
# After normalisation ("isn't" -> "isnt"); a typographic apostrophe is dropped first.
NEGATIONS = frozenset("""
not no never nor neither none nobody nothing nowhere cannot cant isnt wasnt arent werent
doesnt dont didnt hasnt havent hadnt wont wouldnt false untrue
""".split())

#: Relation kind -> the phrases that word it: the built-in world's relations (their corpus
#: templates and question nouns, tirl.core.world.templates) and common English paraphrases.
#: The kinds are the world's relation names, so a triple's relation field is one directly.
#: Phrases are written with their articles; they are matched after SQuAD normalisation.
RELATIONS: dict[str, tuple[str, ...]] = {
    "occupation": ("occupation", "profession", "by profession", "works as", "work as",
                   "worked as", "working as"),
    "born_in": ("born in", "born at", "born", "birthplace", "place of birth", "native of",
                "hometown"),
    "birth_year": ("born in", "born", "born in the year", "birth year", "year of birth",
                   "came into the world in", "came into the world"),
    "works_for": ("works for", "work for", "worked for", "working for", "works at",
                  "employed by", "employed at", "employer", "employee of", "job at"),
    "educated_at": ("studied at", "study at", "studied in", "graduated from", "graduate of",
                    "educated at", "alma mater", "attended", "went to"),
    "headquartered_in": ("headquartered in", "headquartered at", "headquarters", "head office",
                         "based in"),
    "founded_by": ("founded by", "founder", "founded", "started by", "established by",
                   "set up by", "created by"),
    "founded_year": ("founded in", "founded in the year", "established in",
                     "established in the year", "dates from", "dates from the year",
                     "founding year", "year of founding", "established"),
    "located_in": ("located in", "lies in", "can be found in", "found in", "situated in",
                   "location"),
    "capital": ("capital", "capital city"),
    # Not a relation of the built-in world, but the usual shape of a "member of" fact.
    "member_of": ("member of", "member", "members", "belongs to", "belong to", "belonged to"),
}
#: Kinds that a bare copula words too: "X is a blacksmith" states an occupation.
COPULA_KINDS = frozenset({"occupation"})


def _phrase_index(relations: dict[str, tuple[str, ...]]) -> dict[tuple[str, ...], frozenset]:
    index: dict[tuple[str, ...], set[str]] = {}
    for kind, phrases in relations.items():
        for phrase in phrases:
            index.setdefault(answer_tokens(phrase), set()).add(kind)
    return {p: frozenset(k) for p, k in index.items()}


#: Normalised phrase tokens -> the kinds it words ("born in": born_in and birth_year).
PHRASES = _phrase_index(RELATIONS)
MAX_PHRASE = max(map(len, PHRASES))
PHRASE_STARTS = frozenset(p[0] for p in PHRASES)
RELATION_WORDS = frozenset(t for p in PHRASES for t in p)
