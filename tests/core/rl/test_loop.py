"""The online RL loop (tirl.core.rl.loop) on a toy task and on the real agent stack."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch

from toy_rl import (ToyRollout, ToyTokenizer, make_policy, make_questions, run_toy,
                    toy_config, toy_reward)

from tirl.core.config import build_config
from tirl.core.rl.config import ALGORITHMS, TrainConfig, make_reward
from tirl.core.rl.loop import NonFiniteError, train
from tirl.core.types import RewardBreakdown

REQUIRED_METRICS = [
    "reward/mean", "reward/format", "reward/quality", "reward/exact_match",
    "reward/stage_0_frac", "reward/stage_1_frac", "reward/stage_2_frac",
    "vspo/zero_adv_frac", "vspo/replaced", "vspo/refill_dropped", "vspo/table_size",
    "loss/policy", "loss/kl", "actor/kl", "actor/entropy", "actor/clip_frac", "actor/grad_norm",
    "lr", "perf/tokens_per_s", "time/rollout_s", "time/reward_s", "time/update_s",
    "rollout/turns_mean", "rollout/tool_calls_mean", "rollout/generated_tokens_mean", "rollout/answered_rate",
]


def test_bad_inputs_fail_before_any_rollout():
    calls = []

    def rollout(*a):
        calls.append(a)
        return []

    with pytest.raises(ValueError, match="batch_prompts"):
        train(policy=make_policy(), tokenizer=ToyTokenizer(), questions=make_questions(3),
              tools=[], config=toy_config(), reward_fn=toy_reward, rollout_fn=rollout)
    qs = make_questions(6) + make_questions(1)
    with pytest.raises(ValueError, match="q0"):
        train(policy=make_policy(), tokenizer=ToyTokenizer(), questions=qs, tools=[],
              config=toy_config(), reward_fn=toy_reward, rollout_fn=rollout)
    assert not calls


# --- the loop -----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rl_raises_mean_reward(algorithm):
    """Learning, shown: every optimiser lifts the toy reward well above its start (~1/16)."""
    _, hist = run_toy(toy_config(algorithm=algorithm, steps=10))
    start = hist[0]["reward/mean"]
    end = sum(h["reward/mean"] for h in hist[-3:]) / 3
    assert start < 0.15
    assert end > start + 0.1, [round(h["reward/mean"], 3) for h in hist]
    assert all(math.isfinite(h["loss/policy"]) for h in hist)


def test_bf16_autocast_learns():
    _, hist = run_toy(toy_config(precision="bf16", steps=10))
    end = sum(h["reward/mean"] for h in hist[-3:]) / 3
    assert end > hist[0]["reward/mean"] + 0.1


def test_metrics_reach_the_callback_every_step():
    seen = []
    _, hist = run_toy(toy_config(steps=3), on_metrics=lambda m, s: seen.append((s, dict(m))))
    assert [s for s, _ in seen] == [0, 1, 2]
    for key in REQUIRED_METRICS:
        assert key in seen[0][1], key
    assert [h["step"] for h in hist] == [0.0, 1.0, 2.0]


def test_validation_runs_before_rl_every_n_steps_and_at_the_end_without_touching_sampling():
    calls, seen = [], []

    def validate(policy):
        calls.append(policy.training)
        torch.rand(3)  # would shift the rollouts if the trainer did not fork the RNG
        return {"exact_match": 0.5 + 0.1 * len(calls)}

    _, plain = run_toy(toy_config(steps=5))
    _, hist = run_toy(toy_config(steps=5, val_every=2), validate=validate,
                   on_metrics=lambda m, s: seen.append((s, dict(m))))
    assert calls == [False] * 4  # before step 0, after steps 1 and 3, after the last (4)
    assert hist[0] == {"step": -1.0, "val/exact_match": pytest.approx(0.6)}
    val_rows = [h["step"] for h in hist if "val/exact_match" in h]
    assert val_rows == [-1.0, 1.0, 3.0, 4.0]
    assert [s for s, m in seen if "val/exact_match" in m] == [0, 2, 4, 5]  # updates done
    # Validation forks the RNG: training is the same as without it.
    assert [h["reward/mean"] for h in hist[1:]] == [h["reward/mean"] for h in plain]


def test_unscheduled_reward_scores_the_same_rollouts_at_the_schedule_end():
    steps_seen = []

    def reward(t, q, *, step=0):
        # A "schedule" that pays only once its ramp is over.
        steps_seen.append(step)
        return dataclasses.replace(toy_reward(t, q, step=step), reward=1.0 if step > 100 else 0.0)

    _, hist = run_toy(toy_config(steps=2), reward_fn=reward)
    assert all(h["reward/unscheduled"] == 1.0 and h["reward/mean"] == 0.0 for h in hist)
    assert max(steps_seen) >= 10 ** 9


def test_ppo_reports_critic_metrics():
    _, hist = run_toy(toy_config(algorithm="ppo", steps=2))
    assert "loss/value" in hist[-1] and "critic/grad_norm" in hist[-1]
    assert hist[-1]["loss/value"] > 0


@pytest.mark.parametrize("refill", ["reroll", "reuse"])
def test_vspo_replaces_zero_advantage_groups(refill):
    """A reward that is constant for half the prompts makes zero-advantage groups; VSPO
    drops and refills them from the value table (reroll or reuse)."""

    def reward(t, q, *, step=0):
        if int(str(t.question_id)[1:]) % 2 == 0:
            return RewardBreakdown(reward=0.0, stage=2, format=0.0, quality=0.0,
                                   exact_match=0.0, outcome=0.0)
        return toy_reward(t, q, step=step)

    _, hist = run_toy(toy_config(steps=6, vspo={"refill": refill}), reward_fn=reward)
    assert sum(h["vspo/zero_adv_frac"] for h in hist) > 0
    assert sum(h["vspo/replaced"] for h in hist) > 0
    assert hist[-1]["vspo/table_size"] > 0
    # grpo = vspo with selection none: nothing is ever replaced
    _, hist = run_toy(toy_config(algorithm="grpo", steps=4), reward_fn=reward)
    assert sum(h["vspo/replaced"] for h in hist) == 0


def test_non_finite_steps_are_skipped_then_stop_the_run(caplog):
    def nan_at_step_1(t, q, *, step=0):
        r = toy_reward(t, q, step=step)
        if step == 1:
            return RewardBreakdown(reward=float("nan"), stage=2, format=0.0, quality=0.0,
                                   exact_match=0.0, outcome=0.0)
        return r

    with caplog.at_level(logging.WARNING, logger="tirl.core.rl.loop"):
        policy, hist = run_toy(toy_config(steps=3), reward_fn=nan_at_step_1)
    assert [h["step/skipped"] for h in hist] == [0.0, 1.0, 0.0]
    assert "non-finite" in caplog.text

    def always_nan(t, q, *, step=0):
        return RewardBreakdown(reward=float("nan"), stage=2, format=0.0, quality=0.0,
                               exact_match=0.0, outcome=0.0)

    policy = make_policy()
    before = [p.detach().clone() for p in policy.parameters()]
    with pytest.raises(NonFiniteError, match="max_nonfinite_in_row=2"):
        train(policy=policy, tokenizer=ToyTokenizer(), questions=make_questions(12), tools=[],
              config=toy_config(steps=5, max_nonfinite_in_row=2), reward_fn=always_nan,
              rollout_fn=ToyRollout(policy))
    # skipped steps never touched the weights
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_lr_schedule_warmup_and_decay():
    _, hist = run_toy(toy_config(steps=4, lr=1e-3, warmup_steps=2, lr_schedule="linear"))
    lrs = [h["lr"] for h in hist]  # lr after each step's scheduler.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[1]


# --- the real agent stack: rollout engine + PRS + search tool ------------------------------


def test_one_step_with_the_agent_rollout_engine(tiny_tokenizer, fresh_tiny_model):
    import pandas as pd

    from tirl.core.tools.search import build_search_tool

    corpus = pd.DataFrame({"id": ["1", "2"], "title": ["Alice Marlow", "Ostmark"],
                           "text": ["Alice Marlow was born in Norvale.",
                                    "The capital of Ostmark is Velden."]})
    questions = [{"id": f"q{i}", "question": q, "answers": [a], "split": "train",
                  "task": "short", "qtype": "single_hop", "facts": [], "source": "world"}
                 for i, (q, a) in enumerate([("Where was Alice Marlow born?", "Norvale"),
                                             ("What is the capital of Ostmark?", "Velden")])]
    cfg = build_config(TrainConfig, {
        "lr": 1e-4, "steps": 1, "batch_prompts": 2, "group_size": 2,
        "rollout": {"max_turns": 2, "max_new_tokens_per_turn": 8, "max_total_tokens": 2048}})
    policy, hist = train(policy=fresh_tiny_model, tokenizer=tiny_tokenizer, questions=questions,
                         tools=[build_search_tool(corpus, top_k=1)], config=cfg,
                         reward_fn=make_reward(cfg))
    assert len(hist) == 1 and math.isfinite(hist[0]["reward/mean"])
    assert hist[0]["rollout/turns_mean"] >= 1


def test_completions_table_holds_every_sample_of_the_first_prompts_each_step():
    seen = []
    run_toy(toy_config(steps=2, log_completions=2),
            on_completions=lambda rows, s: seen.append((s, rows)))
    assert [s for s, _ in seen] == [0, 1]
    group = toy_config().group_size
    for step, rows in seen:
        assert len(rows) == 2 * group  # two prompts, every sample of each
        assert len({r["question_id"] for r in rows}) == 2
        assert {r["step"] for r in rows} == {step}
        for row in rows:
            assert set(row) >= {"question", "gold", "answer", "correct", "reward", "stage"}
            assert isinstance(row["correct"], bool) and 0.0 <= row["reward"] <= 1.0


def test_no_completions_table_when_log_completions_is_0():
    seen = []
    run_toy(toy_config(steps=1, log_completions=0), on_completions=lambda r, s: seen.append(s))
    assert seen == []


def test_each_progress_line_shows_the_step_it_reports(caplog):
    # Off a terminal progress is a log line per tenth; each must carry its own step's reward,
    # not the step before's.
    with caplog.at_level(logging.INFO, logger="tirl.progress"):
        _, hist = run_toy(toy_config(steps=10))
    lines = [r.getMessage() for r in caplog.records if r.name == "tirl.progress"]
    first = next(line for line in lines if " 1/10 " in line)
    assert f"R={hist[0]['reward/mean']:.3f}" in first, (first, hist[0]["reward/mean"])
