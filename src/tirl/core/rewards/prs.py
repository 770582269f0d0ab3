"""Progressive Reward Shaping and the binary baseline (docs/rewards.md).

Rewards are registered by name in :data:`REWARDS` and built with :func:`make_reward_fn`; each
returned callable follows :class:`tirl.core.types.RewardFn`.

Stages, checked in order (per-sample gating: correctness only counts once the format is right):

    stage 0 invalid    a turn broke a parse rule (``trajectory.parse_errors`` non-empty,
                       or ``finish_reason == "invalid"``)   -> r_invalid
    stage 1 formatted  well formed, but no (or an empty) answer -> r_format
    stage 2 answered   well formed with a final answer      -> r_answer + (1 - r_answer) * S

``S`` (quality) is the length-aware BLEU against the gold answers (short-form; an exact match
sets S = 1) or the judge's score against the reference (long-form).

Curriculum schedule (``schedule: on``): with ``w = ramp(step / ramp_steps)`` clipped to [0, 1]
(``ramp: linear`` -> w itself, ``cosine`` -> (1 - cos(pi w)) / 2), the stage constants move
linearly from a format-dominated start table to the final table::

    r_format(step) = r_format_start + w * (r_format - r_format_start)
    r_answer(step) = r_answer_start + w * (r_answer - r_answer_start)

so the format part of an answered trajectory, ``r_answer(step)``, decays (0.8 -> 0.2 by
default) while the quality weight ``1 - r_answer(step)`` grows (0.2 -> 0.8); at
``step >= ramp_steps`` the table holds exactly. ``r_invalid`` is never scheduled.
Worked example (``ramp_steps = 100``, an answered trajectory with S = 0.5):
step 0 -> 0.8 + 0.2 * 0.5 = 0.90; step 50 -> 0.5 + 0.5 * 0.5 = 0.75;
step >= 100 -> 0.2 + 0.8 * 0.5 = 0.60. A correct answer earns 1.0 at every step.

Components (:class:`~tirl.core.types.RewardBreakdown`): ``format`` is the stage constant paid
(r_invalid / r_format(step) / r_answer(step)), ``quality`` is S (0 without an answer),
``exact_match`` is SQuAD EM of the answer against the gold answers, ``outcome`` is the
correctness part alone (EM for short-form, the judge's Match for long-form). PRS gates all of
them on the format (a stage-0 trajectory reports zeros); the binary reward does not look at
the format at all and scores any extracted answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tirl.core.config import build_config, field_
from tirl.core.rewards.text import exact_match, length_aware_bleu, token_f1
from tirl.core.types import Judge, RewardBreakdown, RewardFn, Trajectory

__all__ = ["PRSConfig", "REWARDS", "RewardConfig", "JudgeSpec", "BoundReward", "build_reward_fn",
           "make_reward_fn", "prs_reward", "binary_reward", "trajectory_stage",
           "schedule_weight", "stage_values", "score_batch"]

RAMPS: dict[str, Callable[[float], float]] = {
    "linear": lambda x: x,
    "cosine": lambda x: (1.0 - math.cos(math.pi * x)) / 2.0,
}


@dataclass(frozen=True)
class PRSConfig:
    """PRS stage values, curriculum schedule and short-form quality measure."""

    r_invalid: float = field_(0.0, doc="reward of a trajectory with a malformed turn", ge=0.0,
                              le=1.0)
    r_format: float = field_(0.1, doc="reward of a well-formed trajectory with no answer",
                             ge=0.0, le=1.0)
    r_answer: float = field_(0.2, doc="floor of an answered trajectory; quality fills the rest",
                             ge=0.0, le=1.0)
    schedule: bool = field_(True, doc="curriculum: start format-dominated, ramp to the table")
    ramp_steps: int = field_(7, doc="steps over which the schedule reaches the table", ge=0)
    ramp: str = field_("linear", doc="shape of the schedule weight", choices=tuple(RAMPS))
    r_format_start: float = field_(0.5, doc="r_format at step 0 when the schedule is on",
                                   ge=0.0, le=1.0)
    r_answer_start: float = field_(0.8, doc="r_answer at step 0 when the schedule is on",
                                   ge=0.0, le=1.0)
    quality: str = field_("bleu", doc="short-form quality S: length-aware BLEU or token F1",
                          choices=("bleu", "f1"))
    alpha: float = field_(2.0, doc="length-aware BLEU long-answer tolerance", gt=0.0)
    em_sets_one: bool = field_(True, doc="an exact match sets S = 1")

    def __post_init__(self) -> None:
        # Order preservation: invalid < formatted <= answered at every step of the schedule.
        for suffix, fmt, ans in (("", self.r_format, self.r_answer),
                                 ("_start", self.r_format_start, self.r_answer_start)):
            if not self.r_invalid <= fmt <= ans:
                raise ValueError(f"need r_invalid <= r_format{suffix} <= r_answer{suffix}, got "
                                 f"{self.r_invalid}, {fmt}, {ans}")


def schedule_weight(config: PRSConfig, step: int) -> float:
    """Progress ``w`` in [0, 1] of the curriculum at ``step`` (1 = final table).

    >>> schedule_weight(PRSConfig(ramp_steps=100), 50)
    0.5
    >>> schedule_weight(PRSConfig(schedule=False), 0)
    1.0
    """
    if not config.schedule or config.ramp_steps == 0:
        return 1.0
    return RAMPS[config.ramp](min(1.0, max(0.0, step / config.ramp_steps)))


def stage_values(config: PRSConfig, step: int) -> tuple[float, float, float]:
    """``(r_invalid, r_format, r_answer)`` in force at ``step``.

    >>> stage_values(PRSConfig(ramp_steps=100), 50)
    (0.0, 0.3, 0.5)
    """
    w = schedule_weight(config, step)
    if w >= 1.0:
        return config.r_invalid, config.r_format, config.r_answer
    return (config.r_invalid,
            config.r_format_start + w * (config.r_format - config.r_format_start),
            config.r_answer_start + w * (config.r_answer - config.r_answer_start))


def trajectory_stage(trajectory: Trajectory) -> int:
    """PRS stage reached: 0 invalid, 1 formatted without answer, 2 answered.

    An empty or whitespace-only ``<answer></answer>`` counts as no answer (stage 1): otherwise
    the format-dominated start of the schedule would pay an empty answer 0.8.
    """
    if trajectory.parse_errors or trajectory.finish_reason == "invalid":
        return 0
    return 2 if trajectory.answer is not None and trajectory.answer.strip() else 1


def _golds(question: Mapping[str, Any]) -> list[str]:
    answers = question.get("answers")
    if answers is None or isinstance(answers, str) or len(answers) == 0:
        raise ValueError(f"question {question.get('id')!r}: 'answers' must be a non-empty list")
    return [str(a) for a in answers]


def _facts(question: Mapping[str, Any]) -> tuple[str, ...]:
    # Records from pandas/parquet carry numpy arrays, whose truth value is ambiguous.
    facts = question.get("facts")
    return () if facts is None or isinstance(facts, float) else tuple(str(f) for f in facts)


def _is_long(question: Mapping[str, Any]) -> bool:
    task = question.get("task", "short")
    if task not in ("short", "long"):
        raise ValueError(f"question {question.get('id')!r}: task {task!r} is not short/long")
    return task == "long"


def _judge(judge: Judge | None, question: Mapping[str, Any], answer: str):
    if judge is None:
        raise ValueError(f"question {question.get('id')!r} is long-form: a judge is required "
                         "(make_reward_fn(..., judge=make_judge(...)))")
    golds = _golds(question)
    return judge.judge(question=str(question["question"]), reference=golds[0], answer=answer,
                       facts=_facts(question))


def prs_reward(trajectory: Trajectory, question: Mapping[str, Any], *, step: int = 0,
               config: PRSConfig, judge: Judge | None = None) -> RewardBreakdown:
    """PRS reward of one trajectory (see the module docstring for stages and schedule).

    >>> q = {"id": "q1", "question": "Where?", "answers": ["Mirebrook"], "task": "short"}
    >>> t = Trajectory("q1", 0, 0, [], [], [], [], [], answer="mirebrook", finish_reason="answer")
    >>> prs_reward(t, q, config=PRSConfig(schedule=False)).reward
    1.0
    >>> t.answer = "Tarsk"
    >>> prs_reward(t, q, config=PRSConfig(schedule=False)).reward
    0.2
    """
    r_invalid, r_format, r_answer = stage_values(config, step)
    stage = trajectory_stage(trajectory)
    if stage == 0:
        return RewardBreakdown(r_invalid, 0, r_invalid, 0.0, 0.0, 0.0)
    if stage == 1:
        return RewardBreakdown(r_format, 1, r_format, 0.0, 0.0, 0.0)
    answer = trajectory.answer or ""
    golds = _golds(question)
    em = exact_match(answer, golds)
    if _is_long(question):
        verdict = _judge(judge, question, answer)
        quality, outcome = float(verdict.score), float(verdict.match)
    else:
        if config.quality == "bleu":
            quality = length_aware_bleu(answer, golds, alpha=config.alpha)
        else:
            quality = token_f1(answer, golds)
        outcome = em
    if config.em_sets_one and em:
        quality = 1.0
    reward = r_answer + (1.0 - r_answer) * quality
    return RewardBreakdown(reward, 2, r_answer, quality, em, outcome)


def binary_reward(trajectory: Trajectory, question: Mapping[str, Any], *, step: int = 0,
                  config: PRSConfig | None = None,
                  judge: Judge | None = None) -> RewardBreakdown:
    """The paper's 0/1 baseline: EM (short-form) or judge Match (long-form); format ignored.

    >>> q = {"id": "q1", "question": "Where?", "answers": ["Mirebrook"], "task": "short"}
    >>> t = Trajectory("q1", 0, 0, [], [], [], [], [], answer="Mirebrook.", finish_reason="answer")
    >>> binary_reward(t, q).reward
    1.0
    """
    stage = trajectory_stage(trajectory)
    answer = trajectory.answer
    if not answer:
        return RewardBreakdown(0.0, stage, 0.0, 0.0, 0.0, 0.0)
    golds = _golds(question)
    em = exact_match(answer, golds)
    if _is_long(question):
        verdict = _judge(judge, question, answer)
        outcome, quality = float(verdict.match), float(verdict.score)
    else:
        outcome, quality = em, em
    return RewardBreakdown(outcome, stage, 0.0, quality, em, outcome)


REWARDS: dict[str, Callable[..., RewardBreakdown]] = {
    "prs": prs_reward,
    "binary": binary_reward,
}


@dataclass(frozen=True)
class BoundReward:
    """A registered reward bound to its config and judge; a :class:`RewardFn`."""

    name: str
    config: PRSConfig
    judge: Judge | None = None

    def __call__(self, trajectory: Trajectory, question: Mapping[str, Any], *,
                 step: int = 0) -> RewardBreakdown:
        return REWARDS[self.name](trajectory, question, step=step, config=self.config,
                                  judge=self.judge)


def make_reward_fn(name: str, config: PRSConfig | Mapping[str, Any] | None = None,
                   judge: Judge | None = None) -> BoundReward:
    """The reward registered as ``name``, bound to its config and (long-form) judge.

    ``config`` may be a :class:`PRSConfig` or a plain mapping (built with ``build_config``).

    >>> fn = make_reward_fn("prs", {"schedule": False})
    >>> q = {"id": "q1", "question": "Where?", "answers": ["Mirebrook"], "task": "short"}
    >>> fn(Trajectory("q1", 0, 0, [], [], [], [], [], finish_reason="max_turns"), q).reward
    0.1
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r} (known: {sorted(REWARDS)})")
    if not isinstance(config, PRSConfig):
        config = build_config(PRSConfig, dict(config or {}), "prs")
    return BoundReward(name, config, judge)


