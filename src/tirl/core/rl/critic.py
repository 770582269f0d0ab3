"""PPO critic: a scalar value head on a copy of the (SFT) policy's transformer.

docs/algorithms.md, "PPO with GAE over trainable tokens": a critic, a value head on a copy
of the SFT model. The copy shares no parameters with the policy, so the value loss never
moves the policy, and the head starts at zero so the first values are 0 (a neutral baseline
rather than noise).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class Critic(nn.Module):
    """``values = head(backbone(input_ids).last_hidden_state)``.

    ``backbone`` is the transformer body of a causal LM (``model.base_model``: the part
    without the LM head), deep-copied from the policy.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        body = getattr(policy, "base_model", policy)
        self.backbone = copy.deepcopy(body)
        self.backbone.train()
        hidden = policy.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Values of every prefix.

        Args: input_ids, attention_mask: [N, T].
        Returns: [N, T] float32; ``values[:, t]`` estimates the return after reading tokens
        ``0..t`` (the state in which token ``t + 1`` is chosen).
        """
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.head(hidden).squeeze(-1).float()


def make_critic(policy: nn.Module) -> Critic:
    """A fresh critic whose backbone is a copy of ``policy``'s (call it before RL updates)."""
    return Critic(policy)
