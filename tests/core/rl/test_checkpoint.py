"""Atomic checkpoints and exact resume after SIGKILL (tirl.core.rl.checkpoint, .resume, .loop)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from toy_rl import (ToyRollout, ToyTokenizer, make_policy, make_questions, subprocess_env,
                    toy_reward)

from tirl.core.config import build_config
from tirl.core.rl import checkpoint as ckpt
from tirl.core.rl.config import TrainConfig
from tirl.core.rl.loop import train

CFG = {"algorithm": "vspo", "lr": 3e-3, "steps": 6, "batch_prompts": 4, "group_size": 4,
       "minibatch_size": 8, "ppo_epochs": 2, "seed": 3, "checkpoint_every": 2}

# The script the killed run executes: the same toy training, slowed after each step so
# the parent can kill it between checkpoints.
SCRIPT = textwrap.dedent("""
    import time, torch
    torch.set_num_threads(1)
    from toy_rl import ToyRollout, ToyTokenizer, make_policy, make_questions, toy_reward
    from tirl.core.config import build_config
    from tirl.core.rl.config import TrainConfig
    from tirl.core.rl.loop import train
    policy = make_policy()
    train(policy=policy, tokenizer=ToyTokenizer(), questions=make_questions(12), tools=[],
          config=build_config(TrainConfig, {cfg!r}), reward_fn=toy_reward,
          rollout_fn=ToyRollout(policy), checkpoint_dir={ckdir!r},
          on_metrics=lambda m, s: time.sleep(2.0))
""")


def _deterministic(history):
    return [{k: v for k, v in h.items() if not k.startswith(("time/", "perf/"))}
            for h in history]


def _train(ckdir=None, resume=False, **over):
    policy = make_policy()
    return train(policy=policy, tokenizer=ToyTokenizer(), questions=make_questions(12),
                 tools=[], config=build_config(TrainConfig, {**CFG, **over}),
                 reward_fn=toy_reward, rollout_fn=ToyRollout(policy),
                 checkpoint_dir=ckdir, resume=resume)


# --- the file format ----------------------------------------------------------------------


def test_save_load_roundtrip_keeps_only_the_newest(tmp_path):
    for step in (2, 4, 6):
        ckpt.save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, keep=2)
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path)] == [4, 6]
    latest = ckpt.load_latest(tmp_path)
    assert latest.step == 6 and latest.state["w"].tolist() == [6.0, 6.0]
    assert ckpt.load_latest(tmp_path / "missing") is None
    assert ckpt.load_latest(None) is None


def test_kill_mid_save_leaves_previous_checkpoint_loadable(tmp_path):
    ckpt.save_checkpoint(tmp_path, 2, {"w": torch.ones(2)})
    # A save killed half-way: a temporary dir with a truncated state file...
    tmp = tmp_path / ".tmp-step_00000004-999"
    tmp.mkdir()
    (tmp / "state.pt").write_bytes(b"\x80\x02truncated")
    # ...and, worse, a final-named dir that never got its meta.json (not complete).
    broken = tmp_path / "step_00000006"
    broken.mkdir()
    (broken / "state.pt").write_bytes(b"garbage")
    latest = ckpt.load_latest(tmp_path)
    assert latest.step == 2 and latest.state["w"].tolist() == [1.0, 1.0]
    # The next save sweeps the leftovers of the killed one.
    ckpt.save_checkpoint(tmp_path, 4, {"w": torch.zeros(2)})
    assert not tmp.exists()
    assert ckpt.load_latest(tmp_path).step == 4


def test_unreadable_newest_falls_back_to_previous(tmp_path):
    ckpt.save_checkpoint(tmp_path, 2, {"w": torch.ones(1)})
    newest = ckpt.save_checkpoint(tmp_path, 4, {"w": torch.zeros(1)})
    (newest / "state.pt").write_bytes(b"corrupted on disk")
    assert ckpt.load_latest(tmp_path).step == 2


def test_rng_state_roundtrip():
    import random

    import numpy as np

    state = ckpt.rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    ckpt.set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


# --- resume -------------------------------------------------------------------------------


def test_checkpoint_holds_everything_needed(tmp_path):
    _train(tmp_path, steps=2)
    state = ckpt.load_latest(tmp_path).state
    for key in ("policy", "optimizer", "scheduler", "sampler", "value_table", "rng", "step",
                "history"):
        assert key in state, key
    assert state["step"] == 2 and len(state["history"]) == 2
    assert json.dumps(state["value_table"])  # JSON-serialisable table


def test_resume_in_process_matches_uninterrupted(tmp_path):
    _, full = _train()
    _train(tmp_path, steps=4)  # "crash" after step 4's checkpoint
    _, resumed = _train(tmp_path, resume=True)
    assert _deterministic(resumed) == _deterministic(full)


def test_checkpoint_of_another_run_is_set_aside_not_resumed(tmp_path):
    ckdir = tmp_path / "run"
    _train(ckdir, steps=4)
    _, fresh = _train(lr=1e-3)  # an uninterrupted run with the changed setting
    _, resumed = _train(ckdir, resume=True, lr=1e-3)
    assert len(resumed) == CFG["steps"]  # started at step 0, not 4
    assert _deterministic(resumed) == _deterministic(fresh)
    stale = tmp_path / "run.stale-0"
    assert ckpt.load_latest(stale).step == 4  # the other run's checkpoints are kept aside
    # ... and the new run resumes its own checkpoints
    _, again = _train(ckdir, resume=True, lr=1e-3)
    assert _deterministic(again) == _deterministic(resumed)


def test_sigkill_then_resume_ends_with_the_same_metrics(tmp_path):
    ckdir = tmp_path / "ck"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(cfg=CFG, ckdir=str(ckdir)))
    env = subprocess_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not ckpt.complete_checkpoints(ckdir):
            if proc.poll() is not None:
                pytest.fail(f"training script exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint appeared within 180 s")
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = ckpt.load_latest(ckdir).step
    assert killed_at < CFG["steps"]
    _, resumed = _train(ckdir, resume=True)
    _, full = _train()
    assert len(resumed) == CFG["steps"]
    assert _deterministic(resumed) == _deterministic(full)
