"""Advantage estimators, registered by name (docs/algorithms.md, "Sequence-level advantages" and "PPO with GAE").

API (keyword-only tensors; ``N`` samples, ``B`` rows, ``T`` tokens)::

    ADVANTAGE_ESTIMATORS: dict[str, Callable]      # "grpo", "drgrpo", "gae"
    ADVANTAGE_LEVELS: dict[str, str]               # name -> "sequence" | "token"
    get_advantage_estimator(name) -> Callable      # unknown name -> ValueError listing known
    grpo_advantage(*, rewards[N], group_index[N], eps=1e-6, norm_std=True) -> Tensor[N]
    drgrpo_advantage(*, rewards[N], group_index[N], eps=1e-6) -> Tensor[N]   # no std division
    gae_advantage(*, token_rewards[B,T], values[B,T], mask[B,T], gamma=1.0, lam=0.95)
        -> (advantages[B,T], returns[B,T])        # over trainable tokens only
    group_stats(*, rewards[N], group_index[N]) -> (mean[N], std[N])   # population std
    broadcast_sequence_advantage(*, advantages[N], mask[N,T]) -> Tensor[N,T]

Sequence-level estimators ("grpo", "drgrpo") give one advantage per rollout; the caller
spreads it over the rollout's trainable tokens with :func:`broadcast_sequence_advantage`.
The token-level estimator ("gae") needs a critic's values and returns advantages and returns
that are already zero outside the trainable tokens.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from tirl.core.registry import getter

ADVANTAGE_ESTIMATORS: dict[str, Callable] = {}
ADVANTAGE_LEVELS: dict[str, str] = {}


def register_advantage_estimator(name: str, level: str) -> Callable[[Callable], Callable]:
    """Decorator: add ``fn`` to :data:`ADVANTAGE_ESTIMATORS` under ``name``."""
    if level not in ("sequence", "token"):
        raise ValueError(f"level must be 'sequence' or 'token', got {level!r}")

    def deco(fn: Callable) -> Callable:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        ADVANTAGE_LEVELS[name] = level
        return fn

    return deco


get_advantage_estimator = getter(ADVANTAGE_ESTIMATORS, "advantage estimator")


def group_stats(*, rewards: Tensor, group_index: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample group mean and population std of ``rewards``.

    Args:
        rewards: Tensor[N], one scalar reward per rollout.
        group_index: LongTensor[N]; rollouts with the same value share a prompt. Any integer
            labels work (they need not be contiguous or sorted).
    Returns:
        (mean[N], std[N]) broadcast back to the samples, in ``rewards``' float dtype.
    """
    if rewards.dim() != 1 or group_index.shape != rewards.shape:
        raise ValueError(f"rewards and group_index must both be [N], got "
                         f"{tuple(rewards.shape)} and {tuple(group_index.shape)}")
    r = rewards.float() if not rewards.is_floating_point() else rewards
    _, inverse = torch.unique(group_index, return_inverse=True)
    num_groups = int(inverse.max().item()) + 1 if inverse.numel() else 0
    counts = torch.zeros(num_groups, dtype=r.dtype, device=r.device).index_add_(
        0, inverse, torch.ones_like(r))
    mean = torch.zeros(num_groups, dtype=r.dtype, device=r.device).index_add_(0, inverse, r)
    mean = mean / counts
    centred = r - mean[inverse]
    # Population std (divide by G, not G - 1): docs/algorithms.md, VSPO step 1; a group of one has
    # std 0 instead of NaN.
    var = torch.zeros(num_groups, dtype=r.dtype, device=r.device).index_add_(
        0, inverse, centred * centred) / counts
    return mean[inverse], var.sqrt()[inverse]


@register_advantage_estimator("grpo", level="sequence")
def grpo_advantage(*, rewards: Tensor, group_index: Tensor, eps: float = 1e-6,
                   norm_std: bool = True) -> Tensor:
    """GRPO: ``A_i = (r_i - mu_g) / (sigma_g + eps)`` with the group's population std.

    Args:
        rewards: Tensor[N]. group_index: LongTensor[N] (see :func:`group_stats`).
        eps: added to the std so that a zero-spread group gives 0, not NaN.
        norm_std: False drops the std division (Dr.GRPO).
    Returns:
        Tensor[N]; sums to zero within every group.
    """
    mean, std = group_stats(rewards=rewards, group_index=group_index)
    adv = rewards.to(mean.dtype) - mean
    return adv / (std + eps) if norm_std else adv


@register_advantage_estimator("drgrpo", level="sequence")
def drgrpo_advantage(*, rewards: Tensor, group_index: Tensor, eps: float = 1e-6) -> Tensor:
    """Dr.GRPO: ``A_i = r_i - mu_g`` (no std division, so easy/hard groups are not
    up-weighted). ``eps`` is accepted for a call signature shared with "grpo"; unused."""
    del eps
    return grpo_advantage(rewards=rewards, group_index=group_index, norm_std=False)


