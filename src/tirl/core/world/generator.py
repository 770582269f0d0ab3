"""The built-in data world: a seeded fictional knowledge base, its corpus and its questions.

Everything is drawn from one ``random.Random(seed)``, in a fixed order, so the same config
gives byte-identical tables and another seed a different world. Names are random syllables,
so nothing can be answered from pretraining: the agent must search.

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

import itertools
import logging
import math
import random
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tirl.core.config import field_
from tirl.core.types import PASSAGE_COLUMNS, QUESTION_COLUMNS
from tirl.core.world import names as N
from tirl.core.world import templates as T

log = logging.getLogger(__name__)

ENTITY_TYPES = ("country", "city", "university", "person", "company")
IN_DOMAIN_SPLITS = ("train", "val", "test_in_domain")
IN_DOMAIN_QTYPES = ("single_hop", "bridge", "comparison", "description", "multi_question")
OOD_QTYPES = ("composition", "description", "multi_question")
SHORT_QTYPES = ("single_hop", "bridge", "comparison", "composition")
#: Entity types whose members can be held out for the out-of-domain split.
HOLDOUT_TYPES = ("person", "company")
DISTRACTOR_TYPES = ("person", "company", "university", "city")


def _default_questions() -> dict[str, dict[str, int]]:
    short = {"single_hop": 20, "bridge": 20, "comparison": 20, "description": 10,
             "multi_question": 10}
    return {
        "train": {"single_hop": 500, "bridge": 300, "comparison": 400, "description": 60,
                  "multi_question": 80},
        "val": dict(short),
        "test_in_domain": {k: 2 * v for k, v in short.items()},
        "test_ood": {"composition": 80, "description": 20, "multi_question": 20},
    }


@dataclass(frozen=True)
class WorldConfig:
    seed: int = field_(0, doc="seed of the whole world; same seed -> byte-identical outputs")
    n_persons: int = field_(150, doc="real (non-distractor) persons", ge=4)
    n_companies: int = field_(40, doc="real companies", ge=2)
    n_universities: int = field_(12, doc="real universities", ge=1)
    n_cities: int = field_(30, doc="real cities", ge=2)
    n_countries: int = field_(8, doc="countries (each gets a capital among the cities)", ge=1)
    distractor_fraction: float = field_(
        0.5, doc="near-miss-named distractor entities per real person/company/university/city",
        ge=0.0, le=1.0)
    heldout_fraction: float = field_(
        0.15, doc="fraction of persons and companies held out for the test_ood split only",
        ge=0.0, le=0.9)
    facts_per_passage: int = field_(3, doc="facts per passage (an entity gets ceil(n/k) passages)",
                                    ge=1)
    min_year: int = field_(1900, doc="earliest birth year of a person")
    max_year: int = field_(1990, doc="latest birth year of a person")
    questions: dict[str, dict[str, int]] = field_(
        default_factory=_default_questions,
        doc="split -> qtype -> number of questions; in-domain splits take "
            f"{list(IN_DOMAIN_QTYPES)}, test_ood takes {list(OOD_QTYPES)}")

    def __post_init__(self) -> None:
        if self.min_year >= self.max_year:
            raise ValueError(f"min_year ({self.min_year}) must be < max_year ({self.max_year})")
        if self.n_cities < self.n_countries:
            raise ValueError(f"n_cities ({self.n_cities}) must be >= n_countries "
                             f"({self.n_countries}): every country needs a capital")
        for split, counts in self.questions.items():
            allowed = OOD_QTYPES if split == "test_ood" else IN_DOMAIN_QTYPES
            if split not in IN_DOMAIN_SPLITS + ("test_ood",):
                raise ValueError(f"questions.{split}: unknown split (known: "
                                 f"{list(IN_DOMAIN_SPLITS + ('test_ood',))})")
            if not isinstance(counts, dict):
                raise ValueError(f"questions.{split}: expected a mapping qtype -> count")
            for qtype, n in counts.items():
                if qtype not in allowed:
                    raise ValueError(f"questions.{split}.{qtype}: unknown qtype for this split "
                                     f"(known: {list(allowed)})")
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ValueError(f"questions.{split}.{qtype}: expected an integer >= 0, "
                                     f"got {n!r}")


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


# --- corpus --------------------------------------------------------------------------------

#: entity type -> (other type, its relation pointing here, sentence) for reverse facts.
REVERSE_SENTENCES = {
    "country": (("city", "located_in", "Cities of {s} include {o}."),),
    "city": (("person", "born_in", "People born in {s} include {o}."),),
    "company": (("person", "works_for", "Employees of {s} include {o}."),),
    "university": (("person", "educated_at", "Alumni of {s} include {o}."),),
}
MAX_REVERSE_NAMES = 3


def _render(ents: dict[str, dict[str, Any]], value: Any) -> str:
    return ents[value]["name"] if isinstance(value, str) and value in ents else str(value)


def canonical_fact(ents: dict[str, dict[str, Any]], eid: str, rel: str) -> str:
    """The fixed-wording sentence stating one fact (used for references and atomic facts)."""
    e = ents[eid]
    return T.sentence(T.SENTENCES[rel][0], e["name"], _render(ents, e["facts"][rel]))


def _make_corpus(cfg: WorldConfig, rng: random.Random,
                 ents: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for eid, e in ents.items():
        sentences = [T.sentence(rng.choice(T.SENTENCES[rel]), e["name"], _render(ents, v))
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


# --- questions -----------------------------------------------------------------------------


@dataclass
class _Cand:
    key: tuple
    question: str
    answers: list[str]
    facts: list[str]
    queries: list[str]
    entities: frozenset[str]  # every entity id touched (subject, bridges, answer)


def _follow(ents: dict[str, dict[str, Any]], eid: str,
            path: tuple[str, ...]) -> tuple[list[str], Any]:
    """Entities visited along ``path`` from ``eid`` (incl. eid) and the final value."""
    chain, cur = [eid], eid
    for rel in path[:-1]:
        cur = ents[cur]["facts"][rel]
        chain.append(cur)
    return chain, ents[cur]["facts"][path[-1]]


def _real(ents: dict[str, dict[str, Any]], etype: str) -> list[str]:
    return [e for e in ents if ents[e]["type"] == etype and ents[e]["distractor_of"] is None]


def _chain_cands(rng, ents, subjects, table) -> list[_Cand]:
    out = []
    for (stype, path), templates in table.items():
        for s in subjects:
            if ents[s]["type"] != stype:
                continue
            chain, value = _follow(ents, s, path)
            touched = set(chain) | ({value} if value in ents else set())
            out.append(_Cand(key=(s, path), question=rng.choice(templates).format(
                s=ents[s]["name"]), answers=[_render(ents, value)], facts=[],
                queries=[ents[c]["name"] for c in chain], entities=frozenset(touched)))
    return out


def _single_hop_cands(rng, ents, subjects) -> list[_Cand]:
    table = {(stype, (rel,)): tpl for (stype, rel), tpl in T.SINGLE_HOP.items()}
    return _chain_cands(rng, ents, subjects, table)


def _comparison_cands(rng, ents, subjects) -> list[_Cand]:
    out = []
    for (stype, rel, which), templates in T.COMPARISON.items():
        group = [s for s in subjects if ents[s]["type"] == stype]
        for a, b in itertools.combinations(group, 2):
            ya, yb = ents[a]["facts"][rel], ents[b]["facts"][rel]
            if ya == yb:
                continue
            winner = (a if ya < yb else b) if which == "min" else (a if ya > yb else b)
            first, second = (a, b) if rng.random() < 0.5 else (b, a)
            out.append(_Cand(
                key=(frozenset((a, b)), rel, which),
                question=rng.choice(templates).format(a=ents[first]["name"],
                                                      b=ents[second]["name"]),
                answers=[ents[winner]["name"]], facts=[],
                queries=[ents[first]["name"], ents[second]["name"]],
                entities=frozenset((a, b))))
    return out


def _description_cands(rng, ents, subjects) -> list[_Cand]:
    out = []
    for s in subjects:
        if ents[s]["type"] not in ("person", "company"):
            continue
        facts = [canonical_fact(ents, s, rel) for rel in ents[s]["facts"]]
        touched = {s} | {v for v in ents[s]["facts"].values() if isinstance(v, str) and v in ents}
        out.append(_Cand(key=(s,), question=rng.choice(T.DESCRIPTION).format(s=ents[s]["name"]),
                         answers=[" ".join(facts)], facts=facts, queries=[ents[s]["name"]],
                         entities=frozenset(touched)))
    return out


def _multi_cands(rng, ents, subjects) -> list[_Cand]:
    out = []
    for s in subjects:
        if ents[s]["type"] != "person":
            continue
        for r1, r2 in itertools.combinations(T.MULTI_NOUNS, 2):
            facts = [canonical_fact(ents, s, r1), canonical_fact(ents, s, r2)]
            vals = [ents[s]["facts"][r1], ents[s]["facts"][r2]]
            touched = {s} | {v for v in vals if isinstance(v, str) and v in ents}
            name = ents[s]["name"]
            reference = (f"The {T.MULTI_NOUNS[r1]} of {name} is {_render(ents, vals[0])}, and "
                         f"the {T.MULTI_NOUNS[r2]} of {name} is {_render(ents, vals[1])}.")
            out.append(_Cand(
                key=(s, r1, r2),
                question=rng.choice(T.MULTI).format(n1=T.MULTI_NOUNS[r1], n2=T.MULTI_NOUNS[r2],
                                                    s=name),
                answers=[reference], facts=facts, queries=[name],
                entities=frozenset(touched)))
    return out


_MAKERS = {
    "single_hop": _single_hop_cands,
    "bridge": lambda rng, ents, subj: _chain_cands(rng, ents, subj, T.BRIDGE),
    "comparison": _comparison_cands,
    "composition": lambda rng, ents, subj: _chain_cands(rng, ents, subj, T.COMPOSITION),
    "description": _description_cands,
    "multi_question": _multi_cands,
}


def _take(pool: list[_Cand], n: int, split: str, qtype: str, used_text: set[str]) -> list[_Cand]:
    out = []
    while pool and len(out) < n:
        c = pool.pop()
        if c.question in used_text:  # two keys can render to the same text: keep splits apart
            continue
        used_text.add(c.question)
        out.append(c)
    if len(out) < n:
        raise ValueError(f"world.questions.{split}.{qtype}: asked for {n} questions but the "
                         f"world only has {len(out)} more; lower the count or raise the "
                         "entity counts (n_persons, n_companies, ...)")
    return out


def _make_questions(cfg: WorldConfig, rng: random.Random, ents: dict[str, dict[str, Any]]):
    held = {e for e in ents if ents[e]["held_out"]}
    real = [e for t in ENTITY_TYPES for e in _real(ents, t)]
    in_domain_subjects = [e for e in real if e not in held]
    ood_subjects = [e for e in real if e in held]
    used_text: set[str] = set()
    rows, plans = [], {}

    def emit(split: str, qtype: str, cands: list[_Cand]) -> None:
        for i, c in enumerate(cands):
            qid = f"{split}-{qtype}-{i:04d}"
            rows.append({"id": qid, "question": c.question, "answers": list(c.answers),
                         "split": split, "task": "short" if qtype in SHORT_QTYPES else "long",
                         "qtype": qtype, "facts": list(c.facts), "source": "world"})
            plans[qid] = {"queries": list(c.queries), "answer": c.answers[0],
                          "entities": sorted(c.entities)}

    for qtype in IN_DOMAIN_QTYPES:
        wanted = {s: cfg.questions.get(s, {}).get(qtype, 0) for s in IN_DOMAIN_SPLITS}
        if not any(wanted.values()):
            continue
        # A question is in-domain only if no held-out entity is touched anywhere on its chain.
        pool = [c for c in _MAKERS[qtype](rng, ents, in_domain_subjects)
                if not (c.entities & held)]
        rng.shuffle(pool)
        for split in IN_DOMAIN_SPLITS:
            emit(split, qtype, _take(pool, wanted[split], split, qtype, used_text))
    for qtype in OOD_QTYPES:
        n = cfg.questions.get("test_ood", {}).get(qtype, 0)
        if not n:
            continue
        pool = _MAKERS[qtype](rng, ents, ood_subjects)
        rng.shuffle(pool)
        emit("test_ood", qtype, _take(pool, n, "test_ood", qtype, used_text))
    order = {s: i for i, s in enumerate(IN_DOMAIN_SPLITS + ("test_ood",))}
    rows.sort(key=lambda r: (order[r["split"]], r["id"]))
    return pd.DataFrame(rows, columns=list(QUESTION_COLUMNS)), plans


def generate_world(cfg: WorldConfig) -> World:
    """Generate the whole world from ``cfg`` (pure: no I/O; same cfg -> same World)."""
    rng = random.Random(cfg.seed)
    ents = _make_entities(cfg, rng)
    corpus = _make_corpus(cfg, rng, ents)
    questions, plans = _make_questions(cfg, rng, ents)
    kb = {"seed": cfg.seed,
          "entities": [ents[e] for e in sorted(ents)],
          "heldout_entities": sorted(e for e in ents if ents[e]["held_out"]),
          "plans": plans}
    log.info("world seed=%d: %d entities, %d passages, %d questions", cfg.seed, len(ents),
             len(corpus), len(questions))
    return World(kb=kb, corpus=corpus, questions=questions, plans=plans)
