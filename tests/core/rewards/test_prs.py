"""PRS stage table, curriculum schedule, binary baseline and batch scoring."""

from __future__ import annotations

import doctest

import pytest

import tirl.core.rewards.prs as prs_mod
from tirl.core.config import ConfigError, build_config
from tirl.core.rewards import (
    REWARDS,
    PRSConfig,
    RewardConfig,
    build_reward_fn,
    make_judge,
    make_reward_fn,
    schedule_weight,
    score_batch,
    stage_values,
)
from tirl.core.types import JudgeVerdict, RewardBreakdown, Trajectory

SHORT = {"id": "s1", "question": "Where was Alvar Quen born?", "answers": ["Mirebrook", "Mire"],
         "task": "short", "facts": []}
FACTS = ["Alvar Quen was born in Mirebrook.", "Alvar Quen works as a blacksmith."]
LONG = {"id": "l1", "question": "Describe Alvar Quen.",
        "answers": ["Alvar Quen was born in Mirebrook and works as a blacksmith."],
        "task": "long", "facts": FACTS}
OFF = PRSConfig(schedule=False)


def traj(answer: str | None = None, finish: str = "answer", errors: tuple[str, ...] = (),
         qid: str = "s1") -> Trajectory:
    return Trajectory(question_id=qid, sample_idx=0, prompt_len=0, token_ids=[], mask=[],
                      logprobs=[], messages=[], turns=[], answer=answer, finish_reason=finish,
                      parse_errors=list(errors))


class FixedJudge:
    def __init__(self, score: float, match: bool) -> None:
        self.score, self.match, self.calls = score, match, 0

    def judge(self, *, question, reference, answer, facts=()):
        self.calls += 1
        return JudgeVerdict(self.score, self.match, "fixed")


def test_doctests() -> None:
    result = doctest.testmod(prs_mod)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("trajectory, stage, reward", [
    (traj(None, "invalid", ("invalid_json",)), 0, 0.0),
    (traj("Mirebrook", "answer", ("text_outside_tags",)), 0, 0.0),  # answer, but a bad turn
    (traj(None, "invalid"), 0, 0.0),
    (traj(None, "max_turns"), 1, 0.1),
    (traj(None, "max_tokens"), 1, 0.1),
    (traj(None, "eos"), 1, 0.1),
    (traj("  ", "answer"), 1, 0.1),                   # an empty answer is no answer
    (traj("Tarsk", "answer"), 2, 0.2),                # wrong answer: S = 0
    (traj("Mirebrook", "answer"), 2, 1.0),            # exact match: S = 1
    (traj("the mirebrook!", "answer"), 2, 1.0),       # EM after normalisation
])
def test_stage_table_short_form(trajectory: Trajectory, stage: int, reward: float) -> None:
    out = make_reward_fn("prs", OFF)(trajectory, SHORT)
    assert out.stage == stage
    assert out.reward == pytest.approx(reward)
    assert out.format == pytest.approx({0: 0.0, 1: 0.1, 2: 0.2}[stage])


def test_partial_answer_quality_short_form() -> None:
    # "Mirebrook town" vs "Mirebrook": BLEU-1 = 1/2, penalty 1 (2 <= 2*1) -> S = 0.5
    out = make_reward_fn("prs", OFF)(traj("Mirebrook town"), SHORT)
    assert (out.stage, out.exact_match, out.outcome) == (2, 0.0, 0.0)
    assert out.quality == pytest.approx(0.5)
    assert out.reward == pytest.approx(0.2 + 0.8 * 0.5)


def test_em_sets_one_off_uses_bleu_even_on_match() -> None:
    out = make_reward_fn("prs", {"schedule": False, "em_sets_one": False})(traj("Mirebrook"),
                                                                             SHORT)
    assert out.quality == 1.0  # BLEU of an exact answer is 1 anyway
    q = {**SHORT, "answers": ["x"]}
    f1 = make_reward_fn("prs", {"schedule": False, "quality": "f1"})(traj("x y"), q)
    assert f1.quality == pytest.approx(2 / 3)


def test_stage_values_custom_table() -> None:
    cfg = {"schedule": False, "r_invalid": 0.05, "r_format": 0.3, "r_answer": 0.5}
    fn = make_reward_fn("prs", cfg)
    assert fn(traj(None, "invalid", ("nested_tag",)), SHORT).reward == pytest.approx(0.05)
    assert fn(traj(None, "max_turns"), SHORT).reward == pytest.approx(0.3)
    assert fn(traj("Mirebrook town"), SHORT).reward == pytest.approx(0.5 + 0.5 * 0.5)


