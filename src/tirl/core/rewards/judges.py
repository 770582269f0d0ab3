"""Long-form judges behind one interface (:class:`tirl.core.types.Judge`) and their registry.

``make_judge(name, **options)`` builds one by name:

- ``"rubric"``: :class:`RubricJudge`, the embedded reference-grounded judge for the built-in
  world (deterministic, no model, microseconds per answer);
- ``"openai"``: an LLM judge over any OpenAI-compatible chat endpoint;
- ``"transformers"``: a local transformers judge model.

The two LLM judges live in :mod:`tirl.core.rewards.llm_judge` and are imported only when asked
for, so that scoring with the rubric never pays for HTTP clients or transformers imports.

The rubric judge is in :mod:`tirl.core.rewards.rubric` (its score) and
:mod:`tirl.core.rewards.facts` (how it reads facts and answers, with the words of
:mod:`tirl.core.rewards.lexicon`); its names are re-exported here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tirl.core.registry import getter
from tirl.core.rewards.facts import RubricFact, parse_fact
from tirl.core.rewards.lexicon import RELATIONS
from tirl.core.rewards.rubric import RubricConfig, RubricJudge
from tirl.core.types import Judge

__all__ = ["RELATIONS", "RubricConfig", "RubricJudge", "RubricFact", "parse_fact", "JUDGES",
           "make_judge"]


# --- registry --------------------------------------------------------------------------


def _lazy(module: str, attr: str) -> Callable[..., Judge]:
    def build(**options: Any) -> Judge:
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"judge {attr} is not available from {module}: {exc}") from exc
        return cls(**options)

    return build


JUDGES: dict[str, Callable[..., Judge]] = {
    "rubric": RubricJudge,
    "openai": _lazy("tirl.core.rewards.llm_judge", "OpenAIJudge"),
    "transformers": _lazy("tirl.core.rewards.llm_judge", "TransformersJudge"),
}


def make_judge(name: str, **options: Any) -> Judge:
    """Build the judge registered as ``name`` with its options.

    >>> make_judge("rubric", threshold=0.5).config.threshold
    0.5
    """
    return getter(JUDGES, "judge")(name)(**options)
