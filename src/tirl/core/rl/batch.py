"""Where a rollout becomes training tensors: scored trajectories -> groups -> a padded
:class:`Batch`, its split into micro-batches, and the log-probs a model gives it.

Token-in/token-out: the loss is computed on ``Trajectory.token_ids`` as sampled; nothing is
re-tokenised. Tokens with ``mask == 0`` (prompt, tool responses, padding) never enter the
loss, the KL, the entropy or the advantage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tirl.core.modeling import chunked
from tirl.core.modeling.logprobs import logprobs_and_entropy
from tirl.core.modeling.prefix import next_token_hidden, next_token_logits
from tirl.core.rl.vspo import GroupResult
from tirl.core.types import RewardBreakdown, Trajectory


def group_trajectories(questions: Sequence[dict[str, Any]], trajectories: Sequence[Trajectory],
                       rewards: Sequence[RewardBreakdown]) -> list[GroupResult]:
    """One :class:`GroupResult` per question, in the order of ``questions``; rollouts
    within a group ordered by ``sample_idx``."""
    by_id: dict[str, list[tuple[Trajectory, RewardBreakdown]]] = {}
    for t, r in zip(trajectories, rewards, strict=True):
        by_id.setdefault(str(t.question_id), []).append((t, r))
    groups = []
    for q in questions:
        pairs = sorted(by_id.get(str(q["id"]), []), key=lambda p: p[0].sample_idx)
        if not pairs:
            raise RuntimeError(f"rollout returned no trajectory for question {q['id']!r}")
        groups.append(GroupResult(prompt_id=str(q["id"]), rewards=[p[1].reward for p in pairs],
                                  outcomes=[p[1].outcome for p in pairs],
                                  trajectories=[p[0] for p in pairs]))
    return groups


@dataclass
class Batch:
    """Padded training tensors of N trajectories, aligned with *next-token targets*.

    ``input_ids``/``attention_mask``: [N, T]. Every other tensor is [N, T-1]: position ``t``
    is the prediction of token ``t + 1`` (``loss_mask[:, t] = mask[t + 1]``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    sample_logprobs: torch.Tensor
    advantages: torch.Tensor
    reused: torch.Tensor  # [N] bool
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: torch.Tensor) -> "Batch":
        """Rows ``idx``, trimmed to the longest remaining sequence (saves compute)."""
        length = int(self.attention_mask[idx].sum(-1).max())
        out = {}
        for name, v in self.__dict__.items():
            if v is None:
                out[name] = None
            elif name == "reused":
                out[name] = v[idx]
            elif name in ("input_ids", "attention_mask"):
                out[name] = v[idx, :length]
            else:
                out[name] = v[idx, :length - 1]
        return Batch(**out)

    def to(self, device: torch.device) -> "Batch":
        return Batch(**{k: (v.to(device) if torch.is_tensor(v) else v)
                        for k, v in self.__dict__.items()})


def collate(groups: Sequence[GroupResult], *, pad_id: int,
            seq_advantages: Sequence[float]) -> Batch:
    """Right-pad the trajectories of ``groups`` (flattened in order) into a :class:`Batch`.

    ``seq_advantages``: one scalar per trajectory, broadcast over its trainable tokens (GRPO).
    Groups with ``origin == "reuse"`` keep their sampling log-probs as behaviour log-probs.
    """
    trajs = [t for g in groups for t in g.trajectories]
    reused = [g.origin == "reuse" for g in groups for _ in g.trajectories]
    n, length = len(trajs), max(len(t.token_ids) for t in trajs)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    attn = torch.zeros((n, length), dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.float32)
    lps = torch.zeros((n, length), dtype=torch.float32)
    for i, t in enumerate(trajs):
        if not (len(t.token_ids) == len(t.mask) == len(t.logprobs)):
            raise ValueError(f"trajectory {t.question_id}/{t.sample_idx}: token_ids, mask and "
                             f"logprobs lengths differ")
        k = len(t.token_ids)
        ids[i, :k] = torch.tensor(t.token_ids, dtype=torch.long)
        attn[i, :k] = 1
        mask[i, :k] = torch.tensor(t.mask, dtype=torch.float32)
        lps[i, :k] = torch.tensor(t.logprobs, dtype=torch.float32)
    loss_mask = mask[:, 1:]
    adv = torch.tensor(list(seq_advantages), dtype=torch.float32)[:, None] * loss_mask
    return Batch(input_ids=ids, attention_mask=attn, loss_mask=loss_mask,
                 sample_logprobs=lps[:, 1:] * loss_mask, advantages=adv,
                 reused=torch.tensor(reused, dtype=torch.bool))


