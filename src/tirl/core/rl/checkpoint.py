"""Atomic training checkpoints: save every N steps, resume from the last complete one.

A checkpoint is a directory ``<root>/step_<NNNNNNNN>/`` holding

* ``state.pt``: one ``torch.save`` of a dict (model/critic/optimiser/scheduler state dicts,
  RNG states, sampler position, VSPO value table, anything the trainer puts in it);
* ``meta.json``: ``{"step": int, "format": 1}``, written last.

Writing is atomic: everything goes to a hidden ``.tmp-step_...`` directory first, every file
is fsync'd, the directory is renamed to its final name (``os.rename`` is atomic within one
file system) and the parent directory is fsync'd. A run killed mid-save therefore leaves at
most a ``.tmp-*`` directory behind, which :func:`load_latest` ignores (and
:func:`save_checkpoint` sweeps), so the previous checkpoint stays the latest loadable one.
Only the ``keep`` newest complete checkpoints are kept.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tirl.core.files import fsync_quietly

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d{8})$")
_TMP_PREFIX = ".tmp-"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the step it was taken after and the saved state dict."""

    step: int
    path: Path
    state: dict[str, Any]


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def complete_checkpoints(root: Path | str) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and (child / META_FILE).is_file() and (child / STATE_FILE).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def save_checkpoint(root: Path | str, step: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically; keep the ``keep`` newest.

    Returns the final checkpoint directory.
    """
    if keep < 1:
        raise ValueError(f"keep: {keep} must be >= 1")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # Leftovers of a save killed half-way are garbage: nothing ever reads them.
    for child in root.iterdir():
        if child.name.startswith(_TMP_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
    final = root / f"step_{step:08d}"
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    tmp.mkdir()
    torch.save(state, tmp / STATE_FILE)
    (tmp / META_FILE).write_text(json.dumps({"step": int(step), "format": 1}))
    for name in (STATE_FILE, META_FILE):
        _fsync_file(tmp / name)
    fsync_quietly(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_quietly(root)
    for _, old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("checkpoint saved: %s", final)
    return final


def load_latest(root: Path | str | None) -> Checkpoint | None:
    """The newest complete checkpoint under ``root``, or None when there is none.

    A checkpoint whose state file cannot be read (it should not happen given the atomic
    write, but disks fail) is skipped with a warning and the previous one is tried.
    """
    if root is None:
        return None
    for step, path in reversed(complete_checkpoints(root)):
        try:
            state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file means "try older"
            logger.warning("checkpoint %s unreadable (%s); trying an older one", path, exc)
            continue
        return Checkpoint(step=step, path=path, state=state)
    return None


def set_aside(root: Path | str) -> Path:
    """Move the checkpoint folder ``root`` to a sibling ``<name>.stale-<n>`` (nothing is
    deleted) and return the new path."""
    root = Path(root)
    n = 0
    while (target := root.with_name(f"{root.name}.stale-{n}")).exists():
        n += 1
    root.rename(target)
    return target


# --- RNG state ---------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Global RNG states of python, numpy and torch (CPU and every CUDA device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
