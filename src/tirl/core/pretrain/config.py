"""``pretrain`` parameters and the seed rules that keep pretraining off the benchmark.

The built-in base learns the *skill* (copy the question's entity into a query, pick the asked
fact out of the passages, search again for the second hop) on a stream of freshly generated
worlds, then SFT and RL run on the benchmark world. A world seed used in pretraining must
never be the benchmark world's seed nor a seed any evaluation (the reading probe) uses, or
the benchmark would measure recall instead of reading. :func:`pretrain_seeds` enforces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tirl.core.config import build_config, field_
from tirl.core.modeling.factory import ModelConfig
from tirl.core.world.config import WorldConfig


def _default_questions() -> dict[str, int]:
    # Short-form questions dominate, as in the benchmark's train split; composition is left
    # out so that the benchmark's out-of-domain relation chains stay unseen by the base.
    return {"single_hop": 120, "bridge": 90, "comparison": 60, "description": 6,
            "multi_question": 10}


@dataclass(frozen=True)
class PhaseConfig:
    """One phase of the curriculum (phases run in order)."""

    steps: int = field_(doc="optimiser steps of this phase", ge=1)
    context_weight: float = field_(
        1.0, doc="loss weight of non-assistant tokens (question, tool responses) relative to "
                 "assistant tokens (1); 0 = assistant-only loss. The system turn never has loss",
        ge=0.0)
    world: dict[str, Any] = field_(
        default_factory=dict, doc="WorldConfig overrides for the worlds of this phase "
                                  "(e.g. distractor_fraction), over pretrain.world")
    restart: bool = field_(
        False, doc="start a new learning-rate cycle here (warm restart): fresh AdamW moments, "
                   "warmup, then cosine decay to the end of the cycle, on a fresh block of "
                   "worlds. A finished base can be continued at a restart (continue_from)")
    lr: float | None = field_(None, doc="peak lr of the cycle this phase starts (restart "
                                        "only; null = pretrain.lr)", gt=0)
    warmup_steps: int | None = field_(None, doc="warmup steps of the cycle this phase starts "
                                                "(restart only; null = pretrain.warmup_steps)", ge=0)

    def __post_init__(self) -> None:
        if not self.restart and (self.lr is not None or self.warmup_steps is not None):
            raise ValueError("pretrain.phases: lr and warmup_steps belong to a phase with "
                             "restart: true (they set the cycle it starts)")


@dataclass(frozen=True)
class ProbeConfig:
    """The reading probe run on the finished base, for its model card."""

    world_seeds: tuple[int, ...] = field_((1, 2, 3), doc="worlds to probe on (must be reserved "
                                                         "seeds: never pretrained on)")
    n: int = field_(200, doc="short-form questions per world", ge=1)
    sample_seed: int = field_(0, doc="seed of the question sample")


@dataclass(frozen=True)
class PretrainConfig:
    """``pretrain`` parameters: the built-in base trained on a stream of fresh worlds."""

    first_seed: int = field_(1_000_000, doc="seed of the first pretraining world; world i has "
                                            "seed first_seed + i", ge=0)
    reserved_seeds: tuple[int, ...] = field_(
        (0, 1, 2, 3), doc="seeds pretraining must never use: the benchmark world's and the "
                          "evaluation (probe) worlds'")
    val_seed: int = field_(999_999, doc="world of the validation chats scored during "
                                        "pretraining (never trained on)", ge=0)
    val_chats: int = field_(96, doc="validation chats (0 = no validation)", ge=0)
    eval_every: int = field_(250, doc="validate every this many steps", ge=1)
    world: dict[str, Any] = field_(
        default_factory=dict, doc="WorldConfig overrides shared by every pretraining world "
                                  "(entity counts, distractor_fraction, ...)")
    questions: dict[str, int] = field_(
        default_factory=_default_questions, doc="question type -> questions per world")
    worlds_per_block: int = field_(4, doc="worlds whose chats are shuffled together", ge=1)
    tokenizer_worlds: int = field_(8, doc="pretraining worlds the tokenizer is trained on", ge=1)
    vocab_size: int = field_(8000, doc="BPE vocabulary cap", ge=300)
    min_frequency: int = field_(2, doc="minimum pair count for a BPE merge", ge=1)
    architecture: ModelConfig = field_(default_factory=ModelConfig, doc="model size")
    phases: tuple[PhaseConfig, ...] = field_(
        default_factory=lambda: (PhaseConfig(steps=100),), doc="curriculum phases, in order")
    batch_size: int = field_(16, doc="chats per optimiser step", ge=1)
    max_len: int = field_(1024, doc="chats longer than this many tokens are dropped", ge=16)
    lr: float = field_(2e-3, doc="peak learning rate", gt=0)
    min_lr_ratio: float = field_(0.05, doc="final lr as a fraction of the peak", ge=0, le=1)
    warmup_steps: int = field_(100, doc="linear warmup steps", ge=0)
    weight_decay: float = field_(0.05, doc="AdamW decoupled weight decay", ge=0)
    beta1: float = field_(0.9, doc="AdamW beta1", ge=0, le=1)
    beta2: float = field_(0.98, doc="AdamW beta2", ge=0, le=1)
    max_grad_norm: float = field_(1.0, doc="gradient clipping norm (0 = off)", ge=0)
    seed: int = field_(0, doc="torch seed (initialisation is architecture.seed)")
    checkpoint_dir: str | None = field_(
        "data/06_models/checkpoints/pretrain", doc="resumable checkpoints (null = none)")
    checkpoint_every: int = field_(250, doc="checkpoint every this many steps", ge=1)
    resume: bool = field_(True, doc="continue from the newest checkpoint in checkpoint_dir")
    continue_from: str | None = field_(
        None, doc="a base this recipe already produced (model directory with pretraining.json) "
                  "to continue from when checkpoint_dir holds no checkpoint: its steps must end "
                  "where a restart phase begins and its recorded recipe must equal this one "
                  "before that phase, so the result is the one the uninterrupted run gives")
    log_every: int = field_(25, doc="log a line every this many steps", ge=1)
    threads: int | None = field_(None, doc="torch CPU threads (null = torch's default)", ge=1)
    probe: ProbeConfig = field_(default_factory=ProbeConfig, doc="the model card's reading probe")

    def __post_init__(self) -> None:
        unreserved = [s for s in self.probe.world_seeds if s not in self.reserved_seeds]
        if unreserved:
            raise ValueError(f"probe.world_seeds {unreserved} are not in reserved_seeds "
                             f"{list(self.reserved_seeds)}: a probe world must be one that "
                             "pretraining never uses")
        if not self.phases:
            raise ValueError("phases: at least one phase is needed")
        # The worlds are built from these overrides only once training starts (after the
        # tokenizer): an unknown key or a bad value is refused here instead.
        # (As stream.world_config builds them: train questions of `questions`, then overrides.)
        train = {"questions": {"train": dict(self.questions)}}
        build_config(WorldConfig, {**train, **self.world}, "world")
        for i, phase in enumerate(self.phases):
            build_config(WorldConfig, {**train, **self.world, **phase.world}, f"phases[{i}].world")
        if self.val_chats and (self.val_seed in self.reserved_seeds):
            raise ValueError(f"val_seed {self.val_seed} is a reserved (benchmark/evaluation) seed")

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def phase_starts(self) -> list[int]:
        """The first step of each phase."""
        starts, step = [], 0
        for phase in self.phases:
            starts.append(step)
            step += phase.steps
        return starts

    def phase_at(self, step: int) -> int:
        """Index of the phase that holds ``step`` (the last phase past the end)."""
        return max(i for i, start in enumerate(self.phase_starts()) if start <= step)

    def cycle_at(self, step: int) -> tuple[int, int, int, float, int]:
        """``(index, first_step, end_step, peak_lr, warmup)`` of the learning-rate cycle that
        holds ``step``: the first phase and every ``restart`` phase begin one."""
        starts = self.phase_starts()
        bounds = [i for i, p in enumerate(self.phases) if i == 0 or p.restart]
        index = max(j for j, i in enumerate(bounds) if starts[i] <= step or i == 0)
        first = bounds[index]
        end = starts[bounds[index + 1]] if index + 1 < len(bounds) else self.total_steps
        phase = self.phases[first]
        lr = phase.lr if phase.restart and phase.lr is not None else self.lr
        warmup = phase.warmup_steps if phase.restart and phase.warmup_steps is not None else self.warmup_steps
        return index, starts[first], end, lr, warmup


def pretrain_seeds(first_seed: int, n_worlds: int, reserved: tuple[int, ...] | list[int],
                   val_seed: int | None = None) -> range:
    """Seeds of ``n_worlds`` pretraining worlds; raises ValueError when the range contains a
    reserved seed (benchmark or evaluation world) or the validation world's seed."""
    seeds = range(first_seed, first_seed + n_worlds)
    clash = sorted(s for s in set(reserved) if s in seeds)
    if clash:
        raise ValueError(f"pretraining world seeds {first_seed}..{first_seed + n_worlds - 1} "
                         f"include reserved seed(s) {clash} (benchmark or evaluation worlds): "
                         "pretraining on them would make the benchmark measure recall")
    if val_seed is not None and val_seed in seeds:
        raise ValueError(f"pretraining world seeds {first_seed}..{first_seed + n_worlds - 1} "
                         f"include the validation world's seed {val_seed}")
    return seeds

