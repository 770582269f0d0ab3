"""What one RL step samples: a batch of prompts, their rollouts, and the rollouts' rewards
(with the per-step reward and rollout metrics)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from tirl.core.agent.backends import make_backend
from tirl.core.agent.rollout import RolloutConfig, rollout_stats, run_rollouts
from tirl.core.rewards.prs import reward_stats
from tirl.core.types import RewardBreakdown, RewardFn, Trajectory

#: ``rollout_fn(questions, group_size, seed) -> trajectories`` (``group_size`` per question,
#: any order; they are grouped by ``question_id``).
RolloutFn = Callable[[list[dict[str, Any]], int, int], list[Trajectory]]

#: A step past any reward schedule's ramp: the reward with its curriculum finished.
SCHEDULE_DONE = 10 ** 9


class PromptSampler:
    """Epoch-wise shuffled prompt indices; its whole state is ``(epoch, position)``.

    A batch never spans an epoch boundary (the tail of an epoch is skipped), so one batch
    never holds the same prompt twice.
    """

    def __init__(self, n: int, batch: int, seed: int) -> None:
        if batch > n:
            raise ValueError(f"batch_prompts: {batch} is larger than the {n} training questions")
        self.n, self.batch, self.seed = n, batch, seed
        self.epoch, self.position = 0, 0

    def _perm(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def next_batch(self) -> list[int]:
        if self.position + self.batch > self.n:
            self.epoch, self.position = self.epoch + 1, 0
        idx = self._perm()[self.position:self.position + self.batch]
        self.position += self.batch
        return [int(i) for i in idx]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def make_agent_rollout_fn(*, policy: torch.nn.Module, tokenizer: Any,
                          tools: Sequence[Any] | dict[str, Any], config: RolloutConfig
                          ) -> tuple[RolloutFn, Any]:
    """The default rollout function: the multi-turn agent engine on ``policy``.

    Returns ``(rollout_fn, backend)``; the backend is returned so that the trainer can push
    new weights to it (``sync_weights``) where it keeps its own copy (vLLM).
    """
    kwargs = {"max_batch": config.max_batch} if config.backend == "hf" else {}
    engine = make_backend(config.backend, policy, tokenizer, **kwargs)
    registry = dict(tools) if isinstance(tools, dict) else {t.name: t for t in tools}

    def rollout(questions: list[dict[str, Any]], group_size: int, seed: int) -> list[Trajectory]:
        return run_rollouts(backend=engine, tokenizer=tokenizer, tools=registry,
                            questions=questions, group_size=group_size, config=config,
                            progress=False, seed=seed)

    return rollout, engine


def score(reward_fn: RewardFn, questions: Sequence[dict[str, Any]],
          trajectories: Sequence[Trajectory], step: int) -> list[RewardBreakdown]:
    """The reward of each trajectory, against its question, at schedule step ``step``."""
    by_id = {str(q["id"]): q for q in questions}
    return [reward_fn(t, by_id[str(t.question_id)], step=step) for t in trajectories]


#: The rollout metrics RL logs every step: per-trajectory means of
#: :func:`tirl.core.agent.rollout.rollout_stats` (its totals would not average across processes).
RL_ROLLOUT_METRICS = ("rollout/turns_mean", "rollout/tool_calls_mean",
                      "rollout/generated_tokens_mean", "rollout/answered_rate")


def reward_metrics(rs: Sequence[RewardBreakdown], trajs: Sequence[Trajectory]
                   ) -> dict[str, float]:
    """Means over this process's fresh rollouts (the learning curve: before replacement)."""
    rollout = rollout_stats(trajs)
    return {**reward_stats(rs), **{k: float(rollout[k]) for k in RL_ROLLOUT_METRICS}}
