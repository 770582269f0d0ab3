"""Readable Markdown of trajectories, for the MLflow UI and reports."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tirl.core.types import Trajectory

_ROLE_TITLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _fence(text: str) -> str:
    # A fence longer than any backtick run inside keeps the block intact.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}text\n{text}\n{ticks}"


def verdict_line(gold: Sequence[str], row: Mapping[str, Any]) -> str:
    """``gold: ... · right`` for an evaluation row (``exact_match``; long-form answers by the
    judge's ``judge_match`` and ``judge_score``), so a sample reads against the answer."""
    judged = isinstance(row.get("judge_match"), (int, float)) and not math.isnan(row["judge_match"])
    right = bool(row["judge_match"]) if judged else row.get("exact_match", 0.0) >= 1.0
    parts = [f"**gold:** {' | '.join(repr(str(g)) for g in gold)}",
             f"**{'right' if right else 'wrong'}** (exact match {row.get('exact_match', 0.0):.0f}"
             + (f", judge {row['judge_score']:.2f}" if judged else "") + ")"]
    return " · ".join(parts)


def trajectories_markdown(trajectories: Sequence[Trajectory], *, title: str = "Trajectories",
                          rewards: Sequence[float] | None = None,
                          verdicts: Sequence[str] | None = None,
                          include_system: bool = False) -> str:
    """One section per trajectory: id, finish reason, answer (and its ``verdicts[i]`` line:
    gold answer and whether it was right), then each message fenced."""
    lines = [f"# {title}", ""]
    for i, t in enumerate(trajectories):
        head = (f"## {t.question_id} (sample {t.sample_idx}) — finish: `{t.finish_reason}`, "
                f"turns: {t.num_turns}, tool calls: {t.num_tool_calls}"
                f" ({t.num_tool_failures} failed)")
        if rewards is not None:
            head += f", reward: {rewards[i]:.3f}"
        lines += [head, "", f"**answer:** {t.answer!r}"]
        if verdicts is not None:
            lines += ["", verdicts[i]]
        if t.parse_errors:
            lines.append(f"**parse errors:** {', '.join(t.parse_errors)}")
        lines.append("")
        for m in t.messages:
            if m["role"] == "system" and not include_system:
                continue
            lines += [f"**{_ROLE_TITLES.get(m['role'], m['role'])}**", "", _fence(m["content"]), ""]
    return "\n".join(lines)