def test_long_form_uses_judge_score_and_match() -> None:
    judge = FixedJudge(0.75, True)
    out = make_reward_fn("prs", OFF, judge=judge)(traj("whatever", qid="l1"), LONG)
    assert (out.stage, out.quality, out.outcome) == (2, 0.75, 1.0)
    assert out.reward == pytest.approx(0.2 + 0.8 * 0.75)
    # no judge call for trajectories that never answered
    make_reward_fn("prs", OFF, judge=judge)(traj(None, "max_turns", qid="l1"), LONG)
    assert judge.calls == 1


def test_long_form_without_judge_is_an_error() -> None:
    with pytest.raises(ValueError, match="judge is required"):
        make_reward_fn("prs", OFF)(traj("x", qid="l1"), LONG)


@pytest.mark.parametrize("trajectory, reward", [
    (traj("Mirebrook"), 1.0),
    (traj("Mirebrook town"), 0.0),
    (traj(None, "max_turns"), 0.0),                      # nothing for format
    (traj("Mirebrook", "answer", ("text_outside_tags",)), 1.0),  # format ignored
])
def test_binary_short_form(trajectory: Trajectory, reward: float) -> None:
    out = make_reward_fn("binary")(trajectory, SHORT)
    assert out.reward == reward and out.outcome == reward and out.format == 0.0


@pytest.mark.parametrize("match, reward", [(True, 1.0), (False, 0.0)])
def test_binary_long_form(match: bool, reward: float) -> None:
    out = make_reward_fn("binary", judge=FixedJudge(0.55, match))(traj("x", qid="l1"), LONG)
    assert out.reward == reward and out.quality == 0.55


# --- schedule -----------------------------------------------------------------------------


def test_schedule_endpoints_and_midpoint() -> None:
    cfg = PRSConfig(ramp_steps=100)
    assert stage_values(cfg, 0) == (0.0, 0.5, 0.8)
    assert stage_values(cfg, 50) == pytest.approx((0.0, 0.3, 0.5))
    assert stage_values(cfg, 100) == (0.0, 0.1, 0.2)   # the table, exactly
    assert stage_values(cfg, 10_000) == (0.0, 0.1, 0.2)
    assert schedule_weight(PRSConfig(ramp_steps=0), 0) == 1.0
    cos = PRSConfig(ramp_steps=100, ramp="cosine")
    assert schedule_weight(cos, 50) == pytest.approx(0.5)
    assert schedule_weight(cos, 25) == pytest.approx((1 - 2 ** -0.5) / 2)


def test_schedule_worked_example_from_docs() -> None:
    # answered, S = 0.5 ("Mirebrook town"): 0.90 at step 0, 0.75 at 50, 0.60 from 100 on
    fn = make_reward_fn("prs", {"ramp_steps": 100})
    t = traj("Mirebrook town")
    assert [fn(t, SHORT, step=s).reward for s in (0, 50, 100, 500)] == \
        pytest.approx([0.9, 0.75, 0.6, 0.6])
    # a correct answer earns 1 at every step; the format floor decays
    assert {fn(traj("Mirebrook"), SHORT, step=s).reward for s in (0, 50, 100)} == {1.0}
    assert [fn(traj("Mirebrook"), SHORT, step=s).format for s in (0, 50, 100)] == \
        pytest.approx([0.8, 0.5, 0.2])


@pytest.mark.parametrize("step", [0, 1, 30, 99, 100, 1000])
def test_schedule_keeps_stage_order(step: int) -> None:
    fn = make_reward_fn("prs", {"ramp_steps": 100})
    r0 = fn(traj(None, "invalid", ("invalid_json",)), SHORT, step=step).reward
    r1 = fn(traj(None, "max_turns"), SHORT, step=step).reward
    r2_wrong = fn(traj("Tarsk"), SHORT, step=step).reward
    r2_right = fn(traj("Mirebrook"), SHORT, step=step).reward
    assert r0 < r1 < r2_wrong < r2_right == 1.0


