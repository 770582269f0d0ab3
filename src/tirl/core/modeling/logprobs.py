"""Per-token log-probabilities and entropy from aligned logits (float32 maths).

They live with the model code rather than with the RL losses because pretraining and SFT
(chunked cross-entropy, tirl.core.modeling.chunked) use them too, and those stages must not
be rebuilt when a policy loss changes (dvc.yaml deps).

API::

    token_logprobs(*, logits[B,T,V], token_ids[B,T]) -> Tensor[B,T]
    token_entropy(*, logits[B,T,V]) -> Tensor[B,T]
    logprobs_and_entropy(*, logits, token_ids, with_entropy, entropy_grad)
        -> (Tensor[B,T], Tensor[B,T] | None)
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(*, logits: Tensor, token_ids: Tensor) -> Tensor:
    """``log softmax(logits)[b, t, token_ids[b, t]]`` as Tensor[B,T] (float32 maths).

    logits: Tensor[B,T,V] already aligned with ``token_ids`` (i.e. shifted by the caller).
    """
    logits = logits.float()
    picked = logits.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_entropy(*, logits: Tensor) -> Tensor:
    """Entropy of the softmax of ``logits[B,T,V]`` per position, Tensor[B,T] (float32)."""
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def logprobs_and_entropy(*, logits: Tensor, token_ids: Tensor, with_entropy: bool,
                         entropy_grad: bool) -> tuple[Tensor, Tensor | None]:
    """The log-probs of ``token_ids`` and, when asked, the entropy (None otherwise).

    ``entropy_grad`` False makes the entropy a metric: computed without a graph, so an
    entropy that no loss reads costs no backward memory.
    """
    logprobs = token_logprobs(logits=logits, token_ids=token_ids)
    if not with_entropy:
        return logprobs, None
    if entropy_grad:
        return logprobs, token_entropy(logits=logits)
    with torch.no_grad():
        return logprobs, token_entropy(logits=logits.detach())
