"""Readable Markdown of trajectories, for the MLflow UI and reports."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tirl.core.types import Trajectory

_ROLE_TITLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _fence(text: str) -> str:
    # A fence longer than any backtick run inside keeps the block intact.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}text\n{text}\n{ticks}"


def trajectories_markdown(trajectories: Sequence[Trajectory], *, title: str = "Trajectories",
                          rewards: Sequence[float] | None = None,
                          include_system: bool = False) -> str:
    """One section per trajectory: id, finish reason, answer, then each message fenced."""
    lines = [f"# {title}", ""]
    for i, t in enumerate(trajectories):
        head = (f"## {t.question_id} (sample {t.sample_idx}) — finish: `{t.finish_reason}`, "
                f"turns: {t.num_turns}, tool calls: {t.num_tool_calls}"
                f" ({t.num_tool_failures} failed)")
        if rewards is not None:
            head += f", reward: {rewards[i]:.3f}"
        lines += [head, "", f"**answer:** {t.answer!r}"]
        if t.parse_errors:
            lines.append(f"**parse errors:** {', '.join(t.parse_errors)}")
        lines.append("")
        for m in t.messages:
            if m["role"] == "system" and not include_system:
                continue
            lines += [f"**{_ROLE_TITLES.get(m['role'], m['role'])}**", "", _fence(m["content"]), ""]
    return "\n".join(lines)