def test_format_dominates_early_quality_late() -> None:
    fn = make_reward_fn("prs", {"ramp_steps": 100})
    gap_early = fn(traj("Mirebrook"), SHORT, step=0).reward - fn(traj("Tarsk"), SHORT,
                                                                  step=0).reward
    gap_late = fn(traj("Mirebrook"), SHORT, step=100).reward - fn(traj("Tarsk"), SHORT,
                                                                   step=100).reward
    assert gap_early == pytest.approx(0.2) and gap_late == pytest.approx(0.8)


# --- config and registry ------------------------------------------------------------------


@pytest.mark.parametrize("values, key", [
    ({"r_format": 1.5}, "prs.r_format"),
    ({"ramp": "exp"}, "prs.ramp"),
    ({"quality": "rouge"}, "prs.quality"),
    ({"typo": 1}, "prs.typo"),
    ({"r_format": 0.3, "r_answer": 0.2}, "r_format <= r_answer"),
])
def test_config_errors_name_the_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_config(PRSConfig, values, "prs")


def test_unknown_reward_lists_known() -> None:
    with pytest.raises(ValueError, match="binary"):
        make_reward_fn("nope")


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_reward_in_unit_interval_with_all_fields(name: str) -> None:
    fn = make_reward_fn(name, judge=make_judge("rubric"))
    cases = [(traj(None, "invalid", ("invalid_json",)), SHORT), (traj(None, "max_turns"), SHORT),
             (traj("Mirebrook"), SHORT), (traj("nope"), SHORT),
             (traj(LONG["answers"][0], qid="l1"), LONG), (traj("nope", qid="l1"), LONG)]
    for step in (0, 50, 200):
        for t, q in cases:
            out = fn(t, q, step=step)
            assert isinstance(out, RewardBreakdown)
            for v in (out.reward, out.format, out.quality, out.exact_match, out.outcome):
                assert 0.0 <= v <= 1.0
            assert out.stage in (0, 1, 2)


def test_build_reward_fn_from_config() -> None:
    cfg = build_config(RewardConfig, {"reward": "prs", "prs": {"schedule": False},
                                      "judge": {"name": "rubric", "options": {"threshold": 0.9}}})
    fn = build_reward_fn(cfg)
    assert fn(traj(LONG["answers"][0], qid="l1"), LONG).reward == 1.0


def test_score_batch_and_unknown_question() -> None:
    fn = make_reward_fn("prs", OFF)
    out = score_batch(fn, [traj("Mirebrook"), traj(None, "max_turns")], {"s1": SHORT})
    assert [o.reward for o in out] == pytest.approx([1.0, 0.1])
    with pytest.raises(KeyError, match="'zz'"):
        score_batch(fn, [traj("x", qid="zz")], {"s1": SHORT})


class BatchJudge(FixedJudge):
    """An LLM-judge stand-in: ``judge_batch`` answers everything it is given."""

    def __init__(self) -> None:
        super().__init__(0.9, True)
        self.batches: list[list[dict]] = []

    def judge_batch(self, items):
        self.batches.append(list(items))
        return [JudgeVerdict(0.5, False, "batched") for _ in items]


@pytest.mark.parametrize("name, batched", [("prs", 1), ("binary", 2)])
def test_score_batch_judges_distinct_answers_in_one_batch(name: str, batched: int) -> None:
    judge = BatchJudge()
    fn = make_reward_fn(name, OFF, judge=judge)
    trajs = [traj("same", qid="l1"), traj("same", qid="l1"),
             traj("bad", "answer", ("text_outside_tags",), qid="l1"),  # PRS: never judged
             traj(None, "max_turns", qid="l1"), traj("Mirebrook")]
    out = score_batch(fn, trajs, {"l1": LONG, "s1": SHORT})
    assert len(judge.batches) == 1 and len(judge.batches[0]) == batched
    assert judge.calls == 0  # everything came from the batch
    assert out[0].quality == out[1].quality == 0.5
    assert out[4].reward == 1.0


def test_question_records_from_pandas_with_numpy_arrays() -> None:
    np = pytest.importorskip("numpy")
    q = {**LONG, "answers": np.array(LONG["answers"]), "facts": np.array(FACTS)}
    out = make_reward_fn("prs", OFF, judge=make_judge("rubric"))(traj(LONG["answers"][0],
                                                                      qid="l1"), q)
    assert out.reward == 1.0
    s = {**SHORT, "answers": np.array(["Mirebrook"]), "facts": np.array([], dtype=object)}
    assert make_reward_fn("prs", OFF)(traj("Mirebrook"), s).reward == 1.0
