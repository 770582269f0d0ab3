"""The reading probe: does a model read, on a world it has never seen?

It builds the world of one seed, takes a seeded sample of its short-form questions and
measures three things (each overall and per question type):

- ``query_match``: free-running, the first query names an entity the question names;
- ``em_given_gold_search``: given the gold searches and their results (the gold chat up to
  the answer), greedy decoding writes the gold answer token for token (teacher-forced in one
  forward pass: argmax at every answer position equals the gold token; a strict EM);
- ``em``: free-running exact match, the agent searching the world's corpus itself.

A world seed the model was pretrained on would measure recall, not reading:
:func:`check_unseen` refuses such a seed given the model's ``pretraining.json``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tirl.core.agent.env import AgentConfig, Sampling
from tirl.core.data.chats import chats_with_qtype
from tirl.core.data.gold import searched_gold_trajectories
from tirl.core.eval.run import EvalConfig, run_evaluation
from tirl.core.pretrain.card import PRETRAINING_FILE
from tirl.core.pretrain.stream import ChatEncoder
from tirl.core.pretrain.validation import turn_accuracy
from tirl.core.tools.search import build_search_tool
from tirl.core.world.config import WorldConfig
from tirl.core.world.generator import generate_world

PROBE_QTYPES = ("single_hop", "bridge", "comparison")


def seen_seeds(record: Mapping[str, Any]) -> list[tuple[int, int]]:
    """Inclusive seed ranges a pretraining record says the model was trained on."""
    return [tuple(record[k]) for k in ("world_seeds", "tokenizer_seeds") if record.get(k)]


def check_unseen_record(world_seed: int, record: Mapping[str, Any], where: str = "pretraining record") -> None:
    """Raise ValueError when the pretraining ``record`` lists ``world_seed`` as seen."""
    for lo, hi in seen_seeds(record):
        if lo <= world_seed <= hi:
            raise ValueError(f"world seed {world_seed} was seen in pretraining (seeds {lo}..{hi} "
                             f"in {where}): probing it would measure recall, not reading; "
                             "pick another seed")


def check_unseen(world_seed: int, model_dir: str | Path | None) -> None:
    """Raise ValueError when ``model_dir``'s pretraining record lists ``world_seed`` as seen."""
    if model_dir is None or not (Path(model_dir) / PRETRAINING_FILE).is_file():
        return
    path = Path(model_dir) / PRETRAINING_FILE
    check_unseen_record(world_seed, json.loads(path.read_text()), str(path))


def probe_questions(questions: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of ``n`` in-domain short-form questions (single-hop, bridge,
    comparison), in the table's order."""
    pool = questions[questions["qtype"].isin(PROBE_QTYPES) & (questions["split"] != "test_ood")]
    if n > len(pool):
        raise ValueError(f"probe: asked for {n} questions, the world has {len(pool)} short-form ones")
    keep = sorted(random.Random(seed).sample(range(len(pool)), n))
    return pool.iloc[keep].reset_index(drop=True)


def _names_question_entity(query: str | None, question: str, plan: Mapping[str, Any]) -> bool:
    if not query:
        return False
    named = [q for q in plan["queries"] if q in question] or plan["queries"][:1]
    return any(name.lower() in query.lower() for name in named)


def _first_query(trajectory: Any) -> str | None:
    for call in trajectory.tool_calls:
        query = (call.get("arguments") or {}).get("query")
        return query if isinstance(query, str) else None
    return None


def _by_type(values: pd.Series, qtypes: pd.Series, name: str) -> dict[str, float]:
    out = {name: float(values.mean())}
    for qtype, group in values.groupby(qtypes.values):
        out[f"{name}/{qtype}"] = float(group.mean())
    return out


def reading_probe(model: Any, tokenizer: Any, *, world_seed: int, n: int = 200, sample_seed: int = 0,
                  world: Mapping[str, Any] | None = None, rollout: Mapping[str, Any] | None = None,
                  search: Mapping[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """The probe's figures on the world of ``world_seed`` (``world``: WorldConfig overrides).

    ``rollout`` (RolloutConfig fields) and ``search`` (build_search_tool options) default to
    the default agent environment, greedy; the pretrain stage passes ``params:agent``'s."""
    generated = generate_world(WorldConfig(**{**dict(world or {}), "seed": world_seed}))
    questions = probe_questions(generated.questions, n, sample_seed)
    # Default: the default agent environment, greedy.
    default = AgentConfig()
    search = dict(search) if search is not None else dict(default.search)
    rollout = dict(rollout) if rollout is not None else default.rollout_overrides(Sampling(temperature=0.0))
    config = EvalConfig(splits=tuple(sorted(questions["split"].unique())), max_per_benchmark=None,
                        rollout=rollout, search=search, progress=progress)
    trajectories, rows, _ = run_evaluation(model=model, tokenizer=tokenizer, questions=questions,
                                           corpus=generated.corpus, config=config)
    by_id = questions.set_index("id")
    first = {t.question_id: _first_query(t) for t in trajectories}
    query_ok = pd.Series([_names_question_entity(first[q], by_id.loc[q, "question"], generated.plans[q])
                          for q in rows["question_id"]], dtype=float)
    qtypes = pd.Series([by_id.loc[q, "qtype"] for q in rows["question_id"]])

    tool = build_search_tool(generated.corpus, tokenizer=tokenizer, **search)
    gold = searched_gold_trajectories(questions, generated.plans, tool, splits=config.splits,
                                      fallback_to_question=False)
    examples = ChatEncoder(tokenizer).encode(chats_with_qtype(gold, questions))
    gold_found = turn_accuracy(model, examples, tokenizer.pad_token_id)
    out: dict[str, Any] = {"world_seed": world_seed, "n": int(len(questions))}
    out.update(_by_type(query_ok, qtypes, "query_match"))
    out["em_given_gold_search"] = gold_found.get("answer_em", 0.0)
    out.update({k.replace("answer_em/", "em_given_gold_search/"): v for k, v in gold_found.items()
                if k.startswith("answer_em/")})
    out.update(_by_type(rows["exact_match"].reset_index(drop=True), qtypes, "em"))
    return out
