"""ParamsCheckHook: a parameter nobody reads, or a bad value in any stage a run will reach,
stops ``kedro run`` before its first node, naming the key."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tirl.config_hook import check_parameters, consumed_keys, runtime_param_names
from tirl.core.config import ConfigError
from tirl.pipeline_registry import register_pipelines

ROOT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))
STAGES = ("agent", "data_prep", "model_init", "sft", "rl", "evaluation", "experiments",
          "report", "inspect_rollouts", "inspect_rewards", "pretrain")


@pytest.fixture(scope="module")
def pipelines():
    from kedro.framework.project import configure_project

    configure_project("tirl")
    return register_pipelines()


@pytest.fixture(scope="module")
def params():
    """The parameters of ``kedro run --env=test``, read as Kedro reads them."""
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="test",
                               merge_strategy={"parameters": "soft"})
    return dict(loader["parameters"])


def _known(pipelines):
    return consumed_keys(pipelines.values()) | runtime_param_names(ROOT / "conf")


def test_every_parameter_file_key_is_read_by_a_pipeline(pipelines, params):
    assert set(STAGES) == set(params) and set(STAGES) <= consumed_keys(pipelines.values())
    assert "eval_model_path" in runtime_param_names(ROOT / "conf")  # catalog_evaluation.yml


@pytest.mark.parametrize("pipeline", ["compare", "vspo_ablation", "data_prep", "pretrain",
                                      "inspect_rewards", "report"])
def test_the_shipped_parameters_pass(pipelines, params, pipeline):
    check_parameters(params, pipelines[pipeline], _known(pipelines))


def test_a_top_level_typo_names_the_key_and_the_known_ones(pipelines, params):
    with pytest.raises(ConfigError) as err:
        check_parameters({**params, "vspo_updat": {"train": {"steps": 3}}},
                         pipelines["vspo_prs"], _known(pipelines))
    msg = str(err.value)
    assert msg.startswith("vspo_updat: unknown top-level parameter key") and "'rl'" in msg, msg


@pytest.mark.parametrize("path, value, key", [
    # reached only after data_prep, model_init and SFT have run: checked before any of them
    (("rl", "train", "stpes"), 3, "rl.train.stpes"),
    (("agent", "search", "topk"), 3, "agent.search.topk"),
    (("agent", "tool_timeout_s"), -1.0, "agent.tool_timeout_s"),
    (("evaluation", "judge", "name"), "rubrik", "evaluation.judge.name"),
    (("experiments", "overrides", "vspo_prz"), {}, "experiments.overrides.vspo_prz"),
    (("experiments", "overrides", "vspo_prs"), {"train": {"lr": 0.0}}, "rl.train.lr"),
])
def test_a_bad_value_anywhere_in_the_run_fails_before_the_first_node(pipelines, params, path,
                                                                      value, key):
    bad = copy.deepcopy(params)
    node = bad
    for part in path[:-1]:
        node[part] = dict(node.get(part) or {})
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_parameters(bad, pipelines["vspo_prs"], _known(pipelines))


def test_a_stage_the_run_does_not_reach_is_not_checked(pipelines, params):
    bad = {**params, "rl": {**params["rl"], "train": {"stpes": 3}}}
    check_parameters(bad, pipelines["data_prep"], _known(pipelines))  # no rl node: no error


def test_kedro_run_with_a_top_level_typo_stops_before_any_node(tmp_path):
    (tmp_path / "src").mkdir()
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"})
    proc = subprocess.run([KEDRO, "run", "--env=test", "--pipelines=data_prep",
                           "--nodes=load_sources", "--params=vspo_updat.train.steps=3"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "vspo_updat: unknown top-level parameter key" in out, out[-3000:]
    assert "Running node" not in out and "load_sources" not in out.split("vspo_updat")[0]
