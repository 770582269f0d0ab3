"""The ``search`` tool: top-k passages of the corpus for a query, as text for the agent.

The retriever behind the tool is chosen by name (``kind``: ``bm25``, ``dense`` or
``remote``); the retrievers are :mod:`tirl.core.tools.search_backends`.

The tool's output lists passages the way Search-R1 does (one line per passage)::

    Doc 1 (Title: <title>) <text>
    Doc 2 (Title: <title>) <text>

Passages are truncated to ``max_passage_tokens`` tokens of ``tokenizer`` (whitespace words
without one), so a long passage cannot blow the agent's context budget.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from tirl.core.tools.search_backends import SEARCH_BACKENDS, Passage, Retriever

__all__ = [
    "SEARCH_PARAMETERS",
    "SearchTool",
    "build_search_tool",
    "format_passages",
    "passage_line",
    "truncate_text",
]

SEARCH_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1,
                             "description": "What to look up, as a short search query."}},
    "required": ["query"],
    "additionalProperties": False,
}

SEARCH_DESCRIPTION = ("Search the knowledge corpus and return the most relevant passages, "
                      "each with its title. Use short, specific queries.")

NO_RESULTS = "No results found."


# --- text helpers ---------------------------------------------------------------------


def truncate_text(text: str, max_tokens: int | None, tokenizer: Any = None) -> str:
    """The first ``max_tokens`` tokens of ``text`` (``None``: unchanged).

    With a Hugging Face tokenizer the cut is made in its tokens (through the offsets, so the
    kept text is the original text, not a re-decoding); without one, in whitespace words.

    >>> truncate_text("a b  c d", 2)
    'a b'
    >>> truncate_text("a b", 5)
    'a b'
    """
    if max_tokens is None:
        return text
    if max_tokens <= 0:
        return ""
    if tokenizer is None:
        words = text.split()
        return text if len(words) <= max_tokens else " ".join(words[:max_tokens])
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text
        return text[: offsets[max_tokens - 1][1]]
    except (NotImplementedError, TypeError, KeyError, ValueError):
        # Slow tokenizers have no offsets: fall back to decoding the kept ids.
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= max_tokens:
            return text
        return tokenizer.decode(ids[:max_tokens])


def passage_line(rank: int, title: str, text: str) -> str:
    """One passage as the tool lists it, ``rank`` counting from 1. The one definition of the
    format: the tool, the SFT LM phase and the tokenizer texts all write passages with it.

    >>> passage_line(2, "Rome", "Capital of Italy.")
    'Doc 2 (Title: Rome) Capital of Italy.'
    """
    return f"Doc {rank} (Title: {title}) {text}"


def format_passages(passages: Sequence[Passage], *, max_passage_tokens: int | None = None,
                    tokenizer: Any = None) -> str:
    """Search-R1's passage listing, one :func:`passage_line` per passage.

    >>> format_passages([Passage("1", "Paris", "Capital of France."),
    ...                  Passage("2", "Rome", "Capital of Italy.")])
    'Doc 1 (Title: Paris) Capital of France.\\nDoc 2 (Title: Rome) Capital of Italy.'
    """
    if not passages:
        return NO_RESULTS
    lines = []
    for i, p in enumerate(passages, start=1):
        # Newlines inside a passage would break the one-line-per-doc layout.
        text = " ".join(truncate_text(p.text, max_passage_tokens, tokenizer).split())
        title = " ".join(p.title.split())
        lines.append(passage_line(i, title, text))
    return "\n".join(lines)


# --- the tool -------------------------------------------------------------------------


class SearchTool:
    """The ``search`` tool (satisfies :class:`tirl.core.types.Tool`, plus ``call_batch``)."""

    name = "search"

    def __init__(self, retriever: Retriever, *, top_k: int = 3,
                 max_passage_tokens: int | None = None, tokenizer: Any = None,
                 description: str = SEARCH_DESCRIPTION):
        if top_k < 1:
            raise ValueError(f"top_k: must be >= 1, got {top_k}")
        if max_passage_tokens is not None and max_passage_tokens < 1:
            raise ValueError(f"max_passage_tokens: must be >= 1 or None, got "
                             f"{max_passage_tokens}")
        self.retriever = retriever
        self.top_k = top_k
        self.max_passage_tokens = max_passage_tokens
        self.tokenizer = tokenizer
        self.description = description
        self.parameters = dict(SEARCH_PARAMETERS)

    def __repr__(self) -> str:
        return (f"SearchTool(retriever={type(self.retriever).__name__}, top_k={self.top_k}, "
                f"max_passage_tokens={self.max_passage_tokens})")

    def __call__(self, query: str) -> str:
        return self.search_batch([query])[0]

    @property
    def honours_timeout(self) -> bool:
        """Whether the retriever ends a call by a given timeout itself (the remote one does):
        call_tools_batch then passes it the timeout instead of abandoning a thread at it."""
        retrieve = getattr(self.retriever, "retrieve", None)
        return callable(retrieve) and "timeout_s" in inspect.signature(retrieve).parameters

    def retrieve(self, queries: Sequence[str], *,
                 timeout_s: float | None = None) -> list[list[Passage]]:
        """The raw passages (with scores) for each query; ``timeout_s`` reaches a retriever
        that :attr:`honours_timeout` (others ignore it)."""
        extra = {"timeout_s": timeout_s} if self.honours_timeout and timeout_s is not None else {}
        return self.retriever.retrieve(list(queries), self.top_k, **extra)

    def search_batch(self, queries: Sequence[str], *, timeout_s: float | None = None) -> list[str]:
        """The tool text for each query; one retriever call for all of them. Raises
        ValueError when a query is not a string with something besides whitespace."""
        for q in queries:
            reason = _query_problem(q)
            if reason:
                raise ValueError(reason)
        return [format_passages(p, max_passage_tokens=self.max_passage_tokens,
                                tokenizer=self.tokenizer)
                for p in self.retrieve(queries, timeout_s=timeout_s)]

    def call_batch(self, arguments: Sequence[dict[str, Any]], *,
                   timeout_s: float | None = None) -> list[str | Exception]:
        """Batched form used by :func:`tirl.core.tools.base.call_tools_batch`.

        A bad query fails in its own slot (a ValueError there) and the others are searched
        as if it were not in the batch: one trajectory's query must not change another's
        tool result.
        """
        queries = [a.get("query") if isinstance(a, dict) else None for a in arguments]
        out: list[str | Exception] = []
        good: list[int] = []
        for i, q in enumerate(queries):
            reason = _query_problem(q)
            out.append(ValueError(reason) if reason else "")
            if not reason:
                good.append(i)
        for i, text in zip(good, self.search_batch([queries[i] for i in good],
                                                   timeout_s=timeout_s)):
            out[i] = text
        return out


def _query_problem(query: Any) -> str | None:
    if isinstance(query, str) and query.strip():
        return None
    return f"query must be a string with more than whitespace, got {query!r}"


def build_search_tool(corpus: pd.DataFrame | None, *, kind: str = "bm25", top_k: int = 3,
                      max_passage_tokens: int | None = None, tokenizer: Any = None,
                      url: str | None = None, timeout_s: float = 10.0, max_retries: int = 2,
                      backoff_s: float = 0.5, cache_dir: str | os.PathLike | None = None,
                      model_path: str | None = None, batch_size: int = 64,
                      device: str = "cpu", stopwords: str | list[str] | None = "en",
                      ) -> SearchTool:
    """Build the ``search`` tool over ``corpus`` (columns ``id, title, text``).

    ``kind``: ``bm25`` | ``dense`` | ``remote`` (the remote server has its own corpus, so
    ``corpus`` may be None there). ``timeout_s`` (the deadline of one remote call, retries
    included), ``max_retries`` and ``backoff_s`` apply to the remote HTTP calls;
    ``cache_dir``/``model_path``/``batch_size``/``device`` to dense.

    >>> corpus = pd.DataFrame({"id": ["1", "2"], "title": ["Paris", "Rome"],
    ...                        "text": ["Paris is the capital of France.",
    ...                                 "Rome is the capital of Italy."]})
    >>> build_search_tool(corpus, top_k=1)(query="capital of Italy")
    'Doc 1 (Title: Rome) Rome is the capital of Italy.'
    """
    if kind not in SEARCH_BACKENDS:
        raise ValueError(f"unknown search kind {kind!r} (known: {sorted(SEARCH_BACKENDS)})")
    builder, names = SEARCH_BACKENDS[kind]
    given = {"url": url, "timeout_s": timeout_s, "max_retries": max_retries,
             "backoff_s": backoff_s, "cache_dir": cache_dir, "model_path": model_path,
             "batch_size": batch_size, "device": device, "stopwords": stopwords}
    retriever = builder(corpus, **{n: given[n] for n in names})
    return SearchTool(retriever, top_k=top_k, max_passage_tokens=max_passage_tokens,
                      tokenizer=tokenizer)


def search_settings(search: dict[str, Any]) -> tuple[int, int | None]:
    """``(top_k, max_passage_tokens)`` of search options such as ``params:agent.search``,
    checked (ValueError naming the key)."""
    top_k, mpt = search.get("top_k", 3), search.get("max_passage_tokens")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"agent.search.top_k: expected an integer >= 1, got {top_k!r}")
    if mpt is not None and (isinstance(mpt, bool) or not isinstance(mpt, int) or mpt < 1):
        raise ValueError(f"agent.search.max_passage_tokens: expected null or an integer >= 1, "
                         f"got {mpt!r}")
    return top_k, mpt
