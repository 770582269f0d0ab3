"""Generation backends: token ids in, sampled token ids and their log-probabilities out.

The rollout engine talks to one interface, :class:`GenerationBackend`
(:mod:`tirl.core.agent.generation`); which engine produces the tokens is a name in the config,
and :func:`make_backend` builds it:

- ``hf``: any transformers causal LM (CPU or GPU), :mod:`tirl.core.agent.hf_backend`;
- ``vllm``: vLLM's offline ``LLM`` (GPU, optional extra, imported lazily),
  :mod:`tirl.core.agent.vllm_backend`.

Both record ``log_softmax(logits / temperature)`` of each sampled token, i.e. the
log-probability under the temperature-scaled policy *before* top-p truncation, which is the
quantity the trainer recomputes from its own forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tirl.core.agent.generation import GenerationBackend
from tirl.core.agent.hf_backend import HFBackend
from tirl.core.agent.vllm_backend import VLLMBackend
from tirl.core.registry import getter

BACKENDS: dict[str, Callable[..., GenerationBackend]] = {"hf": HFBackend, "vllm": VLLMBackend}


def make_backend(name: str, model: Any, tokenizer: Any = None, **kwargs: Any) -> GenerationBackend:
    """Build the registered backend ``name``; an unknown name raises ValueError listing the
    known ones (tirl.core.registry)."""
    return getter(BACKENDS, "generation backend")(name)(model, tokenizer, **kwargs)


__all__ = ["BACKENDS", "make_backend"]
