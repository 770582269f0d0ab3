"""Evaluate a model on the benchmarks: roll out on held-out questions, then score.

Pure orchestration of core pieces (rollout engine, search tool, judges, metrics); the Kedro
``evaluation`` node only builds :class:`EvalConfig` and hands catalog objects in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tirl.core.agent.backends import make_backend
from tirl.core.agent.rollout import RolloutConfig, run_rollouts
from tirl.core.config import build_config, field_
from tirl.core.eval.metrics import benchmark_of, evaluate
from tirl.core.records import records as plain_records
from tirl.core.rewards.judges import make_judge
from tirl.core.rewards.prs import JudgeSpec
from tirl.core.tools.search import build_search_tool
from tirl.core.types import Trajectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    splits: tuple[str, ...] = field_(("test_in_domain", "test_ood"),
                                     doc="question splits to evaluate on")
    max_per_benchmark: int | None = field_(None, ge=1,
                                           doc="cap on questions per benchmark (None = all)")
    samples: int = field_(1, ge=1, doc="samples per question; >1 with temperature>0 gives pass@k")
    seed: int = field_(0, doc="sampling seed (greedy decoding ignores it)")
    rollout: dict[str, Any] = field_(default_factory=lambda: {"temperature": 0.0},
                                     doc="RolloutConfig overrides; greedy by default")
    search: dict[str, Any] = field_(default_factory=dict, doc="build_search_tool options")
    judge: JudgeSpec = field_(default_factory=JudgeSpec,
                              doc="judge of long-form questions (name, options)")
    progress: bool = field_(True, doc="show a progress bar")

    def __post_init__(self) -> None:
        if self.samples > 1 and float(self.rollout.get("temperature", 1.0)) <= 0.0:
            raise ValueError("samples > 1 needs rollout.temperature > 0 (greedy samples repeat)")


def select_questions(questions: pd.DataFrame, splits: Sequence[str],
                     max_per_benchmark: int | None) -> list[dict[str, Any]]:
    """Held-out questions of ``splits``, at most ``max_per_benchmark`` per benchmark, in a
    stable order (the table's), so every variant sees exactly the same questions."""
    unknown = set(splits) - set(questions["split"].unique())
    if unknown:
        raise ValueError(f"evaluation.splits: no questions in split(s) {sorted(unknown)} "
                         f"(present: {sorted(questions['split'].unique())})")
    records = plain_records(questions[questions["split"].isin(list(splits))])
    if max_per_benchmark is None:
        return records
    seen: dict[str, int] = {}
    out = []
    for q in records:
        b = benchmark_of(q)
        if seen.get(b, 0) < max_per_benchmark:
            seen[b] = seen.get(b, 0) + 1
            out.append(q)
    return out


def run_evaluation(*, model: Any, tokenizer: Any, questions: pd.DataFrame, corpus: pd.DataFrame,
                   config: EvalConfig) -> tuple[list[Trajectory], pd.DataFrame, pd.DataFrame]:
    """Trajectories, per-trajectory metric rows and the per-benchmark summary."""
    selected = select_questions(questions, config.splits, config.max_per_benchmark)
    rollout_cfg = build_config(RolloutConfig, {**config.rollout, "seed": config.seed},
                               "evaluation.rollout")
    tools = {"search": build_search_tool(corpus, tokenizer=tokenizer, **config.search)}
    # Built before the rollouts, so a judge that cannot be built fails before any of them.
    judge = make_judge(config.judge.name, **config.judge.options)
    backend = make_backend(rollout_cfg.backend, model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        trajectories = run_rollouts(backend=backend, tokenizer=tokenizer, tools=tools,
                                    questions=selected, group_size=config.samples,
                                    config=rollout_cfg, progress=config.progress)
    finally:
        model.train(was_training)
    by_id = {q["id"]: q for q in selected}
    rows, summary = evaluate(trajectories, by_id, judge, k=config.samples)
    logger.info("evaluation: %d questions, overall EM %.3f", len(selected),
                float(summary.set_index("benchmark").loc["all", "exact_match"]))
    return trajectories, rows, summary
