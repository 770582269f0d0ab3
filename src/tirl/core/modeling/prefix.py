"""Next-token loss and logits, with a prefix that every row shares run only once.

Agent chats all open with the same system turn (the prompt and the tool schemas: about 200
of the built-in base's 500 tokens per chat). Under causal attention the keys and values of a
shared prefix are the same in every row, so :func:`shared_prefix_lm_loss` runs the prefix at
batch size 1, expands its cache to the batch and runs only the rest per row. The loss and its
gradients equal :func:`weighted_lm_loss` of the full batch (tests check it) for about 40 %
less compute on agent chats. :func:`next_token_logits` does the same for the RL update's
log-probabilities, whose loss never reads the prompt; :func:`next_token_hidden` gives the
hidden states instead, for the logits computed a chunk at a time (:mod:`.chunked`).
"""

from __future__ import annotations

from typing import Any

import torch

from tirl.core.modeling import chunked

#: A shared prefix shorter than this is not worth a second forward call.
MIN_SHARED_PREFIX = 16


def weighted_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy weighted per target token: ``sum(w * ce) / sum(w)``, where
    ``weights[:, t]`` weighs predicting ``input_ids[:, t]`` (column 0 is never a target)."""
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1),
        reduction="none")
    w = weights[:, 1:].reshape(-1).to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1e-8)


def common_prefix_len(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> int:
    """Length of the token prefix every row shares (and attends to, when a mask is given)."""
    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    differs = (~same).nonzero()
    return int(differs[0]) if len(differs) else int(input_ids.shape[1])


def _prefix_once(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 prefix_len: int, output: str = "logits") -> tuple[torch.Tensor, torch.Tensor]:
    """Run the shared prefix at batch size 1 and the rest per row on its expanded cache.

    ``model``: a causal LM (``output="logits"``) or its decoder (``"last_hidden_state"``).
    Returns the prefix's outputs [1, p, V or H] and those of every row at the positions that
    predict the targets ``p .. T-1`` [N, T-p, V or H] (the prefix's last position, then the
    tail's)."""
    from transformers import DynamicCache

    rows, p = input_ids.shape[0], prefix_len
    head = model(input_ids=input_ids[:1, :p], use_cache=True)
    cache = DynamicCache()
    for i, layer in enumerate(head.cache.layers):
        cache.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), i)
    tail = getattr(model(input_ids=input_ids[:, p:], attention_mask=attention_mask, cache=cache,
                         use_cache=True), output)
    first = getattr(head, output)
    return first, torch.cat([first[:, -1:].expand(rows, 1, -1), tail[:, :-1]], dim=1)


def shared_prefix_lm_loss(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          weights: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """:func:`weighted_lm_loss` of the batch, its first ``prefix_len`` tokens (shared by every
    row, see :func:`common_prefix_len`) run once; ``prefix_len`` must be shorter than the rows."""
    p = prefix_len
    head, logits = _prefix_once(model, input_ids, attention_mask, p)
    # Targets 1..p-1 are predicted inside the prefix (the same in every row: weighted by the
    # rows' summed weights); targets p.. by the prefix's last position and the tail.
    ce_head = torch.nn.functional.cross_entropy(head[0, :-1].float(), input_ids[0, 1:p],
                                                reduction="none")
    ce_tail = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), input_ids[:, p:].reshape(-1),
        reduction="none").view(input_ids.shape[0], -1)
    w_head, w_tail = weights[:, 1:p].to(ce_head.dtype), weights[:, p:].to(ce_tail.dtype)
    total = (ce_head * w_head.sum(0)).sum() + (ce_tail * w_tail).sum()
    return total / (w_head.sum() + w_tail.sum()).clamp_min(1e-8)


