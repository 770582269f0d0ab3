"""A run's checkpoints: what they hold, which run they belong to (its fingerprint), and
resuming from the newest one. Files are written atomically by :mod:`tirl.core.rl.checkpoint`.

A checkpoint holds the ``state_dict`` of every stateful part of a run (policy, critic,
optimiser, lr schedule, prompt sampler, VSPO value table), the :class:`RunState`, every RNG
state and the fingerprint; one from another run is moved aside and the run starts fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tirl.core.rl import checkpoint as ckpt
from tirl.core.rl.config import TrainConfig

logger = logging.getLogger(__name__)

#: Fields that may change between a run and its resumption without making it another run
#: (``micro_tokens`` splits the same sums differently, ``logits_chunk`` computes the same
#: log-probs a chunk at a time: memory settings, not a new run).
_RESUMABLE_FIELDS = ("steps", "checkpoint_every", "keep_checkpoints", "micro_tokens",
                     "logits_chunk")


@dataclass
class RunState:
    """Everything that changes over a run and goes into a checkpoint (besides the parts)."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    nonfinite_in_row: int = 0


def run_fingerprint(config: TrainConfig, policy: torch.nn.Module,
                    questions: Sequence[dict[str, Any]]) -> str:
    """Identity of a training run: its settings (less :data:`_RESUMABLE_FIELDS`), a digest of
    the starting weights and the question ids. A checkpoint resumes only the same run."""
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in _RESUMABLE_FIELDS}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in policy.state_dict().items():
            flat = p.detach().reshape(-1)
            # Shape plus a few values from both ends: cheap for 7B models, and any change of
            # starting checkpoint changes them.
            sample = torch.cat([flat[:256], flat[-256:]]).float().cpu().numpy().tobytes()
            h.update(name.encode() + str(tuple(p.shape)).encode() + sample)
    h.update(json.dumps([q["id"] for q in questions]).encode())
    return h.hexdigest()[:16]


def save_run(checkpoint_dir: Path | str, state: RunState, parts: Mapping[str, Any], *,
             fingerprint: str, keep: int) -> None:
    """Checkpoint ``state`` and the ``state_dict`` of each of ``parts`` (None: no such part)
    under ``checkpoint_dir``, keeping the newest ``keep``."""
    ckpt.save_checkpoint(checkpoint_dir, state.step, {
        **{name: p.state_dict() if p is not None else None for name, p in parts.items()},
        "step": state.step, "history": state.history,
        "nonfinite_in_row": state.nonfinite_in_row, "rng": ckpt.rng_state(),
        "fingerprint": fingerprint,
    }, keep=keep)


def resume_run(checkpoint_dir: Path | str, parts: Mapping[str, Any], *,
               fingerprint: str) -> RunState:
    """Load the newest complete checkpoint of the run ``fingerprint`` into ``parts`` and the
    RNGs; its state, or a fresh one where there is none."""
    loaded = ckpt.load_latest(checkpoint_dir)
    if loaded is not None and loaded.state.get("fingerprint") != fingerprint:
        # Same folder, other run: resuming would silently continue training that used
        # other settings, another starting model or other questions. Keep it, aside.
        stale = ckpt.set_aside(checkpoint_dir)
        logger.warning("resume: the checkpoints in %s come from a run with other settings, "
                       "starting model or questions; moved them to %s and starting fresh",
                       checkpoint_dir, stale)
        loaded = None
    if loaded is None:
        logger.info("resume: no matching checkpoint in %s, starting fresh", checkpoint_dir)
        return RunState()
    s = loaded.state
    for name, p in parts.items():
        if p is not None:
            p.load_state_dict(s[name])
    ckpt.set_rng_state(s["rng"])
    logger.info("resumed from %s (step %d)", loaded.path, loaded.step)
    return RunState(step=s["step"], history=list(s["history"]),
                    nonfinite_in_row=s["nonfinite_in_row"])
