"""The VSPO value table: per-prompt statistics across steps (docs/algorithms.md, VSPO steps 1,
3 and 5). Options and maths: :mod:`tirl.core.rl.vspo`; the step that reads it:
:mod:`tirl.core.rl.vspo_step`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from tirl.core.rl.vspo import GroupResult, VSPOConfig, group_moments, task_value
from tirl.core.types import Trajectory

log = logging.getLogger(__name__)

_STATE_VERSION = 1


@dataclass
class _Entry:
    value: float  # V at the latest visit
    ema: float  # moving average of V over visits
    mu: float
    sigma: float
    step: int  # step of the latest visit
    visits: int
    selected: list[int] = field(default_factory=list)  # steps it was selected at (in window)
    stored: dict[str, Any] | None = None  # refill "reuse": records, rewards, outcomes, step


_ENTRY_KEYS = tuple(f.name for f in dataclasses.fields(_Entry))


class ValueTable:
    """Per-prompt statistics for VSPO (docs/algorithms.md, VSPO steps 1, 3 and 5).

    Each entry holds the latest task value ``V``, its moving average over visits, the latest
    ``mu``/``sigma``, the step last seen, the number of visits, the steps at which it was
    selected for a refill (pruned to the window) and, for ``refill == "reuse"``, the last
    group with non-zero spread (pruned once it falls out of the window).
    """

    def __init__(self, config: VSPOConfig) -> None:
        self.config = config
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prompt_id: str) -> bool:
        return prompt_id in self._entries

    def entry(self, prompt_id: str) -> dict[str, Any]:
        """A copy of one entry's fields (for inspection and tests)."""
        return dataclasses.asdict(self._entries[prompt_id])

    def _in_window(self, seen: int, step: int) -> bool:
        return step - seen <= self.config.window

    def update(self, *, step: int, groups: Sequence[GroupResult]) -> None:
        """Record a visit of each group's prompt at ``step`` (mu, sigma, V, EMA, visits)."""
        cfg = self.config
        for g in groups:
            signal = g.signal(cfg.zero_signal)
            mu, sigma = group_moments(signal)
            if mu > cfg.r_max + 1e-9:
                log.warning("prompt %r: signal mean %.4g exceeds r_max %.4g; task value "
                            "clamped to 0 (check vspo.r_max)", g.prompt_id, mu, cfg.r_max)
            value = task_value(mu, sigma, cfg.r_max, cfg.p)
            e = self._entries.get(g.prompt_id)
            if e is None:
                e = _Entry(value=value, ema=value, mu=mu, sigma=sigma, step=step, visits=0)
                self._entries[g.prompt_id] = e
            else:
                e.ema = cfg.ema * value + (1.0 - cfg.ema) * e.ema
            e.value, e.mu, e.sigma, e.step = value, mu, sigma, step
            e.visits += 1
            if cfg.refill == "reuse":
                if sigma > cfg.zero_eps:
                    e.stored = {
                        "records": [t.to_record() if hasattr(t, "to_record") else dict(t)
                                    for t in g.trajectories],
                        "rewards": [float(r) for r in g.rewards],
                        "outcomes": (None if g.outcomes is None
                                     else [float(o) for o in g.outcomes]),
                        "step": step,
                    }
                else:
                    e.stored = None  # a zero-spread replay would be dropped anyway
        self._prune(step)

    def _prune(self, step: int) -> None:
        for e in self._entries.values():
            e.selected = [s for s in e.selected if self._in_window(s, step)]
            if e.stored is not None and not self._in_window(e.stored["step"], step):
                e.stored = None  # bounded memory: only the window's groups are replayable

    def candidates(self, step: int, exclude: Sequence[str] = ()) -> list[str]:
        """Prompt ids with ``V > 0`` seen within the window (and, for reuse, with a stored
        group), not in ``exclude``; in first-seen order."""
        skip = set(exclude)
        need_stored = self.config.refill == "reuse"
        return [pid for pid, e in self._entries.items()
                if e.value > 0.0 and self._in_window(e.step, step) and pid not in skip
                and (e.stored is not None or not need_stored)]

    def smoothed_values(self, prompt_ids: Sequence[str]) -> np.ndarray:
        """The selection weights of ``prompt_ids``: each EMA capped at the ``cap_quantile``
        quantile of these ids' EMAs (the pool), so one prompt cannot take the pool."""
        if not prompt_ids:
            return np.zeros(0)
        ema = np.array([self._entries[pid].ema for pid in prompt_ids], dtype=np.float64)
        cap = float(np.quantile(ema, self.config.cap_quantile))
        return np.minimum(ema, cap)

    def select(self, *, n: int, rng: np.random.Generator, step: int,
               exclude: Sequence[str] = ()) -> list[str]:
        """Draw up to ``n`` distinct candidates: "value" with probability proportional to
        the smoothed value, "random" uniformly, "none" nothing. Fewer than ``n`` when the
        pool is smaller. Does not record the selection (see :meth:`record_selection`)."""
        mode = self.config.selection
        if mode == "none" or n <= 0:
            return []
        pool = self.candidates(step, exclude)
        if not pool:
            return []
        size = min(n, len(pool))
        if mode == "random":
            idx = rng.choice(len(pool), size=size, replace=False)
        else:
            w = self.smoothed_values(pool)
            positive = int((w > 0).sum())
            size = min(size, positive)
            idx = rng.choice(len(pool), size=size, replace=False, p=w / w.sum())
        return [pool[i] for i in idx]

    def record_selection(self, prompt_ids: Sequence[str], step: int) -> None:
        for pid in prompt_ids:
            self._entries[pid].selected.append(step)

    def selection_count(self, prompt_id: str, step: int) -> int:
        """``k``: how often ``prompt_id`` was selected within the window ending at ``step``."""
        e = self._entries.get(prompt_id)
        return 0 if e is None else sum(1 for s in e.selected if self._in_window(s, step))

    def selected_unique(self, step: int) -> int:
        """How many distinct prompts were selected within the window ending at ``step``."""
        return sum(1 for e in self._entries.values()
                   if any(self._in_window(s, step) for s in e.selected))

    def stored_group(self, prompt_id: str) -> GroupResult:
        """The stored group of ``prompt_id`` (refill "reuse"), trajectories rebuilt from
        their records, each with the log-probs it was sampled with."""
        e = self._entries.get(prompt_id)
        if e is None or e.stored is None:
            raise KeyError(f"no stored group for prompt {prompt_id!r}")
        s = e.stored
        return GroupResult(prompt_id=prompt_id, rewards=list(s["rewards"]),
                           outcomes=None if s["outcomes"] is None else list(s["outcomes"]),
                           trajectories=[Trajectory.from_record(r) for r in s["records"]],
                           origin="reuse")

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (for checkpoints)."""
        return {"version": _STATE_VERSION,
                "entries": {pid: dataclasses.asdict(e) for pid, e in self._entries.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the table's contents with ``state`` from :meth:`state_dict`."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"value table state: expected version {_STATE_VERSION}, got "
                             f"{state.get('version') if isinstance(state, dict) else state!r}")
        entries: dict[str, _Entry] = {}
        for pid, raw in state.get("entries", {}).items():
            missing = [k for k in _ENTRY_KEYS if k not in raw]
            if missing:
                raise ValueError(f"value table state: entry {pid!r} lacks {missing}")
            entries[pid] = _Entry(value=float(raw["value"]), ema=float(raw["ema"]),
                                  mu=float(raw["mu"]), sigma=float(raw["sigma"]),
                                  step=int(raw["step"]), visits=int(raw["visits"]),
                                  selected=[int(s) for s in raw["selected"]],
                                  stored=raw["stored"])
        self._entries = entries


__all__ = ["ValueTable"]
