"""Benchmark metrics over finished trajectories.

One row per trajectory (:func:`trajectory_metrics`), then one row per benchmark
(:func:`summarise`). Benchmarks are derived from the question record so that the built-in
world and user data go through the same code:

========================  ==============================================================
benchmark                 questions
========================  ==============================================================
``single_hop``            built-in, in-domain test split, one-hop questions (NQ-like)
``multi_hop``             built-in, in-domain test split, bridge + comparison (HotpotQA-like)
``out_of_domain``         built-in ``test_ood`` split (Bamboogle-like)
``long_description``      built-in long-form "describe X"
``long_multi_question``   built-in long-form "what are the X and the Y of Z"
``<source>``              user data, named by its ``source`` (e.g. ``flashrag``)
========================  ==============================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from tirl.core.rewards.text import exact_match, length_aware_bleu, token_f1
from tirl.core.types import Judge, Trajectory

BENCHMARKS = ("single_hop", "multi_hop", "out_of_domain", "long_description",
              "long_multi_question")

#: Columns of the summary table, in display order.
SUMMARY_COLUMNS = ("benchmark", "n", "exact_match", "f1", "la_bleu", "judge_score",
                   "judge_match", "format_valid", "answered", "tool_calls", "turns", "tokens",
                   "pass_at_k")


def benchmark_of(question: Mapping[str, Any]) -> str:
    """The benchmark a question belongs to (see the module table)."""
    if question.get("source", "world") != "world":
        return str(question["source"])
    if question.get("task") == "long":
        return "long_multi_question" if question.get("qtype") == "multi_question" \
            else "long_description"
    if question.get("split") == "test_ood":
        return "out_of_domain"
    return "single_hop" if question.get("qtype") == "single_hop" else "multi_hop"


def trajectory_metrics(trajectory: Trajectory, question: Mapping[str, Any],
                       judge: Judge | None = None) -> dict[str, Any]:
    """Metrics of one trajectory against its question. Judge metrics only for long-form."""
    answers = list(question["answers"])
    answer = trajectory.answer
    has_answer = answer is not None
    text = answer or ""
    row: dict[str, Any] = {
        "question_id": trajectory.question_id,
        "sample_idx": trajectory.sample_idx,
        "benchmark": benchmark_of(question),
        "exact_match": exact_match(text, answers) if has_answer else 0.0,
        "f1": token_f1(text, answers) if has_answer else 0.0,
        "la_bleu": length_aware_bleu(text, answers) if has_answer else 0.0,
        "judge_score": math.nan,
        "judge_match": math.nan,
        "format_valid": float(not trajectory.parse_errors
                              and trajectory.finish_reason != "invalid"),
        "answered": float(has_answer),
        "tool_calls": float(trajectory.num_tool_calls),
        "turns": float(trajectory.num_turns),
        "tokens": float(sum(trajectory.mask)),
        "finish_reason": trajectory.finish_reason,
    }
    if judge is not None and question.get("task") == "long":
        if has_answer:
            verdict = judge.judge(question=question["question"], reference=answers[0],
                                  answer=text, facts=tuple(question.get("facts") or ()))
            row["judge_score"], row["judge_match"] = verdict.score, float(verdict.match)
        else:
            row["judge_score"], row["judge_match"] = 0.0, 0.0
    return row


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021).

    >>> pass_at_k(5, 0, 1), pass_at_k(5, 5, 3), round(pass_at_k(4, 1, 2), 4)
    (0.0, 1.0, 0.5)
    """
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def summarise(rows: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """One row per benchmark (plus ``all``): means over trajectories; pass@k over samples.

    With several samples per question, ``pass_at_k`` uses exact match (judge match for
    long-form) as correctness; with one sample it equals the mean of that correctness.
    """
    if rows.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    rows = rows.copy()
    judged = rows["judge_match"].notna()
    rows["correct"] = rows["exact_match"].where(~judged, rows["judge_match"])
    metric_cols = [c for c in SUMMARY_COLUMNS if c not in ("benchmark", "n", "pass_at_k")]

    def one(group: pd.DataFrame, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"benchmark": name, "n": int(group["question_id"].nunique())}
        for col in metric_cols:
            vals = group[col].dropna()
            out[col] = float(vals.mean()) if len(vals) else math.nan
        per_q = group.groupby("question_id")["correct"].agg(["size", "sum"])
        kk = k or 1
        out["pass_at_k"] = float(sum(pass_at_k(int(s), int(c), min(kk, int(s)))
                                     for s, c in zip(per_q["size"], per_q["sum"])) / len(per_q))
        return out

    table = [one(g, str(b)) for b, g in rows.groupby("benchmark", sort=False)]
    table.append(one(rows, "all"))
    order = {b: i for i, b in enumerate(BENCHMARKS)}
    table.sort(key=lambda r: (r["benchmark"] == "all", order.get(r["benchmark"], 99),
                              r["benchmark"]))
    return pd.DataFrame(table, columns=list(SUMMARY_COLUMNS))


#: The summary columns a run is compared by at a glance (MLflow ``final/<name>``).
HEADLINE_COLUMNS = ("exact_match", "f1", "judge_score", "format_valid", "tool_calls")


def headline_metrics(summary: pd.DataFrame) -> dict[str, float]:
    """``final/<metric>`` over every evaluated question (the summary's ``all`` row): a handful
    of names that the MLflow runs table can show as columns next to each other, where the
    ``eval/<benchmark>/<metric>`` grid has some seventy."""
    overall = summary[summary["benchmark"] == "all"]
    if overall.empty:
        return {}
    row = overall.iloc[0]
    return {f"final/{c}": float(row[c]) for c in HEADLINE_COLUMNS if pd.notna(row[c])}


def evaluate(trajectories: Sequence[Trajectory], questions: Mapping[str, Mapping[str, Any]],
             judge: Judge | None = None, k: int | None = None
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-trajectory rows and the per-benchmark summary table."""
    missing = [t.question_id for t in trajectories if t.question_id not in questions]
    if missing:
        raise KeyError(f"trajectories refer to unknown question ids, e.g. {missing[:3]}")
    rows = pd.DataFrame([trajectory_metrics(t, questions[t.question_id], judge)
                         for t in trajectories])
    return rows, summarise(rows, k)