class _PrefetchedJudge:
    """Serves verdicts fetched in one concurrent ``judge_batch``; asks the real judge for the
    rest (so a reward function stays one trajectory at a time)."""

    def __init__(self, judge: Judge, verdicts: dict[tuple, Any]) -> None:
        self._judge, self._verdicts = judge, verdicts

    def judge(self, *, question: str, reference: str, answer: str,
              facts: tuple[str, ...] | list[str] = ()):
        key = (question, reference, answer, tuple(facts))
        hit = self._verdicts.get(key)
        if hit is not None:
            return hit
        return self._judge.judge(question=question, reference=reference, answer=answer,
                                 facts=facts)


def _prefetch(reward_fn: BoundReward, trajectories: Sequence[Trajectory],
              questions: list[Mapping[str, Any]]) -> BoundReward:
    judge = reward_fn.judge
    if judge is None or not hasattr(judge, "judge_batch"):
        return reward_fn
    items, keys = [], set()
    for traj, q in zip(trajectories, questions):
        if q.get("task") != "long" or not traj.answer:
            continue
        if reward_fn.name == "prs" and trajectory_stage(traj) != 2:
            continue  # PRS never judges a malformed or unanswered trajectory
        facts = _facts(q)
        key = (str(q["question"]), _golds(q)[0], traj.answer, facts)
        if key not in keys:
            keys.add(key)
            items.append({"question": key[0], "reference": key[1], "answer": key[2],
                          "facts": facts})
    if not items:
        return reward_fn
    verdicts = judge.judge_batch(items)
    table = {(i["question"], i["reference"], i["answer"], i["facts"]): v
             for i, v in zip(items, verdicts)}
    return BoundReward(reward_fn.name, reward_fn.config, _PrefetchedJudge(judge, table))


