"""TrainConfig: a bad value fails before any work, with a message naming the key."""

from __future__ import annotations

import pytest

from tirl.core.config import ConfigError, build_config
from tirl.core.rl.config import ALGORITHMS, TrainConfig


@pytest.mark.parametrize("values, key", [
    ({"algorithm": "vpso"}, "algorithm"),
    ({"advantage": "gea"}, "advantage"),
    ({"policy_loss": "ppo"}, "policy_loss"),
    ({"kl_estimator": "k9"}, "kl_estimator"),
    ({"precision": "fp16"}, "precision"),
    ({"algorithm": "ppo", "advantage": "grpo"}, "advantage"),
    ({"algorithm": "vspo", "advantage": "gae"}, "advantage"),
    ({"algorithm": "cispo", "policy_loss": "ppo_clip"}, "policy_loss"),
    ({"algorithm": "grpo", "group_size": 1}, "group_size"),
    ({"batch_prompts": 3, "group_size": 5, "minibatch_size": 4}, "minibatch_size"),
    ({"minibatch_size": 10, "grad_accum": 4}, "grad_accum"),
    ({"vspo": {"selection": "valu"}}, "vspo.selection"),
    ({"rollout": {"temperature": -1.0}}, "rollout.temperature"),
    ({"lr": 0.0}, "lr"),
    ({"stepz": 3}, "stepz"),
])
def test_bad_config_names_the_key(values, key):
    with pytest.raises(ConfigError) as err:
        build_config(TrainConfig, values, "rl")
    assert key in str(err.value)


def test_unknown_algorithm_lists_known_values():
    with pytest.raises(ConfigError) as err:
        build_config(TrainConfig, {"algorithm": "dpo"})
    assert all(a in str(err.value) for a in ALGORITHMS)


def test_group_size_one_is_fine_for_ppo():
    cfg = build_config(TrainConfig, {"algorithm": "ppo", "group_size": 1, "batch_prompts": 4})
    assert cfg.resolved_advantage == "gae"
