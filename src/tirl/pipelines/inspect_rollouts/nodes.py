"""Nodes of the ``inspect_rollouts`` stage: a model + a question split -> validated trajectories.

Thin adapters: pick questions, build the search tool and the backend, call
:func:`tirl.core.agent.rollout.run_rollouts`, validate the trajectories with Great Expectations
and summarise them (stats JSON + a Markdown sample for MLflow). The catalog's
:class:`~tirl.datasets.trajectories.TrajectoryDataset` writes them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tirl import tracking
from tirl.core.agent.backends import make_backend
from tirl.core.agent.env import AgentConfig, Sampling
from tirl.core.agent.rollout import rollout_stats, run_rollouts
from tirl.core.config import build_config, field_, to_dict
from tirl.core.data.validation import raise_if_failed, validate
from tirl.core.eval.sample import trajectories_markdown
from tirl.core.records import split_records
from tirl.core.types import FINISH_REASONS, Trajectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutStageConfig:
    """``params:inspect_rollouts``."""

    split: str = field_("train", doc="question split to roll out on")
    n_questions: int | None = field_(32, doc="first N questions of the split (null = all)", ge=1)
    group_size: int = field_(5, doc="samples per question (G)", ge=1)
    model: str | None = field_(None, doc="HF id or local path to roll out instead of the catalog "
                                         "model (downloads stay off)")
    dtype: str = field_("auto", doc="dtype when loading `model`",
                        choices=("auto", "float32", "bfloat16", "float16"))
    device: str | None = field_(None, doc="torch device for the policy (null = where it is)")
    sampling: Sampling = field_(default_factory=Sampling,
                                doc="how turns are sampled (budgets and search: params:agent)")
    sample_size: int = field_(5, doc="trajectories shown in inspect_rollouts_sample", ge=0)
    progress: bool = field_(True, doc="tqdm progress bar")
    validation: list[dict[str, Any]] = field_(default_factory=list,
                                              doc="GX suite over the derived columns")


# --- nodes ---------------------------------------------------------------------------------


def _policy(model: dict[str, Any], config: RolloutStageConfig) -> tuple[Any, Any]:
    if config.model is not None:
        from tirl.core.modeling.factory import load_model

        logger.info("inspect_rollouts: loading %s instead of the catalog model", config.model)
        return load_model(config.model, dtype=config.dtype, device=config.device)
    if not isinstance(model, dict) or not {"model", "tokenizer"} <= set(model):
        raise ValueError("inspect_rollouts: the model input must be a dict with 'model' and 'tokenizer' "
                         "(an HFModelDataset)")
    policy = model["model"]
    if config.device is not None:
        policy = policy.to(config.device)
    return policy, model["tokenizer"]


def generate_rollouts(model: dict[str, Any], questions: pd.DataFrame, corpus: pd.DataFrame,
                      params: dict[str, Any], agent: dict[str, Any]
                      ) -> tuple[list[Trajectory], dict[str, Any], str]:
    """Roll out ``group_size`` episodes per selected question.

    Returns the trajectories (not yet validated), the rollout stats and a Markdown sample.
    """
    config = build_config(RolloutStageConfig, params, "inspect_rollouts")
    env = build_config(AgentConfig, agent, "agent")
    engine = env.rollout_config(config.sampling)
    policy, tokenizer = _policy(model, config)
    selected = split_records(questions, config.split, config.n_questions, key="inspect_rollouts.split")
    tools = env.tools(corpus, tokenizer)
    backend = make_backend(engine.backend, policy, tokenizer,
                           **({"max_batch": engine.max_batch} if engine.backend == "hf" else {}))
    was_training = getattr(policy, "training", False)
    if hasattr(policy, "eval"):
        policy.eval()
    t0 = time.perf_counter()
    try:
        trajectories = run_rollouts(backend=backend, tokenizer=tokenizer, tools=tools,
                                    questions=selected, group_size=config.group_size,
                                    config=engine, progress=config.progress)
    finally:
        if was_training:
            policy.train()
    stats = rollout_stats(trajectories, elapsed_s=time.perf_counter() - t0)
    stats["rollout/questions"] = len(selected)
    stats["config"] = to_dict(engine)
    tracking.log_metrics({k: v for k, v in stats.items() if isinstance(v, (int, float))},
                         stage="inspect_rollouts")
    sample = trajectories_markdown(_spread_sample(trajectories, config.sample_size),
                                   title=f"Rollout sample ({config.split}, G={config.group_size})")
    return trajectories, stats, sample


def _spread_sample(trajectories: list[Trajectory], k: int) -> list[Trajectory]:
    """Up to ``k`` trajectories, one per finish reason first so the sample shows variety."""
    picked, seen = [], set()
    for t in trajectories:
        if t.finish_reason not in seen and len(picked) < k:
            picked.append(t)
            seen.add(t.finish_reason)
    for t in trajectories:
        if len(picked) >= k:
            break
        if t not in picked:
            picked.append(t)
    return picked


def derive_trajectory_columns(trajectories: list[Trajectory]) -> pd.DataFrame:
    """Helper columns GX can check: lengths, mask binary, spans inside the sequence."""
    t = trajectories
    out = pd.DataFrame({
        "id": [f"{x.question_id}#{x.sample_idx}" for x in t],
        "question_id": [x.question_id for x in t],
        "finish_reason": [x.finish_reason for x in t],
    })
    lens = [len(x.token_ids) for x in t]
    out["n_tokens"] = lens
    out["n_mask"] = [len(x.mask) for x in t]
    out["n_logprobs"] = [len(x.logprobs) for x in t]
    out["mask_binary"] = [bool(np.isin(np.asarray(x.mask), [0, 1]).all()) for x in t]
    out["prompt_untrained"] = [not any(np.asarray(x.mask)[:x.prompt_len]) for x in t]
    # Rows whose lengths disagree fail here too (and, by name, in the length expectations).
    out["logprobs_zero_off_mask"] = [
        len(x.logprobs) == len(x.mask)
        and bool(np.all(np.asarray(x.logprobs)[np.asarray(x.mask) == 0] == 0.0)) for x in t]
    out["logprobs_finite_nonpositive"] = [
        bool(np.all(np.isfinite(x.logprobs)) and np.all(np.asarray(x.logprobs) <= 1e-6)) for x in t]
    out["prompt_len_ok"] = [0 < x.prompt_len < n for x, n in zip(t, lens)]
    return out


DEFAULT_SUITE: list[dict[str, Any]] = [
    {"expectation": "ExpectTableRowCountToBeBetween", "kwargs": {"min_value": 1}},
    {"expectation": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": "question_id"}},
    {"expectation": "ExpectColumnValuesToBeUnique", "kwargs": {"column": "id"}},
    {"expectation": "ExpectColumnPairValuesToBeEqual",
     "kwargs": {"column_A": "n_tokens", "column_B": "n_mask"}},
    {"expectation": "ExpectColumnPairValuesToBeEqual",
     "kwargs": {"column_A": "n_tokens", "column_B": "n_logprobs"}},
    {"expectation": "ExpectColumnValuesToBeInSet", "kwargs": {"column": "mask_binary", "value_set": [True]}},
    {"expectation": "ExpectColumnValuesToBeInSet", "kwargs": {"column": "prompt_untrained", "value_set": [True]}},
    {"expectation": "ExpectColumnValuesToBeInSet",
     "kwargs": {"column": "logprobs_zero_off_mask", "value_set": [True]}},
    {"expectation": "ExpectColumnValuesToBeInSet",
     "kwargs": {"column": "logprobs_finite_nonpositive", "value_set": [True]}},
    {"expectation": "ExpectColumnValuesToBeInSet", "kwargs": {"column": "prompt_len_ok", "value_set": [True]}},
    {"expectation": "ExpectColumnValuesToBeInSet",
     "kwargs": {"column": "finish_reason", "value_set": list(FINISH_REASONS)}},
]


def validate_rollouts(trajectories: list[Trajectory], stats: dict[str, Any],
                      params: dict[str, Any]) -> tuple[list[Trajectory], dict[str, Any]]:
    """GX-validate the trajectories; a failure stops the run naming the offending rows.

    Returns the trajectories unchanged (now safe to write) and the stats with the validation
    report.
    """
    config = build_config(RolloutStageConfig, params, "inspect_rollouts")
    suite = config.validation or DEFAULT_SUITE
    report = validate(derive_trajectory_columns(trajectories), suite, "inspect_rollouts_trajectories")
    raise_if_failed(report)
    return trajectories, {**stats, "validation": report}
