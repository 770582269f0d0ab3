"""The agent environment: one configuration of what the agent sees and may do.

Gold chats, pretraining, SFT, RL rollouts, validation, evaluation and the reading probe all
build their search tool and rollout budgets from one :class:`AgentConfig` (``params:agent``,
``conf/base/parameters_agent.yml``), so a passage the agent reads in RL is the passage it was
taught on and is evaluated on. Stages choose only how to *sample* (:class:`Sampling`):
temperature 1 in RL, greedy in evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tirl.core.agent.rollout import RolloutConfig
from tirl.core.config import build_config, field_
from tirl.core.tools.search import build_search_tool, search_settings
from tirl.core.tools.search_backends import SEARCH_BACKENDS


def _default_search() -> dict[str, Any]:
    return {"kind": "bm25", "top_k": 3, "max_passage_tokens": None}


@dataclass(frozen=True)
class SearchConfig:
    """``agent.search``: the options of :func:`~tirl.core.tools.search.build_search_tool`,
    checked (a test keeps the two in step). The stages keep passing the plain dict to the
    builder; this only refuses an unknown key or a bad value before any work."""

    kind: str = field_("bm25", doc="retriever", choices=tuple(SEARCH_BACKENDS))
    top_k: int = field_(3, doc="passages per search", ge=1)
    max_passage_tokens: int | None = field_(None, doc="null = whole passages", ge=1)
    url: str | None = field_(None, doc="remote: the retrieval server's /retrieve URL")
    timeout_s: float = field_(10.0, doc="remote: seconds per call", gt=0.0)
    max_retries: int = field_(2, doc="remote: retries of a failed call", ge=0)
    backoff_s: float = field_(0.5, doc="remote: first retry delay (doubles)", ge=0.0)
    cache_dir: str | None = field_(None, doc="dense: corpus embedding cache")
    model_path: str | None = field_(None, doc="dense: embedding model (null = the extra's)")
    batch_size: int = field_(64, doc="dense: texts per encoder batch", ge=1)
    device: str = field_("cpu", doc="dense: torch device of the encoder")
    stopwords: str | list[str] | None = field_("en", doc="bm25: stopword list (null = none)")

    def __post_init__(self) -> None:
        if self.kind == "remote" and not self.url:
            raise ValueError("url: required when kind is 'remote'")


@dataclass(frozen=True)
class Sampling:
    """How a stage samples the agent's turns (``<stage>.sampling``)."""

    temperature: float = field_(1.0, doc="sampling temperature; 0 = greedy", ge=0.0)
    top_p: float = field_(1.0, doc="nucleus sampling mass", gt=0.0, le=1.0)
    seed: int = field_(0, doc="sampling seed (same seed, same trajectories on CPU)")


@dataclass(frozen=True)
class AgentConfig:
    """``params:agent``: the search tool, the turn format and the budgets of an episode."""

    search: dict[str, Any] = field_(
        default_factory=_default_search,
        doc="build_search_tool options: kind (bm25 | dense | remote), top_k, max_passage_tokens "
            "(null = whole passages), and the backend's own options")
    parser: str = field_("hermes", doc="turn format", choices=("hermes", "search_r1"))
    max_turns: int = field_(4, doc="assistant turns per episode", ge=1)
    max_new_tokens_per_turn: int = field_(128, doc="sampled tokens per assistant turn", ge=1)
    max_total_tokens: int = field_(1024, doc="prompt + generated + observation tokens", ge=8)
    max_tool_response_tokens: int = field_(256, doc="tool output kept per call (tokens)", ge=1)
    backend: str = field_("hf", doc="generation backend", choices=("hf", "vllm"))
    max_batch: int = field_(256, doc="rows per backend forward pass", ge=1)
    tool_timeout_s: float | None = field_(30.0, doc="per tool call, seconds (> 0); null = no limit",
                                          gt=0.0)
    system_prompt: str | None = field_(None, doc="null = the protocol's SYSTEM_PROMPT")

    def __post_init__(self) -> None:
        build_config(SearchConfig, self.search, "search")

    @property
    def top_k(self) -> int:
        return search_settings(self.search)[0]

    @property
    def max_passage_tokens(self) -> int | None:
        return search_settings(self.search)[1]

    def rollout_config(self, sampling: Sampling | None = None) -> RolloutConfig:
        """The rollout engine's config: this environment's budgets, ``sampling``'s sampling."""
        sampling = sampling or Sampling()
        return RolloutConfig(
            max_turns=self.max_turns, max_new_tokens_per_turn=self.max_new_tokens_per_turn,
            max_total_tokens=self.max_total_tokens,
            max_tool_response_tokens=self.max_tool_response_tokens,
            temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
            parser=self.parser, backend=self.backend, max_batch=self.max_batch,
            tool_timeout_s=self.tool_timeout_s, system_prompt=self.system_prompt)

    def rollout_overrides(self, sampling: Sampling | None = None) -> dict[str, Any]:
        """:meth:`rollout_config` as a plain dict (for configs that take overrides)."""
        import dataclasses

        return dataclasses.asdict(self.rollout_config(sampling))

    def search_tool(self, corpus: Any, tokenizer: Any = None) -> Any:
        """The search tool over ``corpus``; ``tokenizer`` counts tokens for truncation."""
        return build_search_tool(corpus, tokenizer=tokenizer, **self.search)

    def tools(self, corpus: Any, tokenizer: Any = None) -> dict[str, Any]:
        """The agent's tool registry (name -> tool)."""
        return {"search": self.search_tool(corpus, tokenizer)}

