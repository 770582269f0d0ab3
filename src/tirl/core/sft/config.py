"""The configuration of the SFT warm start (``sft``): :class:`SFTConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from tirl.core.config import field_

SCHEDULES = ("cosine", "linear", "constant")
PRACTICE_PHASES = ("pretrain", "sft")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class SFTConfig:
    """``sft`` parameters."""

    pretrain_steps: int = field_(0, doc="LM steps on packed corpus passages before SFT (0 = none)", ge=0)
    pretrain_seq_len: int = field_(256, doc="tokens per packed pretraining sequence", ge=8)
    pretrain_batch_size: int = field_(16, doc="sequences per pretraining step", ge=1)
    pretrain_lr: float = field_(1e-3, doc="peak learning rate of the LM phase", gt=0)
    pretrain_chats: bool = field_(False, doc="LM phase also reads the rendered training chats with "
                                             "loss on every token (teaches copying names from context)")
    epochs: float = field_(3.0, doc="passes over the gold trajectories (ignored if max_steps)", gt=0)
    max_steps: int | None = field_(None, doc="SFT optimiser steps; null = from epochs", ge=1)
    batch_size: int = field_(8, doc="chats per micro-batch", ge=1)
    grad_accum: int = field_(1, doc="micro-batches per optimiser step", ge=1)
    lr: float = field_(1e-3, doc="peak SFT learning rate", gt=0)
    min_lr_ratio: float = field_(0.1, doc="final lr as a fraction of the peak (cosine/linear)", ge=0, le=1)
    warmup_steps: int = field_(10, doc="linear warmup steps of each phase", ge=0)
    schedule: str = field_("cosine", doc="lr decay after warmup", choices=SCHEDULES)
    weight_decay: float = field_(0.01, doc="AdamW decoupled weight decay", ge=0)
    beta1: float = field_(0.9, doc="AdamW beta1", ge=0, le=1)
    beta2: float = field_(0.98, doc="AdamW beta2", ge=0, le=1)
    max_grad_norm: float = field_(1.0, doc="gradient clipping norm (0 = off)", ge=0)
    max_len: int = field_(1024, doc="chats longer than this many tokens are dropped", ge=8)
    logits_chunk: int | None = field_(
        1024, doc="most positions whose vocabulary logits exist at once (head a chunk at a time, "
                  "recomputed in the backward; same loss); null = the full logits", ge=1)
    precision: str = field_("fp32", doc="fp32, or bf16 autocast (CPU and GPU)", choices=PRECISIONS)
    train_top_layers: int | None = field_(
        None, doc="train only the top N decoder layers and the final norm; null = every "
                  "parameter (tirl.core.modeling.trainable)", ge=1)
    seed: int = field_(0, doc="seed for batching order and torch")
    log_every: int = field_(10, doc="log a progress line every this many steps", ge=1)
    train_splits: tuple[str, ...] = field_(("train",), doc="question splits whose gold chats are trained on")
    probe_splits: tuple[str, ...] = field_(("train", "val"), doc="splits whose gold chats are probed")
    probe_size: int = field_(8, doc="gold chats per probe split greedily decoded after training (0 = none)", ge=0)
    probe_max_new_tokens: int = field_(64, doc="token budget per probed turn", ge=1)
    progress_bar: bool = field_(True, doc="show a tqdm progress bar")
    practice_phases: tuple[str, ...] = field_(
        ("pretrain", "sft"), doc="phases that also train on the practice chats, if any were given "
                                 "(subset of pretrain, sft)")

    def __post_init__(self) -> None:
        bad = [p for p in self.practice_phases if p not in PRACTICE_PHASES]
        if bad:
            raise ValueError(f"practice_phases: {bad} not in {list(PRACTICE_PHASES)}")
