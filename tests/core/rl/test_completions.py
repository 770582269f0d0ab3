"""The RL completions table (tirl.core.rl.completions)."""

from __future__ import annotations

import pytest

from tirl.core.rl.completions import COMPLETION_COLUMNS, completion_rows
from tirl.core.types import RewardBreakdown, Trajectory


def _traj(qid: str, sample: int, answer: str | None) -> Trajectory:
    return Trajectory(
        question_id=qid, sample_idx=sample, prompt_len=1, token_ids=[1], mask=[0],
        logprobs=[0.0], turns=[{"role": "assistant", "start": 0, "end": 1, "parse_errors": []}],
        messages=[{"role": "user", "content": "Q?"},
                  {"role": "assistant", "content": "<tool_call>x</tool_call>"},
                  {"role": "tool", "content": "passage"},
                  {"role": "assistant", "content": f"<answer>{answer}</answer>"}],
        tool_calls=[{"name": "search", "arguments": {"query": "Zeb Quon"}, "ok": True}],
        answer=answer, finish_reason="answer")


def _reward(em: float) -> RewardBreakdown:
    return RewardBreakdown(reward=0.2 + 0.8 * em, stage=2, format=0.1, quality=em,
                           exact_match=em, outcome=em)


def test_rows_cover_the_first_prompts_with_gold_reward_and_correctness():
    questions = [{"id": "a", "question": "Where?", "answers": ["Oslo", "oslo city"]},
                 {"id": "b", "question": "Who?", "answers": ["Bo"]}]
    trajs = [_traj("a", 0, "Oslo"), _traj("a", 1, "Rome"), _traj("b", 0, "Bo")]
    rows = completion_rows(questions, trajs, [_reward(1), _reward(0), _reward(1)], step=3,
                           n_prompts=1)
    assert [r["sample"] for r in rows] == [0, 1]  # only question a, both samples
    assert list(rows[0]) == list(COMPLETION_COLUMNS)
    assert rows[0]["gold"] == "Oslo | oslo city" and rows[0]["correct"] is True
    assert rows[1]["correct"] is False and rows[1]["reward"] == pytest.approx(0.2)
    assert rows[0]["queries"] == "Zeb Quon" and rows[0]["step"] == 3
    assert "[tool] passage" in rows[0]["completion"] and "[user]" not in rows[0]["completion"]


def test_rows_need_one_reward_per_trajectory():
    with pytest.raises(ValueError, match="2 trajectories but 1 rewards"):
        completion_rows([{"id": "a", "question": "?", "answers": ["x"]}],
                        [_traj("a", 0, "x"), _traj("a", 1, None)], [_reward(1)], 0, 1)
