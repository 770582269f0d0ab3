"""The per-step completions table of RL (what TRL calls ``log_completions``).

A reward curve says that the policy changed, not how: the table shows, for a few prompts of
each step, every sampled completion with its reward and its parts, the gold answers and
whether the answer was right, so a user can read what the policy is being paid for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tirl.core.types import RewardBreakdown, Trajectory

#: The columns of one row, in display order.
COMPLETION_COLUMNS = ("step", "question_id", "sample", "question", "gold", "answer", "correct",
                      "reward", "stage", "quality", "tool_calls", "queries", "turns",
                      "finish_reason", "completion")


def _queries(trajectory: Trajectory) -> str:
    out = []
    for call in trajectory.tool_calls:
        args = call.get("arguments")
        query = args.get("query") if isinstance(args, dict) else args
        out.append(str(query))
    return " | ".join(out)


def _completion(trajectory: Trajectory) -> str:
    # Everything after the prompt: the assistant turns and the tool responses they read.
    return "\n".join(f"[{m['role']}] {m['content']}"
                     for m in trajectory.messages if m["role"] in ("assistant", "tool"))


def completion_rows(questions: Sequence[dict[str, Any]], trajectories: Sequence[Trajectory],
                    rewards: Sequence[RewardBreakdown], step: int, n_prompts: int
                    ) -> list[dict[str, Any]]:
    """One row per completion of the first ``n_prompts`` questions of the step's batch
    (every sample of each, so a row reads against its group), columns
    :data:`COLUMNS <COMPLETION_COLUMNS>`. ``rewards[i]`` scores ``trajectories[i]``."""
    if len(trajectories) != len(rewards):
        raise ValueError(f"{len(trajectories)} trajectories but {len(rewards)} rewards")
    shown = {str(q["id"]): q for q in list(questions)[:n_prompts]}
    rows = []
    for traj, reward in zip(trajectories, rewards):
        question = shown.get(str(traj.question_id))
        if question is None:
            continue
        rows.append({
            "step": step, "question_id": str(traj.question_id), "sample": traj.sample_idx,
            "question": str(question.get("question", "")),
            "gold": " | ".join(str(a) for a in question.get("answers", ())),
            "answer": traj.answer if traj.answer is not None else "",
            "correct": bool(reward.exact_match >= 1.0), "reward": float(reward.reward),
            "stage": int(reward.stage), "quality": float(reward.quality),
            "tool_calls": traj.num_tool_calls, "queries": _queries(traj),
            "turns": traj.num_turns, "finish_reason": traj.finish_reason,
            "completion": _completion(traj)})
    return rows
