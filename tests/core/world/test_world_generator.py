"""The built-in world: determinism, leakage, schema, consistency of answers and passages."""

from __future__ import annotations

import io
import json

import pytest

from tirl.core.config import ConfigError, build_config
from tirl.core.types import PASSAGE_COLUMNS, QUESTION_COLUMNS
from tirl.core.world import templates as T
from tirl.core.world.config import WorldConfig
from tirl.core.world.generator import World, generate_world
from tirl.core.world.names import near_miss

SMALL = {
    "n_persons": 30, "n_companies": 10, "n_universities": 4, "n_cities": 8, "n_countries": 3,
    "heldout_fraction": 0.2,
    "questions": {
        "train": {"single_hop": 30, "bridge": 15, "comparison": 15, "description": 5,
                  "multi_question": 5},
        "val": {"single_hop": 4, "bridge": 4, "comparison": 4, "description": 2,
                "multi_question": 2},
        "test_in_domain": {"single_hop": 4, "bridge": 4, "comparison": 4, "description": 2,
                           "multi_question": 2},
        "test_ood": {"composition": 8, "description": 2, "multi_question": 2},
    },
}


def small(seed: int = 0, **over) -> World:
    return generate_world(build_config(WorldConfig, {**SMALL, "seed": seed, **over}))


@pytest.fixture(scope="module")
def world() -> World:
    return small()


def _bytes(w: World) -> tuple[bytes, bytes, bytes]:
    out = []
    for df in (w.questions, w.corpus):
        buf = io.BytesIO()
        df.to_parquet(buf)
        out.append(buf.getvalue())
    out.append(json.dumps(w.kb, sort_keys=True).encode())
    return tuple(out)


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_same_seed_is_byte_identical_and_other_seed_differs(world):
    assert _bytes(small(0)) == _bytes(world)
    other = _bytes(small(1))
    assert all(o != w for o, w in zip(other, _bytes(world)))
    assert set(small(1).questions["question"]) != set(world.questions["question"])


def test_schema_and_split_sizes(world):
    assert tuple(world.questions.columns) == QUESTION_COLUMNS
    assert tuple(world.corpus.columns) == PASSAGE_COLUMNS
    counts = world.questions.groupby(["split", "qtype"]).size().to_dict()
    expected = {(s, t): n for s, per in SMALL["questions"].items() for t, n in per.items()}
    assert counts == expected
    assert world.questions["id"].is_unique and world.corpus["id"].is_unique
    assert (world.questions["source"] == "world").all()
    short = world.questions["qtype"].isin(["single_hop", "bridge", "comparison", "composition"])
    assert (world.questions.loc[short, "task"] == "short").all()
    assert (world.questions.loc[~short, "task"] == "long").all()


def test_kb_has_enough_types_and_relations(world):
    types = {e["type"] for e in world.kb["entities"]}
    relations = {r for e in world.kb["entities"] for r in e["facts"]}
    assert len(types) >= 4 and len(relations) >= 8


def test_held_out_entities_appear_only_in_test_ood(world):
    ents = {e["id"]: e for e in world.kb["entities"]}
    held = set(world.kb["heldout_entities"])
    assert held, "the small world must hold some entities out"
    held_names = {ents[e]["name"] for e in held}
    for q in world.questions.itertuples():
        touched = set(world.plans[q.id]["entities"])
        text = q.question + " " + " ".join(q.answers)
        if q.split == "test_ood":
            assert touched & held, q.id  # OOD questions are about held-out entities
        else:
            assert not touched & held, q.id
            assert not any(name in text for name in held_names), q.id


def test_no_question_text_in_two_splits(world):
    per_split = world.questions.groupby("split")["question"].apply(set)
    splits = list(per_split.index)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not per_split[a] & per_split[b], (a, b)


def test_composition_relations_never_used_in_domain(world):
    bridge = {path for _, path in T.BRIDGE}
    assert not bridge & {path for _, path in T.COMPOSITION}
    assert set(world.questions.loc[world.questions["qtype"] == "composition", "split"]) == \
        {"test_ood"}


def test_answers_are_stated_by_the_passages_the_plan_searches(world):
    """Following the plan's queries to passages titled with them finds every short answer."""
    by_title = world.corpus.groupby("title")["text"].apply(" ".join).to_dict()
    for q in world.questions.itertuples():
        plan = world.plans[q.id]
        assert plan["answer"] == q.answers[0]
        read = " ".join(by_title[name] for name in plan["queries"])
        if q.qtype == "comparison":
            continue  # the answer is a name; checked below
        if q.task == "short":
            assert q.answers[0] in read, q.id


def test_comparison_answer_is_the_right_one_of_the_two(world):
    ents = {e["name"]: e for e in world.kb["entities"]}
    for q in world.questions[world.questions["qtype"] == "comparison"].itertuples():
        a, b = world.plans[q.id]["queries"]
        assert q.answers[0] in (a, b) and a in q.question and b in q.question
        rel = "birth_year" if "born" in q.question or "older" in q.question \
            or "younger" in q.question else "founded_year"
        ya, yb = ents[a]["facts"][rel], ents[b]["facts"][rel]
        later = any(w in q.question for w in ("later", "younger"))
        want = (a if ya > yb else b) if later else (a if ya < yb else b)
        assert q.answers[0] == want, q.question


def test_long_form_reference_and_facts(world):
    long = world.questions[world.questions["task"] == "long"]
    assert len(long) > 0
    for q in long.itertuples():
        assert len(q.facts) >= 2
        if q.qtype == "description":
            assert q.answers[0] == " ".join(q.facts)
    assert (world.questions.loc[world.questions["task"] == "short", "facts"].map(len) == 0).all()


def test_distractors_have_near_miss_names_and_passages(world):
    ents = {e["id"]: e for e in world.kb["entities"]}
    distractors = [e for e in ents.values() if e["distractor_of"]]
    assert distractors
    titles = set(world.corpus["title"])
    for d in distractors:
        dist = _levenshtein(d["name"], ents[d["distractor_of"]]["name"])
        assert 1 <= dist <= 2, (d["name"], ents[d["distractor_of"]]["name"])
        assert d["name"] in titles


def test_near_miss_changes_one_or_two_letters():
    import random

    rng = random.Random(3)
    for edits in (1, 2):
        for _ in range(50):
            out = near_miss(rng, "Talor Venmik", edits)
            assert out != "Talor Venmik" and out.endswith(" Venmik")
            assert _levenshtein(out, "Talor Venmik") <= edits


def test_too_many_questions_is_a_clear_error():
    qs = {"train": {"single_hop": 100000}}
    with pytest.raises(ValueError, match=r"questions.train.single_hop: asked for 100000"):
        small(questions=qs)


@pytest.mark.parametrize("questions, match", [
    ({"train": {"composition": 1}}, "questions.train.composition: unknown qtype"),
    ({"test_ood": {"bridge": 1}}, "questions.test_ood.bridge: unknown qtype"),
    ({"dev": {"bridge": 1}}, "questions.dev: unknown split"),
    ({"train": {"bridge": -1}}, "questions.train.bridge: expected an integer >= 0"),
])
def test_bad_question_counts_are_config_errors(questions, match):
    with pytest.raises(ConfigError, match=match):
        build_config(WorldConfig, {"questions": questions}, "data_prep.world")