def score_batch(reward_fn: RewardFn, trajectories: Sequence[Trajectory],
                questions_by_id: Mapping[str, Mapping[str, Any]],
                step: int = 0) -> list[RewardBreakdown]:
    """Score many trajectories; a trajectory whose question is unknown is an error naming it.

    With a :class:`BoundReward` whose judge has ``judge_batch`` (the LLM judges), the distinct
    long-form answers are judged in one concurrent batch first.
    """
    questions = []
    for i, traj in enumerate(trajectories):
        question = questions_by_id.get(traj.question_id)
        if question is None:
            raise KeyError(f"trajectory {i}: question_id {traj.question_id!r} is not in the "
                           f"questions table ({len(questions_by_id)} questions)")
        questions.append(question)
    if isinstance(reward_fn, BoundReward):
        reward_fn = _prefetch(reward_fn, trajectories, questions)
    return [reward_fn(t, q, step=step) for t, q in zip(trajectories, questions)]


# --- one config for "which reward, with which judge" (shared by scoring and RL stages) --


@dataclass(frozen=True)
class JudgeSpec:
    """Which judge scores long-form answers, and its options (passed to ``make_judge``)."""

    name: str = field_("rubric", doc="a name registered in tirl.core.rewards.judges.JUDGES")
    options: dict[str, Any] = field_(default_factory=dict, doc="keyword options of the judge")

    def __post_init__(self) -> None:
        # Checked here, not when the judge is first built (after the model is loaded, or
        # after every evaluation rollout); judge_options says why and what.
        from tirl.core.rewards.judge_options import check_judge_options
        from tirl.core.rewards.judges import JUDGES

        if self.name not in JUDGES:
            raise ValueError(f"name: {self.name!r} is not one of {sorted(JUDGES)}")
        check_judge_options(self.name, self.options)


