"""What the RL loop asks of the other processes (``accelerate``): sums, maxima, gathered
lists and gradient-sync control. With one process every helper is the identity.

Every process must run the same collective operations in the same order, or they deadlock;
the callers keep that invariant (same number of steps, minibatches and micro-batches
everywhere), these helpers only carry the values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import gather_object


def global_sum(acc: Any, values: Sequence[float]) -> list[float]:
    """Sum ``values`` over processes (identity with one process)."""
    if acc.num_processes == 1:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=acc.device)
    return [float(v) for v in acc.reduce(t, reduction="sum").cpu()]


def global_max(acc: Any, value: int) -> int:
    """The largest ``value`` over processes (identity with one process)."""
    if acc.num_processes == 1:
        return int(value)
    return int(acc.gather(torch.tensor([int(value)], device=acc.device)).max())


def all_groups(acc: Any, items: list[Any]) -> list[Any]:
    """Concatenate per-process lists in process order (identity with one process)."""
    if acc.num_processes == 1:
        return list(items)
    return list(gather_object(items))


def no_sync(acc: Any, modules: Sequence[torch.nn.Module], skip: bool) -> contextlib.ExitStack:
    """A context without DDP's gradient all-reduce for ``modules`` when ``skip`` (every
    micro-batch but an optimiser step's last: the gradients are reduced once, summed)."""
    stack = contextlib.ExitStack()
    if skip and acc.num_processes > 1:
        for m in modules:
            stack.enter_context(acc.no_sync(m))
    return stack
