"""Learning, shown on the built-in stack: RL lifts the SFT model's mean reward.

The whole chain the main command runs, at the tiny ``conf/test`` sizes and in memory: the
built-in world, the built-in tokenizer and from-scratch model, a short SFT warm start, then
VSPO with PRS through the real rollout engine and search tool. A short warm start leaves the
model writing a valid tool call or answer only now and then (PRS reward ~0.01), which is the
room RL must use. The PRS schedule is off so that every step is scored by the same reward and
the first step's mean is the SFT model's level. On CPU with a fixed seed the run is
deterministic; about a minute on one core.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[3]


def _params(stage: str, env: str = "test") -> dict:
    """conf/base parameters of ``stage`` with conf/<env> merged over them (as ``--env`` does)."""
    from tirl.experiments import deep_merge

    base = yaml.safe_load((ROOT / "conf/base" / f"parameters_{stage}.yml").read_text())[stage]
    over_file = ROOT / "conf" / env / f"parameters_{stage}.yml"
    over = yaml.safe_load(over_file.read_text()).get(stage, {}) if over_file.exists() else {}
    return deep_merge(base, over)


def test_rl_raises_the_builtin_models_reward_above_its_sft_level():
    from tirl.core.config import build_config
    from tirl.core.rl.config import TrainConfig, make_reward
    from tirl.core.rl.loop import train
    from tirl.core.tools.search import build_search_tool
    from tirl.pipelines.data_prep import nodes as dp
    from tirl.pipelines.model_init.nodes import init_model
    from tirl.pipelines.sft.nodes import run_sft
    from tirl.pipelines.rl.nodes import question_records

    torch.set_num_threads(1)
    prep = _params("data_prep")
    questions, corpus, kb = dp.load_sources(prep)
    gold = dp.build_gold(questions, corpus, kb, dp.validate_sources(questions, corpus, prep), prep,
                         _params("agent")["search"])
    practice = gold.iloc[:0]  # the benchmark world's chats alone: the test asks for RL, not SFT
    base = init_model(corpus, questions, gold, _params("model_init"))
    sft_params = {**_params("sft", "base"), "pretrain_steps": 100, "pretrain_batch_size": 8, "lr": 2.0e-3,
                  "max_steps": 80, "batch_size": 8, "probe_size": 0, "progress_bar": False}
    sft, _, _ = run_sft(base, gold, practice, corpus, questions, sft_params)

    config = build_config(TrainConfig, {
        "algorithm": "vspo", "reward": "prs", "prs": {"schedule": False},
        "steps": 20, "batch_prompts": 8, "group_size": 4, "lr": 1e-3, "seed": 0,
        "rollout": {"max_turns": 3, "max_new_tokens_per_turn": 32, "max_total_tokens": 1024,
                    "max_tool_response_tokens": 128}})
    tools = {"search": build_search_tool(corpus, tokenizer=sft["tokenizer"], top_k=2,
                                         max_passage_tokens=48)}
    _, hist = train(policy=sft["model"], tokenizer=sft["tokenizer"],
                    questions=question_records(questions, "train", None), tools=tools,
                    config=config, reward_fn=make_reward(config))

    rewards = [round(h["reward/mean"], 3) for h in hist]
    sft_level = sum(rewards[:2]) / 2  # the first steps sample the SFT policy (barely moved)
    end = sum(rewards[-5:]) / 5
    assert sft_level < 0.05, rewards
    assert end > sft_level + 0.05, rewards
    # The rise is PRS's format stage (valid calls and answers) at this budget, not luck in EM.
    assert sum(h["reward/format"] for h in hist[-5:]) / 5 > sum(h["reward/format"] for h in hist[:2]) / 2
