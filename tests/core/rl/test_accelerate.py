"""Scale-out: two DDP processes on CPU give the loss trajectory of one process with the same
global batch (same rollouts, global token-mean loss, gradient all-reduce, identical VSPO
tables).

Launcher note (accelerate 1.15): ``accelerate launch --cpu --num_processes 2`` only forks
several processes through ``mpirun`` (it needs an MPI hostfile; without one it silently runs
ONE process). ``--multi_gpu`` goes through torchrun, and on a machine without CUDA the
trainer's ``Accelerator(cpu=True)`` then runs MULTI_CPU over gloo. The test asserts that two
processes really ran.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from toy_rl import subprocess_env

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from accelerate import Accelerator
    from toy_rl import ToyRollout, ToyTokenizer, make_policy, make_questions, toy_reward
    from tirl.core.config import build_config
    from tirl.core.rl.config import TrainConfig
    from tirl.core.rl.loop import train
    acc = Accelerator(cpu=True)
    policy = make_policy()
    cfg = build_config(TrainConfig, {{"algorithm": "vspo", "lr": 3e-3, "steps": 4,
                                     "batch_prompts": 4, "group_size": 4, "ppo_epochs": 2,
                                     "seed": 0, "micro_tokens": {micro}}})
    _, hist = train(policy=policy, tokenizer=ToyTokenizer(), questions=make_questions(12),
                    tools=[], config=cfg, reward_fn=toy_reward, rollout_fn=ToyRollout(policy),
                    accelerator=acc)
    if acc.is_main_process:
        with open(sys.argv[1], "w") as fh:
            json.dump({{"num_processes": acc.num_processes, "history": hist}}, fh)
""")

KEYS = ("reward/mean", "loss/policy", "actor/kl", "actor/entropy", "vspo/zero_adv_frac",
        "vspo/replaced")


def _env():
    return subprocess_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")


@pytest.mark.slow
@pytest.mark.parametrize("micro", [None, 8])  # 8: one-row micro-batches (toy rows: 8 tokens)
def test_two_processes_match_one(tmp_path, micro):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(micro=micro))
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(script), str(one)], env=_env(), check=True,
                   capture_output=True, timeout=300)
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    res = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no",
                          "--dynamo_backend", "no", str(script), str(two)],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r1, r2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert (r1["num_processes"], r2["num_processes"]) == (1, 2)
    h1, h2 = r1["history"], r2["history"]
    assert len(h1) == len(h2) == 4
    for a, b in zip(h1, h2):
        for key in KEYS:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), (a["step"], key)
