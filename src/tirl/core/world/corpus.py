"""The built-in world's corpus: passages that state each entity's facts, and the one fixed
wording of a fact (:func:`canonical_fact`) that references and atomic facts use.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pandas as pd

from tirl.core.types import PASSAGE_COLUMNS
from tirl.core.world import templates as T
from tirl.core.world.config import WorldConfig

#: entity type -> (other type, its relation pointing here, sentence) for reverse facts.
REVERSE_SENTENCES = {
    "country": (("city", "located_in", "Cities of {s} include {o}."),),
    "city": (("person", "born_in", "People born in {s} include {o}."),),
    "company": (("person", "works_for", "Employees of {s} include {o}."),),
    "university": (("person", "educated_at", "Alumni of {s} include {o}."),),
}
MAX_REVERSE_NAMES = 3


def render_value(ents: dict[str, dict[str, Any]], value: Any) -> str:
    """An entity id as its name, any other value (a year, an occupation) as text."""
    return ents[value]["name"] if isinstance(value, str) and value in ents else str(value)


def canonical_fact(ents: dict[str, dict[str, Any]], eid: str, rel: str) -> str:
    """The fixed-wording sentence stating one fact (used for references and atomic facts)."""
    e = ents[eid]
    return T.sentence(T.SENTENCES[rel][0], e["name"], render_value(ents, e["facts"][rel]))


def make_corpus(cfg: WorldConfig, rng: random.Random,
                ents: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for eid, e in ents.items():
        sentences = [T.sentence(rng.choice(T.SENTENCES[rel]), e["name"], render_value(ents, v))
                     for rel, v in e["facts"].items()]
        # Reverse facts ("people born in X include ...") lengthen the short passages of
        # places and organisations and put names in passages that are not about them, so
        # that finding the right passage takes more than matching one name.
        for rtype, rel, template in REVERSE_SENTENCES.get(e["type"], ()):
            names = [ents[o]["name"] for o in ents if ents[o]["type"] == rtype
                     and ents[o]["distractor_of"] is None and ents[o]["facts"].get(rel) == eid]
            if names:
                names = names[:MAX_REVERSE_NAMES]
                listed = names[0] if len(names) == 1 else \
                    f"{', '.join(names[:-1])} and {names[-1]}"
                sentences.append(template.format(s=e["name"], o=listed))
        n_pass = math.ceil(len(sentences) / cfg.facts_per_passage)
        for k in range(n_pass):
            chunk = sentences[k * cfg.facts_per_passage:(k + 1) * cfg.facts_per_passage]
            rows.append({"id": f"{eid}-p{k}", "title": e["name"], "text": " ".join(chunk)})
    # Shuffle so that passage order says nothing about which entity is real.
    rng.shuffle(rows)
    return pd.DataFrame(rows, columns=list(PASSAGE_COLUMNS))
