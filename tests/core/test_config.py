"""build_config: every number is finite, every bound is checked, the key is always named."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from tirl.core.config import ConfigError, build_config, field_
from tirl.core.pretrain.config import PretrainConfig
from tirl.core.rl.config import TrainConfig
from tirl.core.sft.config import SFTConfig


@dataclass(frozen=True)
class _Cfg:
    x: float = field_(1.0, doc="unbounded number")
    y: float | None = field_(None, doc="optional number")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", ["x", "y"])
def test_non_finite_numbers_are_refused(key, value):
    # NaN passes every comparison-based bound (nan > 0 is False, but nan <= 1 is too), so
    # it is refused for every float, bounded or not, before any bound is looked at.
    with pytest.raises(ConfigError, match=rf"^s\.{key}: expected a finite number"):
        build_config(_Cfg, {key: value}, "s")


@pytest.mark.parametrize("cls, values, key", [
    (TrainConfig, {"critic_lr": 0.0}, "rl.train.critic_lr"),
    (TrainConfig, {"critic_lr": -1e-4}, "rl.train.critic_lr"),
    (TrainConfig, {"clip_eps_high": 0.0}, "rl.train.clip_eps_high"),
    (TrainConfig, {"lr": math.nan}, "rl.train.lr"),
    (TrainConfig, {"rollout": {"tool_timeout_s": 0.0}}, "rl.train.rollout.tool_timeout_s"),
    (SFTConfig, {"max_steps": 0}, "sft.max_steps"),
    (SFTConfig, {"epochs": math.inf}, "sft.epochs"),
    (PretrainConfig, {"threads": 0}, "pretrain.threads"),
    (PretrainConfig, {"world": {"n_entitiez": 3}}, "pretrain.world.n_entitiez"),
])
def test_bounds_name_the_full_key(cls, values, key):
    prefix = key.rsplit(".", 1)[0].split(".")
    prefix = ".".join(prefix[:2] if cls is TrainConfig else prefix[:1])
    with pytest.raises(ConfigError) as err:
        build_config(cls, values, prefix)
    assert str(err.value).startswith(key), str(err.value)


def test_cross_field_errors_name_the_full_key():
    # A __post_init__ message that starts with a field name is joined to the prefix, so the
    # message names the key as a dotted path ("rl.train.advantage: ..."), not "rl.train: ...".
    with pytest.raises(ConfigError, match=r"^rl\.train\.advantage: ppo needs 'gae'"):
        build_config(TrainConfig, {"algorithm": "ppo", "advantage": "grpo"}, "rl.train")
