"""The configuration of online RL (``rl.train``): :class:`TrainConfig`, and the
reward function it names.

One config runs every optimiser of the paper's comparison (docs/algorithms.md):

==========  ============================  ===============  =========================
algorithm   replacement (VSPO step 4)     advantage        policy loss
==========  ============================  ===============  =========================
vspo        ``vspo.selection`` (value...)  grpo | drgrpo    ppo_clip
grpo        none (VSPO, selection none)    grpo | drgrpo    ppo_clip
cispo       none                           grpo | drgrpo    cispo
ppo         none                           gae (critic)     ppo_clip + clipped value
==========  ============================  ===============  =========================
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tirl.core.agent.rollout import RolloutConfig
from tirl.core.config import field_
from tirl.core.rewards.prs import JudgeSpec, PRSConfig, RewardConfig, build_reward_fn
from tirl.core.rl.advantages import ADVANTAGE_ESTIMATORS
from tirl.core.rl.kl import KL_ESTIMATORS as KL_REGISTRY
from tirl.core.rl.losses import LOSS_AGGREGATIONS, POLICY_LOSSES
from tirl.core.rl.vspo import VSPOConfig
from tirl.core.types import RewardFn

ALGORITHMS = ("vspo", "grpo", "ppo", "cispo")
GROUP_METHODS = ("vspo", "grpo", "cispo")
# Config choices are the registries' names: registering a function makes it a config value.
ADVANTAGES = ("auto", *ADVANTAGE_ESTIMATORS)
POLICY_LOSS_NAMES = ("auto", *POLICY_LOSSES)
KL_ESTIMATORS = tuple(KL_REGISTRY)
AGGREGATIONS = tuple(LOSS_AGGREGATIONS)
LR_SCHEDULES = ("constant", "linear", "cosine")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Online RL stage (``rl``). One line of doc per field."""

    algorithm: str = field_("vspo", doc="vspo | grpo (= vspo, selection none) | ppo | cispo",
                            choices=ALGORITHMS)
    reward: str = field_("prs", doc="reward function: prs (staged) | binary (0/1 EM)",
                         choices=("prs", "binary"))
    advantage: str = field_("auto", doc="auto (gae for ppo, else grpo) | grpo | drgrpo | gae",
                            choices=ADVANTAGES)
    policy_loss: str = field_("auto", doc="auto (cispo for cispo, else ppo_clip) | ppo_clip | cispo",
                              choices=POLICY_LOSS_NAMES)
    loss_aggregation: str = field_(
        "token_mean", doc="how the policy loss averages over the minibatch: token_mean (every "
                          "trainable token weighs the same; DAPO, Dr.GRPO) | seq_mean_token_mean "
                          "(original GRPO) | seq_mean_token_sum", choices=AGGREGATIONS)
    kl_estimator: str = field_("k3", doc="KL-to-reference estimator", choices=KL_ESTIMATORS)
    kl_beta: float = field_(0.001, doc="KL coefficient (paper 0.001); 0 drops the reference model",
                            ge=0.0)
    clip_eps: float = field_(0.2, doc="PPO clip ratio (paper 0.2); CISPO: IS-weight upper clip",
                            gt=0.0)
    clip_eps_high: float | None = field_(None, doc="upper clip (DAPO clip-higher); null = clip_eps")
    entropy_coef: float = field_(0.0, doc="entropy bonus coefficient (0 = report only)", ge=0.0)
    lr: float = field_(1e-6, doc="AdamW learning rate (paper 1e-6)", gt=0.0)
    weight_decay: float = field_(0.0, doc="AdamW weight decay", ge=0.0)
    steps: int = field_(100, doc="RL steps (one batch of prompts each)", ge=1)
    batch_prompts: int = field_(8, doc="B: prompts per step (global, over all processes)", ge=1)
    group_size: int = field_(5, doc="G: rollouts per prompt (paper 5)", ge=1)
    ppo_epochs: int = field_(1, doc="passes over each batch", ge=1)
    minibatch_size: int | None = field_(None, doc="trajectories per optimiser step; null = B*G",
                                        ge=1)
    grad_accum: int = field_(1, doc="micro-batches per optimiser step (minibatch split)", ge=1)
    micro_tokens: int | None = field_(
        16384, doc="most tokens (rows x padded length) in one forward pass; larger micro-"
                   "batches are split further, exactly (losses are sums over the global token "
                   "count); null = no limit", ge=1)
    logits_chunk: int | None = field_(
        1024, doc="most positions whose vocabulary logits exist at once in a log-prob forward "
                  "(hidden states -> head a chunk at a time, recomputed in the backward; same "
                  "values); null = the full logits (tokens x vocab floats)", ge=1)
    max_grad_norm: float = field_(1.0, doc="gradient clipping norm", gt=0.0)
    lr_schedule: str = field_("constant", doc="lr schedule after warmup", choices=LR_SCHEDULES)
    warmup_steps: int = field_(0, doc="linear warmup, in RL steps", ge=0)
    precision: str = field_("fp32", doc="fp32 | bf16 (autocast; master weights stay fp32)",
                            choices=PRECISIONS)
    train_top_layers: int | None = field_(
        None, doc="train only the top N decoder layers and the final norm; null = every "
                  "parameter (tirl.core.modeling.trainable)", ge=1)
    seed: int = field_(0, doc="seed of sampling, shuffling and VSPO selection")
    checkpoint_every: int = field_(0, doc="save a checkpoint every N steps (0 = never)", ge=0)
    val_every: int = field_(0, doc="run the validate callback before step 0, every N steps and "
                                   "at the end (0 = never)", ge=0)
    log_completions: int = field_(
        2, doc="prompts per step whose completions (every sample, with reward, gold answer and "
               "correctness) go to the completions table (MLflow rl/completions.json); 0 = none",
        ge=0)
    keep_checkpoints: int = field_(2, doc="complete checkpoints kept on disk", ge=1)
    max_nonfinite_in_row: int = field_(3, doc="consecutive non-finite steps before stopping", ge=1)
    gamma: float = field_(1.0, doc="PPO/GAE discount", ge=0.0, le=1.0)
    gae_lambda: float = field_(0.95, doc="PPO/GAE lambda", ge=0.0, le=1.0)
    value_clip: float = field_(0.2, doc="PPO clipped value loss range", gt=0.0)
    value_coef: float = field_(0.5, doc="PPO value-loss weight", ge=0.0)
    critic_lr: float | None = field_(None, doc="critic lr; null = lr", gt=0.0)
    vspo: VSPOConfig = field_(default_factory=VSPOConfig, doc="VSPO options (docs/algorithms.md, VSPO)")
    rollout: RolloutConfig = field_(default_factory=RolloutConfig, doc="rollout engine options")
    prs: PRSConfig = field_(default_factory=PRSConfig, doc="PRS stage values and schedule")
    judge: JudgeSpec = field_(default_factory=JudgeSpec, doc="long-form judge (PRS and binary)")

    def __post_init__(self) -> None:
        adv, loss = self.resolved_advantage, self.resolved_policy_loss
        if self.algorithm == "ppo" and adv != "gae":
            raise ValueError(f"advantage: ppo needs 'gae' (critic), got {self.advantage!r}")
        if self.algorithm != "ppo" and adv == "gae":
            raise ValueError(f"advantage: 'gae' needs algorithm 'ppo' (a critic), "
                             f"got algorithm {self.algorithm!r}")
        if self.algorithm == "cispo" and loss != "cispo":
            raise ValueError(f"policy_loss: algorithm cispo needs 'cispo', got {self.policy_loss!r}")
        if self.algorithm in GROUP_METHODS and self.group_size < 2:
            raise ValueError(f"group_size: {self.algorithm} compares rollouts within a group "
                             f"and needs group_size >= 2, got {self.group_size}")
        total = self.batch_prompts * self.group_size
        mb = self.minibatch_size or total
        if total % mb:
            raise ValueError(f"minibatch_size: batch_prompts*group_size = {total} is not "
                             f"divisible by minibatch_size = {mb}")
        if mb % self.grad_accum:
            raise ValueError(f"grad_accum: minibatch_size = {mb} is not divisible by "
                             f"grad_accum = {self.grad_accum}")
        if self.clip_eps_high is not None and self.clip_eps_high <= 0:
            raise ValueError(f"clip_eps_high: {self.clip_eps_high} must be > 0")

    @property
    def resolved_advantage(self) -> str:
        if self.advantage != "auto":
            return self.advantage
        return "gae" if self.algorithm == "ppo" else "grpo"

    @property
    def resolved_policy_loss(self) -> str:
        if self.policy_loss != "auto":
            return self.policy_loss
        return "cispo" if self.algorithm == "cispo" else "ppo_clip"

    @property
    def uses_replacement(self) -> bool:
        """VSPO replacement runs for vspo and grpo (grpo = selection none)."""
        return self.algorithm in ("vspo", "grpo")

    @property
    def effective_vspo(self) -> VSPOConfig:
        return replace(self.vspo, selection="none") if self.algorithm == "grpo" else self.vspo

    @property
    def n_minibatches(self) -> int:
        total = self.batch_prompts * self.group_size
        return total // (self.minibatch_size or total)


def make_reward(config: TrainConfig, judge: Any | None = None) -> RewardFn:
    """The reward function named by ``config.reward`` with its PRS options and judge."""
    return build_reward_fn(RewardConfig(reward=config.reward, prs=config.prs,
                                        judge=config.judge), judge=judge)
