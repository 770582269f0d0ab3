from tirl.core.eval.sample import trajectories_markdown
from tirl.core.types import Trajectory


def test_markdown_shows_roles_answer_and_keeps_fences_intact():
    t = Trajectory(question_id="q1", sample_idx=0, prompt_len=1, token_ids=[1], mask=[0],
                   logprobs=[0.0],
                   messages=[{"role": "system", "content": "SYS"},
                             {"role": "user", "content": "Who?"},
                             {"role": "assistant", "content": "<answer>```x```</answer>"}],
                   turns=[], answer="```x```", finish_reason="answer")
    md = trajectories_markdown([t], rewards=[0.5])
    assert "## q1 (sample 0)" in md and "reward: 0.500" in md
    assert "SYS" not in md and "**user**" in md
    assert "````text\n<answer>```x```</answer>\n````" in md


def test_verdict_line_names_the_gold_answer_and_whether_it_was_right():
    from tirl.core.eval.sample import verdict_line

    short = verdict_line(["Paris"], {"exact_match": 1.0, "judge_match": float("nan")})
    assert "'Paris'" in short and "**right**" in short and "judge" not in short
    wrong = verdict_line(["Paris", "paris city"], {"exact_match": 0.0})
    assert "'Paris' | 'paris city'" in wrong and "**wrong**" in wrong
    # Long-form answers are right by the judge's match, not by exact match.
    long = verdict_line(["A long reference."], {"exact_match": 0.0, "judge_match": 1.0,
                                                "judge_score": 0.75})
    assert "**right**" in long and "judge 0.75" in long


def test_markdown_puts_each_verdict_under_its_answer():
    t = Trajectory(question_id="q1", sample_idx=0, prompt_len=1, token_ids=[1], mask=[0],
                   logprobs=[0.0], messages=[{"role": "user", "content": "Who?"}],
                   turns=[], answer="Bo", finish_reason="answer")
    md = trajectories_markdown([t], verdicts=["**gold:** 'Al' · **wrong**"])
    assert md.index("**answer:** 'Bo'") < md.index("**gold:** 'Al'")
