"""Rewards: answer metrics, length-aware BLEU, PRS and the binary baseline, judges.

See docs/rewards.md.
"""

from tirl.core.rewards.judges import JUDGES, RubricConfig, RubricJudge, make_judge
from tirl.core.rewards.prs import (
    REWARDS,
    BoundReward,
    JudgeSpec,
    PRSConfig,
    RewardConfig,
    binary_reward,
    build_reward_fn,
    make_reward_fn,
    prs_reward,
    schedule_weight,
    score_batch,
    stage_values,
    trajectory_stage,
)
from tirl.core.rewards.text import (
    answer_tokens,
    exact_match,
    length_aware_bleu,
    normalize_answer,
    token_f1,
)

__all__ = [
    "JUDGES", "REWARDS", "BoundReward", "JudgeSpec", "PRSConfig", "RewardConfig",
    "RubricConfig", "RubricJudge", "answer_tokens", "binary_reward", "build_reward_fn",
    "exact_match", "length_aware_bleu", "make_judge", "make_reward_fn", "normalize_answer",
    "prs_reward", "schedule_weight", "score_batch", "stage_values", "token_f1",
    "trajectory_stage",
]
