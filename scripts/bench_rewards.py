"""Reward scoring throughput, single process (issue 4 goal: >= 2,000 short-form trajectories/s).

    .venv/bin/python scripts/bench_rewards.py [--n 20000] [--questions 500] [--group 5]

Builds synthetic trajectories like an RL batch (``group`` rollouts per question, answers that
are exact, partial, padded, wrong, or missing), then times:

- short-form PRS scoring, caches cold (a realistic mix) and warm (the same batch scored
  again, as when groups repeat answers), and a worst case where every answer is a new,
  inexact string;
- the rubric judge on long-form answers, cold and with its verdict cache warm.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from tirl.core.rewards import make_judge, make_reward_fn, score_batch
from tirl.core.rewards import text as text_mod
from tirl.core.types import Trajectory

WORDS = ("mirebrook tarsk velm ossory kesh valley old mill iron guild salt river north blue "
         "harbour tower bridge quen alvar dunmere harrow").split()


def _traj(qid: str, idx: int, answer: str | None, finish: str,
          errors: list[str]) -> Trajectory:
    return Trajectory(question_id=qid, sample_idx=idx, prompt_len=0, token_ids=[], mask=[],
                      logprobs=[], messages=[], turns=[], answer=answer, finish_reason=finish,
                      parse_errors=errors)


def short_batch(n: int, n_questions: int, group: int, seed: int):
    rng = random.Random(seed)
    questions = {}
    for q in range(n_questions):
        golds = [" ".join(rng.choices(WORDS, k=rng.randint(1, 4))).title()
                 for _ in range(rng.randint(1, 3))]
        questions[f"s{q}"] = {"id": f"s{q}", "question": f"Question {q}?", "answers": golds,
                              "task": "short", "facts": []}
    trajectories = []
    qids = list(questions)
    i = 0
    while len(trajectories) < n:
        qid = qids[(i // group) % len(qids)]
        gold = questions[qid]["answers"][0]
        kind = rng.random()
        salt = f" {i}" if rng.random() < 0.5 else ""  # half the answers are unique strings
        if kind < 0.05:
            trajectories.append(_traj(qid, i, None, "invalid", ["invalid_json"]))
        elif kind < 0.15:
            trajectories.append(_traj(qid, i, None, "max_turns", []))
        elif kind < 0.45:
            trajectories.append(_traj(qid, i, gold, "answer", []))
        else:
            words = gold.split() + rng.choices(WORDS, k=rng.randint(0, 8))
            rng.shuffle(words)
            trajectories.append(_traj(qid, i, " ".join(words) + salt, "answer", []))
        i += 1
    return trajectories, questions


def long_batch(n: int, seed: int):
    rng = random.Random(seed)
    questions, trajectories = {}, []
    for q in range(max(1, n // 5)):
        name = f"Alvar Quen{q}"
        place, job, guild = (rng.choice(WORDS).title(), rng.choice(WORDS), rng.choice(WORDS))
        facts = [f"{name} was born in {place}.", f"{name} works as a {job}.",
                 f"{name} is a member of the {guild.title()} Guild."]
        ref = " ".join(facts)
        questions[f"l{q}"] = {"id": f"l{q}", "question": f"Describe {name}.", "answers": [ref],
                              "task": "long", "facts": facts}
        for g in range(5):
            drop = rng.randint(0, 2)
            answer = " ".join(facts[:3 - drop] + rng.choices(WORDS, k=rng.randint(0, 12)))
            trajectories.append(_traj(f"l{q}", g, f"{answer} {q}-{g}", "answer", []))
    return trajectories, questions


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def clear_caches() -> None:
    text_mod.normalize_answer.cache_clear()
    text_mod._la_bleu_pair.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--group", type=int, default=5)
    parser.add_argument("--long", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    trajectories, questions = short_batch(args.n, args.questions, args.group, args.seed)
    prs = make_reward_fn("prs", {"ramp_steps": 100})
    clear_caches()
    cold, _ = timed(score_batch, prs, trajectories, questions, step=10)
    warm, _ = timed(score_batch, prs, trajectories, questions, step=10)

    # Worst case: every answer a new string and never an exact match (sacrebleu for each gold).
    worst = [Trajectory(t.question_id, t.sample_idx, 0, [], [], [], [], [],
                        answer=f"{questions[t.question_id]['answers'][0]} x{i}",
                        finish_reason="answer") for i, t in enumerate(trajectories)]
    clear_caches()
    worst_s, _ = timed(score_batch, prs, worst, questions, step=10)

    long_trajs, long_qs = long_batch(args.long, args.seed)
    judge = make_judge("rubric")
    prs_long = make_reward_fn("prs", {"ramp_steps": 100}, judge=judge)
    judge_cold, _ = timed(score_batch, prs_long, long_trajs, long_qs, step=10)
    judge_warm, _ = timed(score_batch, prs_long, long_trajs, long_qs, step=10)

    report = {
        "short_form_prs_traj_per_s_cold": round(len(trajectories) / cold),
        "short_form_prs_traj_per_s_warm_cache": round(len(trajectories) / warm),
        "short_form_prs_traj_per_s_all_unique_inexact": round(len(worst) / worst_s),
        "rubric_judge_prs_traj_per_s_cold": round(len(long_trajs) / judge_cold),
        "rubric_judge_prs_traj_per_s_cached": round(len(long_trajs) / judge_warm),
        "short_trajectories": len(trajectories),
        "long_trajectories": len(long_trajs),
        "rubric_cache": str(judge.cache_info()),
    }
    print(json.dumps(report, indent=2))  # a script: stdout is its output


if __name__ == "__main__":
    main()
