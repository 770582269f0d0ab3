"""One agent environment reaches every stage: change one ``agent`` key, see it everywhere."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tirl.pipelines.data_prep import nodes as dp
from tirl.pipelines.evaluation.nodes import evaluate_model
from tirl.pipelines.rl.nodes import run_rl


class _Seen(Exception):
    """Raised by the spies once they have seen what the engine was given."""


def _docs(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("Doc "))


def _spy(monkeypatch, module, seen: dict):
    def run_rollouts(*, tools, config, **kwargs):
        seen["docs"] = _docs(tools["search"](query=kwargs["questions"][0]["question"]))
        seen["max_turns"] = config.max_turns
        raise _Seen

    monkeypatch.setattr(module, "run_rollouts", run_rollouts)


@pytest.mark.parametrize("top_k, max_turns", [(1, 2), (3, 3)])
def test_one_agent_key_changes_gold_chats_rl_rollouts_and_evaluation(
        top_k, max_turns, monkeypatch, tiny_tables, tiny_model, tiny_tokenizer, agent_params,
        conf_params):
    import tirl.core.eval.run as eval_module
    import tirl.core.rl.sampling as rl_sampling_module

    agent = {**agent_params, "search": {"kind": "bm25", "top_k": top_k}, "max_turns": max_turns}
    _, questions, _ = tiny_tables
    questions = questions.copy()
    questions["split"] = ["train", "train", "val", "test_in_domain"]
    # Every passage shares words with every question, so each search returns top_k of them.
    names = ["Alice Marlow", "Kestrel Works", "Ostmark", "Tarn Bridge", "Norvale"]
    corpus = pd.DataFrame({"id": [f"p{i}" for i in range(5)], "title": names,
                           "text": [f"{n} was born, founded, built or opened in the capital when."
                                    for n in names]})

    prep = {**conf_params("data_prep"), "gold": {"splits": ["train"]}}
    gold = dp.build_gold(questions, corpus, {"plans": {}}, {"success": True}, prep, agent["search"])
    tool_turns = [m["content"] for chat in gold["messages"] for m in json.loads(chat)
                  if m["role"] == "tool"]
    assert tool_turns and all(_docs(t) == top_k for t in tool_turns)

    model = {"model": tiny_model, "tokenizer": tiny_tokenizer}
    rl, ev = {}, {}
    _spy(monkeypatch, rl_sampling_module, rl)
    with pytest.raises(_Seen):
        run_rl(model, questions, corpus, {"train": {"steps": 1, "val_every": 0,
                                                             "batch_prompts": 2, "group_size": 2}},
                        agent)
    _spy(monkeypatch, eval_module, ev)
    with pytest.raises(_Seen):
        evaluate_model(model, questions, corpus, {"splits": ["test_in_domain"], "progress": False},
                       agent)
    assert rl == ev == {"docs": top_k, "max_turns": max_turns}


def test_every_gold_answer_of_the_default_world_fits_the_default_turn_budget(conf_params):
    """A turn budget shorter than the benchmark's answers makes them unanswerable: with 64
    tokens, 80 % of the built-in long-form descriptions were cut off (format invalid)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from tirl.core.agent.protocol import format_answer

    base = Path(__file__).resolve().parents[2] / "models" / "builtin"
    if not (base / "tokenizer.json").is_file():
        pytest.skip("the built-in base is not in this checkout (dvc repro pretrain)")
    tokenizer = AutoTokenizer.from_pretrained(base)
    budget = conf_params("agent", "base")["max_new_tokens_per_turn"]
    questions, _, _ = dp.load_sources(conf_params("data_prep", "base"))
    lengths = questions["answers"].map(
        lambda answers: len(tokenizer(format_answer(answers[0]))["input_ids"]) + 1)  # + <|im_end|>
    assert lengths.max() <= budget, questions.loc[lengths.idxmax(), "question"]
