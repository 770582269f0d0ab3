"""Every registered name is reachable through a TrainConfig key, and that key is what runs."""

from __future__ import annotations

import pytest
from toy_rl import run_toy, toy_config

from tirl.core.rl import advantages, kl, losses
from tirl.core.rl.config import AGGREGATIONS, ADVANTAGES, KL_ESTIMATORS, POLICY_LOSS_NAMES

TABLES = {"advantage": advantages.ADVANTAGE_ESTIMATORS, "policy_loss": losses.POLICY_LOSSES,
          "kl_estimator": kl.KL_ESTIMATORS, "loss_aggregation": losses.LOSS_AGGREGATIONS}


def _options(key: str, name: str) -> dict:
    """The config that selects registered ``name`` for ``key`` (with what it needs)."""
    if key == "advantage":
        return {"advantage": name, "algorithm": "ppo" if name == "gae" else "vspo"}
    if key == "policy_loss":
        return {"policy_loss": name, "algorithm": "cispo" if name == "cispo" else "vspo"}
    return {key: name}


CASES = [(key, name) for key, table in TABLES.items() for name in table]


def test_the_config_choices_are_the_registries():
    assert set(ADVANTAGES) - {"auto"} == set(advantages.ADVANTAGE_ESTIMATORS)
    assert set(POLICY_LOSS_NAMES) - {"auto"} == set(losses.POLICY_LOSSES)
    assert set(KL_ESTIMATORS) == set(kl.KL_ESTIMATORS)
    assert set(AGGREGATIONS) == set(losses.LOSS_AGGREGATIONS)


@pytest.mark.parametrize("key, name", CASES, ids=[f"{k}={n}" for k, n in CASES])
def test_each_registered_name_runs_when_its_key_names_it(key, name, monkeypatch):
    table, calls = TABLES[key], []
    fn = table[name]

    def spy(*args, **kwargs):
        calls.append(name)
        return fn(*args, **kwargs)

    monkeypatch.setitem(table, name, spy)
    others = {n: table[n] for n in table if n != name}
    for other, other_fn in others.items():  # the others must not run in its place
        monkeypatch.setitem(table, other, lambda *a, _o=other, _f=other_fn, **k: (
            calls.append(_o), _f(*a, **k))[1])
    run_toy(toy_config(steps=2, ppo_epochs=1, grad_accum=1, **_options(key, name)),
            n_questions=4)
    assert name in calls
    # gae's PPO also aggregates its value loss by token mean; otherwise only the named one runs
    assert set(calls) == {name} or key == "loss_aggregation" and set(calls) <= {name, "token_mean"}
