"""Policy losses, value losses and loss aggregation, registered by name (docs/algorithms.md, "Policy losses", "Aggregation").

API (keyword-only tensors, all ``[B,T]`` and aligned; ``mask`` is 1 on trainable tokens)::

    LOSS_AGGREGATIONS: "token_mean" | "seq_mean_token_mean" | "seq_mean_token_sum"
    aggregate_loss(*, values, mask, mode="token_mean", num_tokens=None, num_seqs=None) -> scalar
    masked_mean(*, values, mask) -> scalar

    POLICY_LOSSES: "ppo_clip" | "cispo";  get_policy_loss(name) -> Callable
    ppo_clip_loss(*, logprobs, old_logprobs, advantages, mask, clip_eps=0.2,
                  clip_eps_high=None, aggregation="token_mean", num_tokens=None,
                  num_seqs=None) -> (loss, stats)
    cispo_loss(*, logprobs, old_logprobs, advantages, mask, clip_eps=0.2,
               clip_eps_high=None, eps_low_is=None, aggregation="token_mean",
               num_tokens=None, num_seqs=None) -> (loss, stats)
        stats: dict[str, float] with "clip_frac", "approx_kl", "ratio_mean"

    VALUE_LOSSES: "clipped" | "mse";  get_value_loss(name) -> Callable
    clipped_value_loss(*, values, old_values, returns, mask, clip_eps=0.2,
                       aggregation="token_mean", num_tokens=None, num_seqs=None)
        -> (loss, stats)   stats: "vf_clip_frac", "value_mean", "return_mean"

    entropy_from_logits(*, logits[B,T,V], mask[B,T]) -> scalar (masked mean)
    (per-token log-probs and entropy: tirl.core.modeling.logprobs)

Every loss is zero, with exactly zero gradient, on tokens where ``mask == 0`` (prompt,
tool responses, padding): masked positions are replaced before any exp so that a garbage
log-prob there cannot leak a NaN into the gradient.

``num_tokens`` / ``num_seqs``: when a batch is split into micro-batches (gradient
accumulation, several processes), pass the trainable-token / sequence count of the *whole*
batch so that the sum of micro-batch losses equals the loss of the whole batch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from tirl.core.modeling.logprobs import token_entropy
from tirl.core.registry import getter, registrar

# Log-ratios beyond this are numerically meaningless (exp overflows float32 near 88) and
# only come from stale or broken log-probs; clamping keeps the loss finite.
_MAX_LOG_RATIO = 20.0

LOSS_AGGREGATIONS: dict[str, Callable] = {}
POLICY_LOSSES: dict[str, Callable] = {}
VALUE_LOSSES: dict[str, Callable] = {}


register_aggregation = registrar(LOSS_AGGREGATIONS, "loss aggregation")
register_policy_loss = registrar(POLICY_LOSSES, "policy loss")
register_value_loss = registrar(VALUE_LOSSES, "value loss")
get_aggregation = getter(LOSS_AGGREGATIONS, "loss aggregation")
get_policy_loss = getter(POLICY_LOSSES, "policy loss")
get_value_loss = getter(VALUE_LOSSES, "value loss")


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"tensors must share one shape, got {shapes}")


def _masked(x: Tensor, keep: Tensor) -> Tensor:
    # torch.where (not multiplication) so that inf/NaN at masked slots gives exact zeros.
    return torch.where(keep, x, torch.zeros_like(x))


# --- aggregation -------------------------------------------------------------------------


@register_aggregation("token_mean")
def token_mean(*, values: Tensor, mask: Tensor, num_tokens: float | None = None,
               num_seqs: float | None = None) -> Tensor:
    """Mean over all trainable tokens of the batch (docs/algorithms.md, "Aggregation").

    values, mask: Tensor[B,T]. ``num_tokens`` overrides the denominator (global count).
    """
    del num_seqs
    keep = mask.bool()
    denom = float(num_tokens) if num_tokens is not None else keep.sum().clamp(min=1)
    return _masked(values, keep).sum() / denom


@register_aggregation("seq_mean_token_mean")
def seq_mean_token_mean(*, values: Tensor, mask: Tensor, num_tokens: float | None = None,
                        num_seqs: float | None = None) -> Tensor:
    """Mean over sequences of each sequence's trainable-token mean (original GRPO).

    Rows without trainable tokens contribute 0. ``num_seqs`` overrides the denominator.
    """
    del num_tokens
    keep = mask.bool()
    per_seq = _masked(values, keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
    denom = float(num_seqs) if num_seqs is not None else max(values.shape[0], 1)
    return per_seq.sum() / denom


@register_aggregation("seq_mean_token_sum")
def seq_mean_token_sum(*, values: Tensor, mask: Tensor, num_tokens: float | None = None,
                       num_seqs: float | None = None) -> Tensor:
    """Mean over sequences of each sequence's trainable-token sum (no length normalisation,
    as Dr.GRPO argues)."""
    del num_tokens
    keep = mask.bool()
    denom = float(num_seqs) if num_seqs is not None else max(values.shape[0], 1)
    return _masked(values, keep).sum() / denom


def aggregate_loss(*, values: Tensor, mask: Tensor, mode: str = "token_mean",
                   num_tokens: float | None = None, num_seqs: float | None = None) -> Tensor:
    """Reduce per-token ``values[B,T]`` to a scalar with the aggregation named ``mode``."""
    return get_aggregation(mode)(values=values, mask=mask, num_tokens=num_tokens,
                                 num_seqs=num_seqs)


def masked_mean(*, values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 when nothing is trainable)."""
    return token_mean(values=values, mask=mask)


