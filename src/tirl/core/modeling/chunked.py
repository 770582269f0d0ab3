"""Next-token log-probabilities, entropy and weighted cross-entropy from the final hidden
states, computed over chunks of positions so that no [tokens, vocab] logits tensor is kept.

A micro-batch of 4096 tokens over SmolLM2's 49,152-token vocabulary makes 805 MB of float32
logits, and the log-softmax and its gradient as much again each; the hidden states that
produce them (d=576) are 85 times smaller. Here the output head runs on at most
``chunk_tokens`` positions at a time, each chunk under activation checkpointing: the forward
keeps only the chunk's per-token values, and the backward recomputes one chunk's logits at a
time. Positions that no loss reads (prompt, tool responses, padding) are dropped before the
head, so they cost nothing. Values and gradients equal those of the full logits (tests).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from tirl.core.modeling.logprobs import logprobs_and_entropy

#: Config fields with which a model's logits are *not* ``head(last_hidden_state)``: Gemma 2
#: caps them with a tanh, Cohere multiplies them by ``logit_scale``, Granite divides them by
#: ``logits_scaling``. Such models keep the full-logits path.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def output_head(model: Any) -> torch.nn.Module | None:
    """The output head of a Hugging Face causal LM whose logits are exactly
    ``head(model.get_decoder()(...).last_hidden_state)``, or None where the chunked path cannot
    stand in for the model's own forward (the caller then takes the full logits):

    * not a plain ``PreTrainedModel`` -- a DDP wrapper must see its own forward called for its
      gradient all-reduce, and FSDP (a wrapper, or ``fully_shard``'s subclass) gathers the
      head's weights in the root module's forward, which calling the decoder would skip;
    * a head that is not a linear layer of the hidden state (see :data:`_LOGIT_TRANSFORMS`).
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) or _is_fsdp(model):
        return None
    config = model.config.get_text_config()
    if any(getattr(config, k, None) is not None for k in _LOGIT_TRANSFORMS):
        return None
    head = model.get_output_embeddings()
    return head if isinstance(head, torch.nn.Linear) else None


def _is_fsdp(model: torch.nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return False
    return isinstance(model, FSDPModule)


def _chunk_values(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                  with_entropy: bool, entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target and the entropy (zeros when not asked) of one chunk."""
    logprobs, entropy = logprobs_and_entropy(logits=head(hidden), token_ids=targets,
                                             with_entropy=with_entropy,
                                             entropy_grad=entropy_grad)
    # checkpoint() returns tensors only. (Its backward recomputes the entropy, unused.)
    return logprobs, logprobs.new_zeros(()) if entropy is None else entropy


def chunked_logprobs(*, hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                     chunk_tokens: int, with_entropy: bool = False, entropy_grad: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log softmax(head(hidden))[m, targets[m]]`` and the entropy, ``chunk_tokens`` rows at a time.

    hidden: [M, H], the final hidden state predicting each target; targets: [M] token ids.
    ``with_entropy``: also the entropy of each row's distribution; ``entropy_grad``: with its
    graph (else without gradient, a metric). Returns logprobs [M] float32 and entropy [M]
    float32 or None. With grad enabled each chunk is checkpointed: the backward recomputes
    its logits, so at most one chunk's [chunk_tokens, V] logits exist at any time.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    grad = torch.is_grad_enabled()
    lps, ents = [], []
    for h, t in zip(hidden.split(chunk_tokens), targets.split(chunk_tokens)):
        if grad:
            lp, ent = checkpoint(_chunk_values, head, h, t, with_entropy, entropy_grad,
                                 use_reentrant=False)
        else:
            lp, ent = _chunk_values(head, h, t, with_entropy, entropy_grad)
        lps.append(lp)
        ents.append(ent)
    # No position at all still runs one empty chunk (split gives one): a loss of zero rows
    # keeps a graph, as the full logits' masked loss does, so its backward runs.
    return torch.cat(lps), torch.cat(ents) if with_entropy else None


def masked_token_logprobs(*, hidden: torch.Tensor, head: torch.nn.Module, token_ids: torch.Tensor,
                          mask: torch.Tensor, chunk_tokens: int, with_entropy: bool = False,
                          entropy_grad: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`chunked_logprobs` at the positions of ``mask`` of a batch, 0 elsewhere.

    hidden: [N, T, H], ``hidden[:, t]`` predicts ``token_ids[:, t]`` [N, T]; mask: [N, T],
    nonzero where a value is read. Returns logprobs [N, T] and entropy [N, T] or None
    (float32).
    """
    keep = mask.bool()
    lp, ent = chunked_logprobs(hidden=hidden[keep], head=head, targets=token_ids[keep],
                               chunk_tokens=chunk_tokens, with_entropy=with_entropy,
                               entropy_grad=entropy_grad)
    return _scatter(lp, keep), None if ent is None else _scatter(ent, keep)


def _scatter(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    out = values.new_zeros(keep.shape)
    out[keep] = values
    return out


def chunked_weighted_nll(*, hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                         weights: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
    """Weighted next-token cross-entropy ``sum(w * ce) / sum(w)`` (the SFT and LM loss).

    hidden: [M, H]; targets, weights: [M]. Rows of weight 0 never reach the head.
    """
    keep = weights != 0
    lp, _ = chunked_logprobs(hidden=hidden[keep], head=head, targets=targets[keep],
                             chunk_tokens=chunk_tokens)
    w = weights.to(lp.dtype)
    return -(w[keep] * lp).sum() / w.sum().clamp_min(1e-8)
