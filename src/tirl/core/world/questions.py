"""The built-in world's questions: candidates of each question type, drawn into the splits
(no question text in two splits; held-out entities only in ``test_ood``), each with its
gold plan.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tirl.core.types import QUESTION_COLUMNS
from tirl.core.world import templates as T
from tirl.core.world.config import (ENTITY_TYPES, IN_DOMAIN_QTYPES, IN_DOMAIN_SPLITS,
                                    OOD_QTYPES, SHORT_QTYPES, WorldConfig)
from tirl.core.world.corpus import canonical_fact, render_value


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
                s=ents[s]["name"]), answers=[render_value(ents, value)], facts=[],
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
            reference = (f"The {T.MULTI_NOUNS[r1]} of {name} is {render_value(ents, vals[0])}, and "
                         f"the {T.MULTI_NOUNS[r2]} of {name} is {render_value(ents, vals[1])}.")
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


def make_questions(cfg: WorldConfig, rng: random.Random, ents: dict[str, dict[str, Any]]):
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