def _stats(keep: Tensor, **values: Tensor) -> dict[str, float]:
    """Masked means of ``values`` as floats, with one device->host copy for all of them."""
    with torch.no_grad():
        means = torch.stack([token_mean(values=v.detach().float(), mask=keep)
                             for v in values.values()])
        return dict(zip(values, means.tolist()))


# --- policy losses -----------------------------------------------------------------------


def _log_ratio(logprobs: Tensor, old_logprobs: Tensor, keep: Tensor) -> Tensor:
    diff = _masked(logprobs - old_logprobs.detach(), keep)
    return diff.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)


@register_policy_loss("ppo_clip")
def ppo_clip_loss(*, logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                  clip_eps: float = 0.2, clip_eps_high: float | None = None,
                  aggregation: str = "token_mean", num_tokens: float | None = None,
                  num_seqs: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """Token-level PPO clipped surrogate (paper: ``eps = 0.2``).

    ``ratio = exp(logprobs - old_logprobs)``; per token
    ``l = max(-A * ratio, -A * clip(ratio, 1 - clip_eps, 1 + clip_eps_high))``, aggregated
    over trainable tokens. ``clip_eps_high`` None means symmetric; a larger value
    (DAPO's clip-higher) lets unlikely tokens with positive advantage grow further.

    Args:
        logprobs: Tensor[B,T] current policy (with grad). old_logprobs: Tensor[B,T] behaviour
            policy (detached here). advantages: Tensor[B,T]. mask: Tensor[B,T].
    Returns:
        (loss scalar, stats) with ``clip_frac`` (share of trainable tokens where the clipped
        branch is active), ``approx_kl`` (k3 estimate of KL(old || new)), ``ratio_mean``.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages,
                      mask=mask)
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    keep = mask.bool()
    log_ratio = _log_ratio(logprobs, old_logprobs, keep)
    ratio = torch.exp(log_ratio)
    adv = _masked(advantages.detach(), keep)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate_loss(values=per_token, mask=keep, mode=aggregation,
                          num_tokens=num_tokens, num_seqs=num_seqs)
    stats = _stats(keep, clip_frac=(clipped > unclipped).float(),
                   approx_kl=ratio - 1.0 - log_ratio, ratio_mean=ratio)
    return loss, stats


@register_policy_loss("cispo")
def cispo_loss(*, logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
               clip_eps: float = 0.2, clip_eps_high: float | None = None,
               eps_low_is: float | None = None, aggregation: str = "token_mean",
               num_tokens: float | None = None, num_seqs: float | None = None
               ) -> tuple[Tensor, dict[str, float]]:
    """CISPO (MiniMax-M1): clipped, stop-gradient importance weight times advantage times
    log-prob, so every token keeps a gradient (PPO's clip zeroes it instead).

    Per token ``l = -sg(w) * A * logprobs`` with
    ``w = clamp(ratio, 1 - eps_low_is, 1 + eps_high)`` (no lower bound when ``eps_low_is`` is
    None), hence ``grad l = -w * A * grad logprobs``. ``eps_high`` is ``clip_eps_high``, or
    ``clip_eps`` when that is None: the same arguments as :func:`ppo_clip_loss`, so that one
    call reaches either loss.

    Returns:
        (loss scalar, stats) with ``clip_frac`` (share of trainable tokens whose weight was
        clipped), ``approx_kl`` and ``ratio_mean`` as in :func:`ppo_clip_loss`.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages,
                      mask=mask)
    keep = mask.bool()
    log_ratio = _log_ratio(logprobs, old_logprobs, keep)
    ratio = torch.exp(log_ratio)
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    lower = None if eps_low_is is None else 1.0 - eps_low_is
    weight = torch.clamp(ratio, min=lower, max=1.0 + eps_high).detach()
    adv = _masked(advantages.detach(), keep)
    per_token = -weight * adv * _masked(logprobs, keep)
    loss = aggregate_loss(values=per_token, mask=keep, mode=aggregation,
                          num_tokens=num_tokens, num_seqs=num_seqs)
    stats = _stats(keep, clip_frac=(weight != ratio.detach()).float(),
                   approx_kl=ratio - 1.0 - log_ratio, ratio_mean=ratio)
    return loss, stats


# --- value losses (PPO critic) -----------------------------------------------------------


@register_value_loss("clipped")
def clipped_value_loss(*, values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                       clip_eps: float = 0.2, aggregation: str = "token_mean",
                       num_tokens: float | None = None,
                       num_seqs: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped value loss: ``0.5 * max((V - R)^2, (V_clip - R)^2)`` with
    ``V_clip = V_old + clip(V - V_old, -clip_eps, clip_eps)``, over trainable tokens.

    values: Tensor[B,T] (with grad); old_values, returns: Tensor[B,T]; mask: Tensor[B,T].
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    keep = mask.bool()
    v = _masked(values, keep)
    old = _masked(old_values.detach(), keep)
    ret = _masked(returns.detach(), keep)
    v_clip = old + torch.clamp(v - old, -clip_eps, clip_eps)
    err = (v - ret) ** 2
    err_clip = (v_clip - ret) ** 2
    per_token = 0.5 * torch.maximum(err, err_clip)
    loss = aggregate_loss(values=per_token, mask=keep, mode=aggregation,
                          num_tokens=num_tokens, num_seqs=num_seqs)
    stats = _stats(keep, vf_clip_frac=(err_clip > err).float(), value_mean=v, return_mean=ret)
    return loss, stats


@register_value_loss("mse")
def mse_value_loss(*, values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                   clip_eps: float = 0.2, aggregation: str = "token_mean",
                   num_tokens: float | None = None,
                   num_seqs: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """Unclipped ``0.5 * (V - R)^2`` (same signature as "clipped"; ``old_values`` and
    ``clip_eps`` are unused)."""
    del clip_eps
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    keep = mask.bool()
    v = _masked(values, keep)
    ret = _masked(returns.detach(), keep)
    per_token = 0.5 * (v - ret) ** 2
    loss = aggregate_loss(values=per_token, mask=keep, mode=aggregation,
                          num_tokens=num_tokens, num_seqs=num_seqs)
    stats = {"vf_clip_frac": 0.0, **_stats(keep, value_mean=v, return_mean=ret)}
    return loss, stats


# --- entropy from logits ------------------------------------------------------------------


def entropy_from_logits(*, logits: Tensor, mask: Tensor) -> Tensor:
    """Mean entropy over trainable tokens: logits Tensor[B,T,V], mask Tensor[B,T]."""
    return masked_mean(values=token_entropy(logits=logits), mask=mask)