def token_budget_split(lengths: torch.Tensor, rows: torch.Tensor,
                       max_tokens: int | None) -> list[torch.Tensor]:
    """Split ``rows`` into micro-batches of at most ``max_tokens`` padded tokens each.

    lengths: [N] sequence lengths; rows: indices into it. Rows go longest first, so that each
    micro-batch (padded to its longest row, see :meth:`Batch.select`) pads little; a row
    longer than the budget goes alone. ``max_tokens=None``: ``[rows]`` unchanged.
    """
    if max_tokens is None or rows.numel() == 0:
        return [rows]
    order = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
    sizes = lengths[order].tolist()
    out, start = [], 0
    while start < len(order):
        take = max(1, max_tokens // max(int(sizes[start]), 1))
        out.append(order[start:start + take])
        start += take
    return out


def model_token_logprobs(model: torch.nn.Module, *, input_ids: torch.Tensor,
                         attention_mask: torch.Tensor, with_entropy: bool = False,
                         entropy_grad: bool = False, needed: torch.Tensor | None = None,
                         logits_chunk: int | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the next tokens under ``model``, from one forward pass.

    Args: input_ids, attention_mask: [N, T]. ``with_entropy``: also the entropy of the
    next-token distribution, from the same logits. ``entropy_grad``: the entropy keeps its
    graph (an entropy bonus in the loss); without it the entropy is a metric, computed
    without gradient so that no [N, T-1, V] tensor is kept for a backward that never runs.
    ``needed`` [N, T-1]: the targets whose values the caller reads (the loss mask). With it,
    the prefix every row shares up to the first needed target (the system prompt, about half
    of an agent episode) runs once (:func:`tirl.core.modeling.prefix.next_token_logits`), and
    the targets before that first one are 0. ``logits_chunk``: where the model allows it
    (:func:`tirl.core.modeling.chunked.output_head`), the logits of at most this many
    positions exist at a time, and only at the needed (else the attended) targets: the
    others are 0. None: the full [N, T-1, V] logits.
    Returns: logprobs [N, T-1] float32 (``[:, t] = log p(input_ids[:, t+1] | prefix)``) and
    the entropy [N, T-1] float32, or None.
    """
    cap = 0  # without `needed`: every target, no prefix run once
    if needed is not None:
        first = needed.any(dim=0).nonzero()
        cap = int(first[0]) + 1 if len(first) else input_ids.shape[1]
    head = chunked.output_head(model) if logits_chunk is not None else None
    if head is not None:
        hidden, start = next_token_hidden(model, input_ids, attention_mask, max_prefix=cap)
        read = needed if needed is not None else attention_mask[:, 1:]
        logprobs, entropy = chunked.masked_token_logprobs(
            hidden=hidden, head=head, token_ids=input_ids[:, start + 1:], mask=read[:, start:],
            chunk_tokens=logits_chunk, with_entropy=with_entropy, entropy_grad=entropy_grad)
    else:
        logits, start = next_token_logits(model, input_ids, attention_mask, max_prefix=cap)
        logprobs, entropy = logprobs_and_entropy(
            logits=logits, token_ids=input_ids[:, start + 1:], with_entropy=with_entropy,
            entropy_grad=entropy_grad)
    if start:
        logprobs = torch.nn.functional.pad(logprobs, (start, 0))
        entropy = None if entropy is None else torch.nn.functional.pad(entropy, (start, 0))
    return logprobs, entropy
