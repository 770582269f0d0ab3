"""The built-in data world: a seeded fictional knowledge base, its corpus and its questions.

Everything is drawn from one ``random.Random(seed)``, in a fixed order, so the same config
gives byte-identical tables and another seed a different world. Names are random syllables,
so nothing can be answered from pretraining: the agent must search.

This module draws the entities and their facts and assembles the :class:`World`; the options
are :mod:`tirl.core.world.config`, the passages :mod:`tirl.core.world.corpus` and the
questions :mod:`tirl.core.world.questions`.

What the world holds (see docs/data.md):
- entities of five types (person, company, university, city, country) with twelve
  (type, relation) facts (:data:`templates.RELATIONS`);
- a corpus of short passages (``facts_per_passage`` facts each) plus *distractors*: extra
  entities whose names are one or two characters away from a real one, with their own facts
  and passages, so that lexical retrieval is not trivial;
- short-form questions (single_hop, bridge, comparison) and long-form ones (description,
  multi_question, with a reference answer and its atomic facts), split train / val /
  test_in_domain with no question (nor asked fact) in two splits;
- a ``test_ood`` split of ``composition`` questions: relation chains never used in the
  other splits, asked about *held-out* entities that appear in no other split;
- a gold *plan* per question: the searches a competent agent would issue and the answer.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tirl.core.world import names as N
from tirl.core.world import templates as T
from tirl.core.world.config import DISTRACTOR_TYPES, ENTITY_TYPES, HOLDOUT_TYPES, WorldConfig
from tirl.core.world.corpus import make_corpus
from tirl.core.world.questions import make_questions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """The generated world. ``kb`` is JSON-serialisable (entities, plans, config)."""

    kb: dict[str, Any]
    corpus: pd.DataFrame  # PASSAGE_COLUMNS
    questions: pd.DataFrame  # QUESTION_COLUMNS
    plans: dict[str, dict[str, Any]]  # question id -> {"queries": [...], "answer": str}


# --- knowledge base ----------------------------------------------------------------------


def _make_entities(cfg: WorldConfig, rng: random.Random) -> dict[str, dict[str, Any]]:
    used: set[str] = set()
    ents: dict[str, dict[str, Any]] = {}

    def fresh(etype: str) -> str:
        while True:
            name = N.NAME_MAKERS[etype](rng)
            if name not in used:
                used.add(name)
                return name

    counts = {"country": cfg.n_countries, "city": cfg.n_cities,
              "university": cfg.n_universities, "person": cfg.n_persons,
              "company": cfg.n_companies}
    for etype in ENTITY_TYPES:
        for i in range(counts[etype]):
            eid = f"{etype}-{i:04d}"
            ents[eid] = {"id": eid, "type": etype, "name": fresh(etype), "facts": {},
                         "held_out": False, "distractor_of": None}
    by_type = {t: [e for e in ents if ents[e]["type"] == t] for t in ENTITY_TYPES}
    _assign_facts(cfg, rng, ents, by_type, list(ents))

    # Held-out entities: only the test_ood split may ask about them.
    for etype in HOLDOUT_TYPES:
        k = round(cfg.heldout_fraction * len(by_type[etype]))
        for eid in rng.sample(by_type[etype], k):
            ents[eid]["held_out"] = True

    # Distractors: near-miss names, their own (random) facts pointing at real entities.
    for etype in DISTRACTOR_TYPES:
        real = by_type[etype]
        k = round(cfg.distractor_fraction * len(real))
        new_ids = []
        for j, target in enumerate(rng.sample(real, k)):
            while True:
                name = N.near_miss(rng, ents[target]["name"], rng.choice((1, 2)))
                if name not in used:
                    used.add(name)
                    break
            eid = f"{etype}-d{j:04d}"
            ents[eid] = {"id": eid, "type": etype, "name": name, "facts": {},
                         "held_out": False, "distractor_of": target}
            new_ids.append(eid)
        _assign_facts(cfg, rng, ents, by_type, new_ids)
    return ents


def _assign_facts(cfg: WorldConfig, rng: random.Random, ents: dict[str, dict[str, Any]],
                  by_type: dict[str, list[str]], ids: list[str]) -> None:
    """Fill the facts of ``ids``; objects are always real (non-distractor) entities."""
    countries = by_type["country"]
    capitals: dict[str, str] = {}
    for eid in ids:
        e, f = ents[eid], ents[eid]["facts"]
        t = e["type"]
        if t == "country":
            continue  # capitals are chosen after cities are placed
        if t == "city":
            f["located_in"] = rng.choice(countries)
        elif t == "university":
            f["located_in"] = rng.choice(by_type["city"])
            f["founded_year"] = rng.randint(cfg.min_year - 300, cfg.max_year)
        elif t == "person":
            f["occupation"] = rng.choice(T.OCCUPATIONS)
            f["born_in"] = rng.choice(by_type["city"])
            f["birth_year"] = rng.randint(cfg.min_year, cfg.max_year)
            f["works_for"] = rng.choice(by_type["company"])
            f["educated_at"] = rng.choice(by_type["university"])
        elif t == "company":
            founder = rng.choice(by_type["person"])
            f["headquartered_in"] = rng.choice(by_type["city"])
            f["founded_by"] = founder
            # Founded as an adult: keeps "founder born before founding" consistent.
            f["founded_year"] = ents[founder]["facts"].get("birth_year", cfg.min_year) + \
                rng.randint(22, 50)
    if any(ents[i]["type"] == "country" for i in ids):
        # Every country needs a city located in it to be its capital: give each country one.
        cities = list(by_type["city"])
        rng.shuffle(cities)
        for country, city in zip(countries, cities):
            ents[city]["facts"]["located_in"] = country
        for country in countries:
            in_country = [c for c in by_type["city"] if ents[c]["facts"]["located_in"] == country]
            capitals[country] = rng.choice(in_country)
            ents[country]["facts"]["capital"] = capitals[country]



def generate_world(cfg: WorldConfig) -> World:
    """Generate the whole world from ``cfg`` (pure: no I/O; same cfg -> same World)."""
    rng = random.Random(cfg.seed)
    ents = _make_entities(cfg, rng)
    corpus = make_corpus(cfg, rng, ents)
    questions, plans = make_questions(cfg, rng, ents)
    kb = {"seed": cfg.seed,
          "entities": [ents[e] for e in sorted(ents)],
          "heldout_entities": sorted(e for e in ents if ents[e]["held_out"]),
          "plans": plans}
    log.info("world seed=%d: %d entities, %d passages, %d questions", cfg.seed, len(ents),
             len(corpus), len(questions))
    return World(kb=kb, corpus=corpus, questions=questions, plans=plans)