@dataclass(frozen=True)
class RewardConfig:
    """The reward of a run: a registered reward name, its PRS config and its judge."""

    reward: str = field_("prs", doc="registered reward name", choices=tuple(REWARDS))
    prs: PRSConfig = field_(default_factory=PRSConfig, doc="PRS stage values and schedule")
    judge: JudgeSpec = field_(default_factory=JudgeSpec, doc="long-form judge")


def reward_stats(scores: Sequence[RewardBreakdown]) -> dict[str, float]:
    """Means of a batch of rewards, the one set of reward metric names (``reward/...``) that
    RL (every step) and ``inspect_rewards`` log: the reward, each component, and the share of
    each PRS stage. All are means over the batch, so RL averages them across processes exactly."""
    n = max(len(scores), 1)
    out = {"reward/mean": sum(r.reward for r in scores) / n}
    for comp in ("format", "quality", "exact_match", "outcome"):
        out[f"reward/{comp}"] = sum(getattr(r, comp) for r in scores) / n
    for k in range(3):
        out[f"reward/stage_{k}_frac"] = sum(r.stage == k for r in scores) / n
    return out


def build_reward_fn(config: RewardConfig, judge: Judge | None = None) -> RewardFn:
    """``make_reward_fn`` from a :class:`RewardConfig`; builds the judge unless one is given."""
    if judge is None:
        from tirl.core.rewards.judges import make_judge  # judges import text only; no cycle

        judge = make_judge(config.judge.name, **config.judge.options)
    return make_reward_fn(config.reward, config.prs, judge=judge)
