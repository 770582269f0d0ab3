"""A toy RL task for trainer tests: a tiny Llama must learn to emit a target token.

Single turn, no tools, no tokenizer: the prompt is ``[BOS, 4 + question number % 8]`` and the
policy samples ``GEN_LEN`` tokens; the reward is the fraction equal to ``TARGET``. Random
init gives ~1/16, so improvement is unmistakable and needs only a few steps.

Sampling is seeded per (step seed, question, sample) with its own generator, so the same
trajectories come out whichever process rolls a question out (DDP tests) and whenever
(resume tests). Imported by test files (``tests/helpers`` is on pytest's ``pythonpath``) and by
the subprocess scripts they launch (with :func:`subprocess_env`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tirl.core.config import build_config
from tirl.core.rl.config import TrainConfig
from tirl.core.rl.loop import train
from tirl.core.types import RewardBreakdown, Trajectory

HELPERS = Path(__file__).resolve().parent
VOCAB = 16
TARGET = 3
GEN_LEN = 6
BOS = 1
#: The toy run's settings: 4 prompts x 4 rollouts per step, 2 minibatches of 2 micro-batches,
#: 2 epochs.
TOY = {"lr": 3e-3, "steps": 10, "batch_prompts": 4, "group_size": 4, "minibatch_size": 8,
       "grad_accum": 2, "ppo_epochs": 2, "seed": 0}


def make_policy(seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=32, tie_word_embeddings=False, pad_token_id=0,
                      bos_token_id=BOS, eos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model


def make_questions(n: int) -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "question": str(i), "answers": ["x"], "split": "train",
             "task": "short", "qtype": "single_hop", "facts": [], "source": "toy"}
            for i in range(n)]


class ToyTokenizer:
    pad_token_id = 0


class ToyRollout:
    """``rollout_fn(questions, group_size, seed)`` sampling from ``policy`` at temperature 1."""

    def __init__(self, policy: torch.nn.Module, gen_len: int = GEN_LEN) -> None:
        self.policy, self.gen_len = policy, gen_len

    @torch.no_grad()
    def __call__(self, questions: list[dict[str, Any]], group_size: int,
                 seed: int) -> list[Trajectory]:
        rows, gens = [], []
        for q in questions:
            qn = int(str(q["id"])[1:])
            for j in range(group_size):
                rows.append((str(q["id"]), j, [BOS, 4 + qn % 8]))
                gens.append(torch.Generator().manual_seed(
                    int(np.random.SeedSequence([seed, qn, j]).generate_state(1)[0])))
        ids = torch.tensor([r[2] for r in rows])
        lps = []
        for _ in range(self.gen_len):
            logits = self.policy(input_ids=ids).logits[:, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            cdf = logp.exp().cumsum(-1)
            u = torch.stack([torch.rand(1, generator=g) for g in gens]).squeeze(-1)
            nxt = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp(max=VOCAB - 1)
            lps.append(logp.gather(-1, nxt).squeeze(-1))
            ids = torch.cat([ids, nxt], dim=1)
        out = []
        for i, (qid, j, prompt) in enumerate(rows):
            toks = ids[i].tolist()
            n_p = len(prompt)
            out.append(Trajectory(
                question_id=qid, sample_idx=j, prompt_len=n_p, token_ids=toks,
                mask=[0] * n_p + [1] * self.gen_len,
                logprobs=[0.0] * n_p + [float(lps[t][i]) for t in range(self.gen_len)],
                messages=[], turns=[{"role": "assistant", "start": n_p, "end": len(toks),
                                     "parse_errors": []}],
                answer=None, finish_reason="max_tokens"))
        return out


def toy_reward(trajectory: Trajectory, question: dict[str, Any], *, step: int = 0) -> RewardBreakdown:
    gen = [t for t, m in zip(trajectory.token_ids, trajectory.mask) if m]
    r = sum(t == TARGET for t in gen) / max(len(gen), 1)
    return RewardBreakdown(reward=r, stage=2, format=0.0, quality=r,
                           exact_match=float(r == 1.0), outcome=r)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that imports this module: pytest's ``pythonpath``
    setting reaches this process's ``sys.path`` only, so the child gets it on PYTHONPATH."""
    path = [str(HELPERS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), **extra}


def toy_config(**over: Any) -> TrainConfig:
    return build_config(TrainConfig, {**TOY, **over})


def run_toy(cfg: TrainConfig, n_questions: int = 12, reward_fn: Any = toy_reward, **kw: Any
            ) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """:func:`train` on the toy task from a fresh policy; returns (policy, history)."""
    policy = make_policy()
    return train(policy=policy, tokenizer=ToyTokenizer(), questions=make_questions(n_questions),
                 tools=[], config=cfg, reward_fn=reward_fn, rollout_fn=ToyRollout(policy), **kw)