def _compact_trainable(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the positions of trainable tokens moved to the front, order kept.

    Returns (order[B,T], compact_mask[B,T]): ``x.gather(1, order)`` lists a row's trainable
    tokens first; ``compact_mask[b, j]`` is 1 for the first ``mask[b].sum()`` slots.
    """
    keep = mask.bool()
    # A stable sort on "is not trainable" puts trainable positions first in their order.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    compact_mask = keep.gather(1, order)
    return order, compact_mask


def _discounted_reverse_cumsum(x: Tensor, factor: float, chunk: int = 128) -> Tensor:
    """``y_j = sum_{k >= j} factor**(k-j) * x_k`` along dim 1, vectorised.

    Within a chunk the sum is a matmul with a triangular matrix of powers; chunks are chained
    from the right with the carried value. Only non-negative powers appear, so there is no
    under/overflow from dividing by ``factor**k`` (the naive cumsum trick breaks at T ~ 2k).
    """
    B, T = x.shape
    if T == 0:
        return x.clone()
    c = min(chunk, T)
    idx = torch.arange(c, device=x.device)
    expo = (idx[None, :] - idx[:, None]).to(x.dtype)  # [k_row=j, k_col=k] -> k - j
    tri = (idx[None, :] >= idx[:, None])
    powers = torch.where(tri, torch.full_like(expo, factor) ** expo.clamp(min=0),
                         torch.zeros_like(expo))  # powers[j, k] = factor**(k-j), k >= j
    out = torch.empty_like(x)
    carry = torch.zeros(B, dtype=x.dtype, device=x.device)  # y at the first slot after chunk
    for end in range(T, 0, -c):
        start = max(0, end - c)
        n = end - start
        block = x[:, start:end]
        p = powers[:n, :n]
        y = block @ p.T  # y[:, j] = sum_k p[j, k] * block[:, k]
        # Carry from the right: factor**(n - j) * y_next.
        tail = torch.full((n,), factor, dtype=x.dtype, device=x.device) ** torch.arange(
            n, 0, -1, device=x.device, dtype=x.dtype)
        y = y + carry[:, None] * tail[None, :]
        out[:, start:end] = y
        carry = y[:, 0]
    return out


@register_advantage_estimator("gae", level="token")
def gae_advantage(*, token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
                  lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """GAE over the trainable tokens only (docs/algorithms.md, "PPO with GAE over trainable tokens").

    Tokens with ``mask == 0`` (prompt, tool responses, padding) are not steps: they are
    skipped, so the next value for a trainable token is the critic's value at the next
    *trainable* token of the same row (0 after the last one). With the trainable tokens of a
    row re-indexed ``j = 0..m-1``::

        delta_j = r_j + gamma * V_{j+1} - V_j          (V_m = 0)
        A_j     = delta_j + gamma * lam * A_{j+1}      (A_m = 0)
        R_j     = A_j + V_j

    Args:
        token_rewards: Tensor[B,T]; usually the sequence reward on the last trainable token.
            Entries at mask-0 positions are ignored, so put rewards on trainable tokens.
        values: Tensor[B,T], the critic's value per token (detached by the caller).
        mask: Tensor[B,T] (bool/int/float), 1 on trainable tokens.
        gamma, lam: discount and GAE lambda (paper setup: 1.0 and 0.95).
    Returns:
        (advantages[B,T], returns[B,T]), float32 (or the input's wider float type), zero at
        mask-0 positions.
    """
    if not (token_rewards.shape == values.shape == mask.shape) or values.dim() != 2:
        raise ValueError(f"token_rewards, values, mask must all be [B,T], got "
                         f"{tuple(token_rewards.shape)}, {tuple(values.shape)}, "
                         f"{tuple(mask.shape)}")
    dtype = torch.promote_types(values.dtype, torch.float32)
    order, cmask = _compact_trainable(mask)
    cm = cmask.to(dtype)
    r = token_rewards.to(dtype).gather(1, order) * cm
    v = values.to(dtype).gather(1, order) * cm
    v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)  # 0 past the last slot
    delta = (r + gamma * v_next - v) * cm
    # float64 for the scan: under set_float32_matmul_precision("high") a float32 matmul runs
    # in TF32 (10-bit mantissa) on GPUs, which would cost ~1e-3 relative error here.
    adv_c = _discounted_reverse_cumsum(delta.double(), gamma * lam).to(dtype) * cm
    ret_c = (adv_c + v) * cm
    # Scatter back: the slots past a row's trainable count carry zeros, and every original
    # position appears exactly once in ``order``, so masked positions end at zero.
    advantages = torch.zeros_like(adv_c).scatter_(1, order, adv_c)
    returns = torch.zeros_like(ret_c).scatter_(1, order, ret_c)
    return advantages, returns


def broadcast_sequence_advantage(*, advantages: Tensor, mask: Tensor) -> Tensor:
    """Spread one advantage per sequence over its trainable tokens.

    Args:
        advantages: Tensor[N]. mask: Tensor[N,T], 1 on trainable tokens.
    Returns:
        Tensor[N,T]: ``advantages[i]`` where ``mask[i, t]`` is 1, else 0.
    """
    if advantages.dim() != 1 or mask.dim() != 2 or mask.shape[0] != advantages.shape[0]:
        raise ValueError(f"expected advantages [N] and mask [N,T], got "
                         f"{tuple(advantages.shape)} and {tuple(mask.shape)}")
    return advantages[:, None] * mask.to(advantages.dtype)