def next_token_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      max_prefix: int | None = None) -> tuple[torch.Tensor, int]:
    """Next-token logits of a right-padded batch for the targets after the rows' shared prefix.

    Returns ``(logits, start)``: ``logits[:, j]`` predicts ``input_ids[:, start + 1 + j]``, for
    every target from ``start + 1`` on. ``start`` is 0 (every target) unless the rows share a
    prefix worth running once (:func:`common_prefix_len`, at most ``max_prefix`` tokens); then
    the targets inside it are left out: the caller caps the prefix before its first target
    that it reads (for RL, the first sampled token; the prompt is never trained on).
    """
    return _next_token(model, input_ids, attention_mask, max_prefix, "logits")


def next_token_hidden(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      max_prefix: int | None = None) -> tuple[torch.Tensor, int]:
    """:func:`next_token_logits`, but the final hidden states [N, T-1-start, H] that the
    output head turns into those logits (``model.get_decoder()``'s ``last_hidden_state``;
    for :mod:`tirl.core.modeling.chunked`, where :func:`~chunked.output_head` allows it)."""
    return _next_token(model.get_decoder(), input_ids, attention_mask, max_prefix,
                       "last_hidden_state")


def _next_token(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                max_prefix: int | None, output: str) -> tuple[torch.Tensor, int]:
    p = _shared_prefix(input_ids, attention_mask, max_prefix)
    if p:
        return _prefix_once(model, input_ids, attention_mask, p, output)[1], p - 1
    return getattr(model(input_ids=input_ids, attention_mask=attention_mask), output)[:, :-1], 0


def _shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   max_prefix: int | None = None) -> int:
    """The shared prefix to run once (at most ``max_prefix`` tokens), or 0 where none is worth
    it: one row, a prefix shorter than :data:`MIN_SHARED_PREFIX` or the whole batch."""
    p = common_prefix_len(input_ids, attention_mask)
    if max_prefix is not None:
        p = min(p, max_prefix)
    return p if input_ids.shape[0] > 1 and MIN_SHARED_PREFIX <= p < input_ids.shape[1] else 0


def lm_loss(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            weights: torch.Tensor, logits_chunk: int | None = None) -> torch.Tensor:
    """The weighted next-token loss of a right-padded batch, sharing the rows' common prefix
    when there is one worth sharing. ``logits_chunk``: compute the logits at most this many
    positions at a time (:mod:`tirl.core.modeling.chunked`; same loss and gradients, bounded
    memory) where the model allows it; None: the full logits."""
    head = chunked.output_head(model) if logits_chunk is not None else None
    if head is not None:
        return _chunked_lm_loss(model, head, input_ids, attention_mask, weights, logits_chunk)
    p = _shared_prefix(input_ids, attention_mask)
    if p:
        return shared_prefix_lm_loss(model, input_ids, attention_mask, weights, p)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return weighted_lm_loss(logits, input_ids, weights)


def _chunked_lm_loss(model: Any, head: torch.nn.Module, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, weights: torch.Tensor,
                     chunk_tokens: int) -> torch.Tensor:
    """:func:`lm_loss` from the hidden states, the head run ``chunk_tokens`` positions at a
    time. With a shared prefix its targets 1..p-1 are one set of positions weighted by the
    rows' summed weights, as in :func:`shared_prefix_lm_loss`."""
    p = _shared_prefix(input_ids, attention_mask)
    decoder = model.get_decoder()
    if p:
        first, rest = _prefix_once(decoder, input_ids, attention_mask, p, "last_hidden_state")
        hidden = torch.cat([first[0, :-1], rest.reshape(-1, rest.shape[-1])])
        targets = torch.cat([input_ids[0, 1:p], input_ids[:, p:].reshape(-1)])
        w = torch.cat([weights[:, 1:p].sum(0), weights[:, p:].reshape(-1)])
    else:
        states = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = states[:, :-1].reshape(-1, states.shape[-1])
        targets, w = input_ids[:, 1:].reshape(-1), weights[:, 1:].reshape(-1)
    return chunked.chunked_weighted_nll(hidden=hidden, head=head, targets=targets, weights=w,
                                        chunk_tokens=chunk_tokens)
