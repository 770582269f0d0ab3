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
