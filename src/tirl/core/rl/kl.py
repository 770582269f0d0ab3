"""Per-token KL estimators to the reference policy, registered by name (docs/algorithms.md, "KL to the reference").

API (keyword-only tensors, all ``[B,T]``)::

    KL_ESTIMATORS: "k1" | "k2" | "k3";  get_kl_estimator(name) -> Callable
    kl_k1(*, logprobs, ref_logprobs, mask) -> Tensor[B,T]   # logp - logp_ref
    kl_k2(*, logprobs, ref_logprobs, mask) -> Tensor[B,T]   # 0.5 * (logp - logp_ref)^2
    kl_k3(*, logprobs, ref_logprobs, mask) -> Tensor[B,T]   # exp(d) - d - 1, d = ref - logp

Each returns a per-token estimate of ``KL(pi || pi_ref)`` that is exactly 0 (with exactly
zero gradient) where ``mask == 0``. The caller aggregates it (``losses.aggregate_loss``) and
multiplies by ``beta`` (paper: 0.001, k3). ``ref_logprobs`` is treated as a constant.
These are Schulman's estimators (http://joschu.net/blog/kl-approx.html): k1 is unbiased but
can be negative; k3 is unbiased and non-negative, hence the default.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from tirl.core.registry import getter, registrar

# exp() of a log-ratio beyond this overflows float32 long before it is meaningful.
_MAX_LOG_RATIO = 20.0

KL_ESTIMATORS: dict[str, Callable] = {}


register_kl_estimator = registrar(KL_ESTIMATORS, "KL estimator")
get_kl_estimator = getter(KL_ESTIMATORS, "KL estimator")


def _log_ratio(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``logp - logp_ref`` with masked slots set to 0 before any arithmetic on them."""
    if not (logprobs.shape == ref_logprobs.shape == mask.shape):
        raise ValueError(f"logprobs, ref_logprobs, mask must share one shape, got "
                         f"{tuple(logprobs.shape)}, {tuple(ref_logprobs.shape)}, "
                         f"{tuple(mask.shape)}")
    keep = mask.bool()
    diff = logprobs - ref_logprobs.detach()
    return torch.where(keep, diff, torch.zeros_like(diff)), keep


@register_kl_estimator("k1")
def kl_k1(*, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """k1 = ``logp - logp_ref`` per trainable token (Tensor[B,T]); 0 where mask is 0."""
    diff, _ = _log_ratio(logprobs, ref_logprobs, mask)
    return diff


@register_kl_estimator("k2")
def kl_k2(*, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """k2 = ``0.5 * (logp - logp_ref)^2`` per trainable token; 0 where mask is 0."""
    diff, _ = _log_ratio(logprobs, ref_logprobs, mask)
    return 0.5 * diff * diff


@register_kl_estimator("k3")
def kl_k3(*, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """k3 = ``exp(d) - d - 1`` with ``d = logp_ref - logp`` per trainable token (>= 0, 0 iff
    the log-probs agree); 0 where mask is 0. ``d`` is clamped to +-20 so exp cannot
    overflow (the gradient is zero beyond that, where the estimate is meaningless)."""
    diff, _ = _log_ratio(logprobs, ref_logprobs, mask)
    d = (-diff).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return torch.exp(d) - d - 1.0
