"""Thin adapter: catalog (SFT model, questions, corpus) -> core RL loop -> RL model + history.

The online loop itself (rollout -> reward -> VSPO -> update) is a function in
:mod:`tirl.core.rl.loop`; this node only picks the questions, builds the search tool and
the reward, wires the metrics callback to MLflow, and points checkpoints at
``<checkpoint_root>/<run_name>`` so that a killed ``kedro run`` resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tirl import tracking
from tirl.core.agent.env import AgentConfig, Sampling
from tirl.core.config import ConfigError, build_config, field_
from tirl.core.eval.run import EvalConfig, run_evaluation
from tirl.core.measurements import split_measurements
from tirl.core.records import split_records
from tirl.core.rewards.prs import JudgeSpec
from tirl.core.rl.config import TrainConfig, make_reward
from tirl.core.rl.loop import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationConfig:
    """``rl.validation``: greedy evaluation on held-out questions during RL
    (every ``train.val_every`` steps; logged as ``rl/val/<metric>``)."""

    split: str = field_("val", doc="question split validated on (never trained on)")
    max_per_benchmark: int | None = field_(None, doc="cap per benchmark (null = all)", ge=1)
    sampling: Sampling = field_(default_factory=lambda: Sampling(temperature=0.0),
                                doc="greedy by default (budgets and search: params:agent)")
    judge: JudgeSpec = field_(default_factory=JudgeSpec,
                              doc="judge of long-form answers: name, options (that judge's)")


@dataclass(frozen=True)
class RLStageConfig:
    """``params:rl``."""

    split: str = field_("train", doc="question split trained on")
    n_questions: int | None = field_(None, doc="first N questions of the split (null = all)", ge=1)
    run_name: str = field_("rl", doc="names the checkpoint folder (one per variant)")
    checkpoint_root: str = field_("data/06_models/checkpoints", doc="checkpoints go to <root>/<run_name>")
    resume: bool = field_(True, doc="continue from the newest checkpoint of this run, if any")
    device: str | None = field_(None, doc="torch device; null = cuda when available, else cpu")
    sampling: Sampling = field_(default_factory=Sampling,
                                doc="how RL rollouts sample (paper: temperature 1, top-p 1); "
                                    "budgets, parser and search come from params:agent")
    validation: ValidationConfig = field_(default_factory=ValidationConfig,
                                          doc="held-out validation during RL (train.val_every)")
    train: TrainConfig = field_(default_factory=TrainConfig, doc="the RL loop (TrainConfig)")


def question_records(questions: pd.DataFrame, split: str, n: int | None) -> list[dict[str, Any]]:
    """Plain-python records of one split (parquet lists arrive as numpy arrays)."""
    missing = [c for c in ("id", "question", "answers", "split") if c not in questions.columns]
    if missing:
        raise ValueError(f"questions: missing columns {missing} (has {list(questions.columns)})")
    return split_records(questions, split, n, key="rl.split")


#: Validation metrics logged (the "all" row of the evaluation summary).
VAL_METRICS = ("exact_match", "f1", "la_bleu", "judge_score", "format_valid")


def make_validate(config: RLStageConfig, env: AgentConfig, questions: pd.DataFrame,
                  corpus: pd.DataFrame, tokenizer: Any) -> Any:
    """``validate(policy) -> metrics``: greedy evaluation of the policy on the validation
    split, through the same evaluation code as the benchmark stage."""
    if not config.train.val_every:
        return None
    held_out = questions[questions["split"] == config.validation.split]
    if held_out.empty:
        raise ValueError(f"rl.validation.split: no questions in split "
                         f"{config.validation.split!r} (present: {sorted(questions['split'].unique())})")
    eval_config = EvalConfig(splits=(config.validation.split,),
                             max_per_benchmark=config.validation.max_per_benchmark,
                             rollout=env.rollout_overrides(config.validation.sampling),
                             search=dict(env.search),
                             judge=config.validation.judge, progress=False)

    def validate(policy: Any) -> dict[str, float]:
        _, _, summary = run_evaluation(model=policy, tokenizer=tokenizer, questions=held_out,
                                       corpus=corpus, config=eval_config)
        row = summary.set_index("benchmark").loc["all"]
        return {k: float(row[k]) for k in VAL_METRICS if k in row and pd.notna(row[k])}

    return validate


def stage_config(params: dict[str, Any], agent: dict[str, Any]) -> tuple[RLStageConfig, AgentConfig]:
    """The stage config with ``train.rollout`` built from the agent environment."""
    if "rollout" in (params.get("train") or {}):
        raise ConfigError("rl.train.rollout: rollout budgets, parser and backend are "
                          "set once for every stage in params:agent (conf/base/parameters_agent.yml); "
                          "RL sampling is rl.sampling")
    config = build_config(RLStageConfig, params, "rl")
    env = build_config(AgentConfig, agent, "agent")
    # The loop seeds every step's rollouts itself (from train.seed and the step).
    train_config = dataclasses.replace(config.train, rollout=env.rollout_config(config.sampling))
    return dataclasses.replace(config, train=train_config), env


def run_rl(sft_model: dict[str, Any], questions: pd.DataFrame, corpus: pd.DataFrame,
           params: dict[str, Any], agent: dict[str, Any]
           ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """``(rl_model, rl_history, rl_timings)``: train ``sft_model`` online; one history row
    per step (and one at step -1 with the validation before RL), and the step's wall-clock
    figures in ``rl_timings`` (:mod:`tirl.core.measurements`: never in the history, which
    a rerun reproduces byte for byte)."""
    import torch

    config, env = stage_config(params, agent)
    reward_fn = make_reward(config.train)  # builds the judge: fails before the model moves
    records = question_records(questions, config.split, config.n_questions)
    model, tokenizer = sft_model["model"], sft_model["tokenizer"]
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    tools = env.tools(corpus, tokenizer)
    checkpoint_dir = Path(config.checkpoint_root) / config.run_name
    log.info("rl: %s on %d %s questions; checkpoints in %s", config.train.algorithm,
             len(records), config.split, checkpoint_dir)
    policy, history = train(
        policy=model, tokenizer=tokenizer, questions=records, tools=tools, config=config.train,
        reward_fn=reward_fn,
        # A resumed run is linked to the MLflow run whose checkpoints it continues.
        on_metrics=tracking.make_metrics_logger("rl", resumable=str(checkpoint_dir.resolve())),
        on_completions=tracking.make_table_logger("rl", "completions"),
        checkpoint_dir=checkpoint_dir, resume=config.resume,
        validate=make_validate(config, env, questions, corpus, tokenizer))
    split = [split_measurements(row) for row in history]
    timings = [measured for _, measured in split if len(measured) > 1]
    return ({"model": policy.to("cpu"), "tokenizer": tokenizer},
            pd.DataFrame([results for results, _ in split]), pd.DataFrame(timings))
