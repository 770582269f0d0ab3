"""What a generation backend is: token ids in, sampled token ids and their log-probabilities
out (:class:`GenOut`). The backends themselves, and the registry that builds one by name,
are :mod:`tirl.core.agent.backends`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: Why a sequence stopped: a stop token, a stop string, or its new-token budget.
STOP_REASONS = ("stop_token", "stop_string", "length")


@dataclass
class GenOut:
    """One generated continuation: ``token_ids`` (stop token included), aligned ``logprobs``
    and ``stop_reason`` (one of :data:`STOP_REASONS`)."""

    token_ids: list[int]
    logprobs: list[float]
    stop_reason: str = "length"


class GenerationBackend(Protocol):
    """Samples continuations of token-id prompts."""

    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int | Sequence[int],
                 stop_token_ids: set[int] | frozenset[int] = frozenset(),
                 stop_strings: Sequence[str] = (), temperature: float = 1.0, top_p: float = 1.0,
                 seed: int | None = None, cache_ids: Sequence[Any] | None = None) -> list[GenOut]:
        """One :class:`GenOut` per prompt, in order. ``max_new_tokens`` may be per prompt.
        ``cache_ids`` (optional) names each prompt's conversation so a backend may reuse its
        KV from the previous call when the new prompt extends it."""
        ...


def new_token_budgets(max_new_tokens: int | Sequence[int], n: int) -> list[int]:
    if isinstance(max_new_tokens, int):
        return [max_new_tokens] * n
    budgets = [int(b) for b in max_new_tokens]
    if len(budgets) != n:
        raise ValueError(f"max_new_tokens has {len(budgets)} entries for {n} prompts")
    return budgets


__all__ = ["GenOut", "GenerationBackend", "STOP_REASONS", "new_token_budgets"]
