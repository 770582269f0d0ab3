import math

import pandas as pd
import pytest

from tirl.core.eval.metrics import benchmark_of, evaluate, pass_at_k, summarise
from tirl.core.types import JudgeVerdict, Trajectory


def _traj(qid, answer, *, idx=0, errors=(), finish="answer", calls=1):
    return Trajectory(question_id=qid, sample_idx=idx, prompt_len=2, token_ids=[1, 2, 3, 4],
                      mask=[0, 0, 1, 1], logprobs=[0, 0, -1, -1], messages=[],
                      turns=[{"role": "assistant", "start": 2, "end": 4}],
                      tool_calls=[{"name": "search", "arguments": {}, "ok": True}] * calls,
                      answer=answer, finish_reason=finish, parse_errors=list(errors))


QUESTIONS = {
    "a": {"id": "a", "question": "q?", "answers": ["Mirebrook"], "split": "test_in_domain",
          "task": "short", "qtype": "single_hop", "facts": [], "source": "world"},
    "b": {"id": "b", "question": "q2?", "answers": ["Varo Quillen"], "split": "test_ood",
          "task": "short", "qtype": "composition", "facts": [], "source": "world"},
    "c": {"id": "c", "question": "Describe X.", "answers": ["X was born in Y."],
          "split": "test_in_domain", "task": "long", "qtype": "description",
          "facts": ["X was born in Y"], "source": "world"},
}


class FixedJudge:
    def judge(self, *, question, reference, answer, facts=()):
        return JudgeVerdict(score=0.75, match=True)


@pytest.mark.parametrize("q,expected", [
    (QUESTIONS["a"], "single_hop"), (QUESTIONS["b"], "out_of_domain"),
    (QUESTIONS["c"], "long_description"),
    ({**QUESTIONS["a"], "qtype": "bridge"}, "multi_hop"),
    ({**QUESTIONS["c"], "qtype": "multi_question"}, "long_multi_question"),
    ({**QUESTIONS["a"], "source": "flashrag"}, "flashrag"),
])
def test_benchmark_of(q, expected):
    assert benchmark_of(q) == expected


def test_evaluate_rows_and_summary():
    trajs = [_traj("a", "mirebrook."), _traj("b", None, finish="max_turns", calls=3),
             _traj("c", "X was born in Y", errors=())]
    rows, summary = evaluate(trajs, QUESTIONS, judge=FixedJudge())
    by_q = rows.set_index("question_id")
    assert by_q.loc["a", "exact_match"] == 1.0 and by_q.loc["a", "la_bleu"] == 1.0
    assert by_q.loc["b", "answered"] == 0.0 and by_q.loc["b", "exact_match"] == 0.0
    assert by_q.loc["c", "judge_score"] == 0.75 and by_q.loc["c", "judge_match"] == 1.0
    assert math.isnan(by_q.loc["a", "judge_score"])  # short-form is never judged
    overall = summary.set_index("benchmark").loc["all"]
    assert overall["n"] == 3
    assert overall["tool_calls"] == pytest.approx(5 / 3)
    # correctness for pass@k: EM for short-form, judge match for long-form
    assert overall["pass_at_k"] == pytest.approx(2 / 3)
    assert list(summary["benchmark"]) == ["single_hop", "out_of_domain", "long_description", "all"]


def test_invalid_format_counts():
    rows, _ = evaluate([_traj("a", None, errors=["invalid_json"], finish="invalid")], QUESTIONS)
    assert rows.loc[0, "format_valid"] == 0.0


def test_unknown_question_id_is_named():
    with pytest.raises(KeyError, match="zzz"):
        evaluate([_traj("zzz", "x")], QUESTIONS)


def test_pass_at_k_matches_brute_force():
    from itertools import combinations
    n, c = 6, 2
    samples = [1] * c + [0] * (n - c)
    for k in range(1, n + 1):
        combos = list(combinations(samples, k))
        brute = sum(1 for s in combos if any(s)) / len(combos)
        assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_over_samples():
    trajs = [_traj("a", "wrong", idx=0), _traj("a", "Mirebrook", idx=1),
             _traj("b", "no", idx=0), _traj("b", "no", idx=1)]
    rows, _ = evaluate(trajs, QUESTIONS)
    assert summarise(rows, k=2).set_index("benchmark").loc["all", "pass_at_k"] == 0.5
    assert summarise(rows, k=1).set_index("benchmark").loc["all", "pass_at_k"] == 0.25


def test_empty_summary():
    assert summarise(pd.DataFrame()).empty


def test_select_questions_from_parquet_with_long_form_facts(tmp_path):
    """Regression: parquet returns ``facts`` as numpy arrays; the judge must get a tuple."""
    from tirl.core.eval.run import select_questions

    df = pd.DataFrame([QUESTIONS["c"], QUESTIONS["a"]])
    df.to_parquet(tmp_path / "q.parquet")
    selected = select_questions(pd.read_parquet(tmp_path / "q.parquet"), ["test_in_domain"], None)
    seen = {}

    class Recording:
        def judge(self, *, question, reference, answer, facts=()):
            seen["facts"] = facts
            return JudgeVerdict(score=1.0, match=True)

    by_id = {q["id"]: q for q in selected}
    evaluate([_traj("c", "X was born in Y")], by_id, judge=Recording())
    assert seen["facts"] == ("X was born in Y",)
