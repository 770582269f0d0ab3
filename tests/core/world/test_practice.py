"""Practice worlds: other worlds' gold chats for the warm start."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tirl.core.types import GOLD_COLUMNS
from tirl.core.world.config import WorldConfig
from tirl.core.world.generator import generate_world
from tirl.core.world.practice import practice_trajectories

SMALL = WorldConfig(n_persons=12, n_companies=4, n_universities=2, n_cities=4, n_countries=2,
                    questions={"train": {"single_hop": 6, "bridge": 3}, "val": {"single_hop": 2}})


def test_chats_come_from_other_worlds_with_their_own_ids():
    bench = generate_world(SMALL)
    names = [e["name"] for e in bench.kb["entities"]]
    out = practice_trajectories(SMALL, worlds=2, first_seed=100, avoid_names=names)
    assert list(out.columns) == list(GOLD_COLUMNS)
    assert out["id"].is_unique and len(out) > 0
    assert {i.split("-")[0] for i in out["id"]} == {"practice100", "practice101"}
    assert not set(out["question_id"]) & set(bench.questions["id"])
    # train questions only (val is in SMALL but not asked for)
    assert all("-gold-train-" in i for i in out["id"])
    chat = json.loads(out["messages"].iloc[0])
    assert chat[0]["role"] == "user" and chat[-1]["content"].startswith("<answer>")
    assert any(m["role"] == "tool" and "Doc 1" in m["content"] for m in chat)
    # deterministic
    again = practice_trajectories(SMALL, worlds=2, first_seed=100, avoid_names=names)
    assert again.equals(out)


def test_chats_naming_a_benchmark_entity_are_dropped():
    other = generate_world(dataclasses.replace(SMALL, seed=100))
    all_chats = practice_trajectories(SMALL, worlds=1, first_seed=100)
    # Pretend the benchmark world holds every person of the practice world.
    persons = [e["name"] for e in other.kb["entities"] if e["type"] == "person"]
    kept = practice_trajectories(SMALL, worlds=1, first_seed=100, avoid_names=persons)
    assert len(kept) < len(all_chats)
    for raw in kept["messages"]:
        question = json.loads(raw)[0]["content"]
        assert not any(p in question for p in persons)


def test_zero_worlds_and_bad_seeds():
    assert practice_trajectories(SMALL, worlds=0, first_seed=1).empty
    with pytest.raises(ValueError, match="benchmark world"):
        practice_trajectories(SMALL, worlds=1, first_seed=SMALL.seed)
    with pytest.raises(ValueError, match=">= 0"):
        practice_trajectories(SMALL, worlds=-1, first_seed=5)


def test_a_practice_range_that_covers_the_benchmark_seed_is_refused():
    from tirl.core.world.practice import practice_seeds

    assert list(practice_seeds(10, 3, 0)) == [10, 11, 12]
    with pytest.raises(ValueError, match="include the benchmark world's seed 11"):
        practice_seeds(10, 3, 11)
    from tirl.pipelines.data_prep.nodes import build_data_prep_config
    from tests.pipelines.data_prep.conftest import merged_params

    params = merged_params()
    params["practice"] = {"worlds": 2, "first_seed": params["world"]["seed"], "splits": ["train"]}
    with pytest.raises(ValueError, match="practice.first_seed"):
        build_data_prep_config(params)
