"""A judge's options are checked against that judge when the config is built, so switching
``judge.name`` never hands one judge's options to another (or fails only after the rollouts)."""

from __future__ import annotations

import pytest

from tirl.core.config import ConfigError, build_config
from tirl.core.rewards.judge_options import judge_options
from tirl.core.rewards.judges import JUDGES
from tirl.core.rewards.prs import JudgeSpec
from tirl.core.rl.config import TrainConfig
from tirl.pipelines.evaluation.nodes import EvaluationStageConfig
from tirl.pipelines.rl.nodes import RLStageConfig


@pytest.mark.parametrize("name", sorted(JUDGES))
def test_every_registered_judge_declares_its_options(name):
    options = judge_options(name)
    assert options is not None and len(options) > 0


def test_rubric_options_are_its_config_fields():
    assert "threshold" in judge_options("rubric")
    assert "threshold" not in judge_options("openai")
    assert {"base_url", "model", "credentials"} <= set(judge_options("openai"))


@pytest.mark.parametrize("build", [
    lambda j: build_config(TrainConfig, {"judge": j}, "rl.train"),
    lambda j: build_config(RLStageConfig, {"validation": {"judge": j}}, "rl"),
    lambda j: build_config(EvaluationStageConfig, {"judge": j}, "evaluation"),
])
def test_switching_judge_rejects_the_other_judges_options(build):
    # conf says {name: rubric, options: {threshold: 0.6}}; --params ...judge.name=openai
    switched = {"name": "openai", "options": {"threshold": 0.6, "base_url": "http://x",
                                               "model": "m"}}
    with pytest.raises(ConfigError) as err:
        build(switched)
    msg = str(err.value)
    assert "judge.options.threshold" in msg and "'openai'" in msg and "rubric" in msg, msg


@pytest.mark.parametrize("judge, match", [
    ({"name": "rubrik"}, r"judge\.name: 'rubrik' is not one of \['openai', 'rubric', 'transformers'\]"),
    ({"name": "rubric", "options": {"treshold": 0.5}}, r"judge\.options\.treshold.*'threshold'"),
    # the flat form ({name, threshold}) is not a second shape of the same setting
    ({"name": "rubric", "threshold": 0.5}, r"judge\.threshold: unknown key"),
])
def test_bad_judge_config_names_the_key(judge, match):
    for cls, prefix in ((EvaluationStageConfig, "evaluation"), (RLStageConfig, "rl")):
        values = {"judge": judge} if cls is EvaluationStageConfig else {"validation": {"judge": judge}}
        with pytest.raises(ConfigError, match=match):
            build_config(cls, values, prefix)


def test_a_judges_own_options_pass():
    spec = build_config(JudgeSpec, {"name": "openai", "options": {"base_url": "http://x",
                                                                 "model": "m", "timeout_s": 5}})
    assert spec.options["timeout_s"] == 5
    assert build_config(JudgeSpec, {"name": "rubric", "options": {"threshold": 0.7}}).name == "rubric"


def test_a_rubric_option_value_is_checked_with_the_config():
    with pytest.raises(ConfigError, match=r"^rl\.train\.judge\.options\.threshold"):
        build_config(TrainConfig, {"judge": {"name": "rubric", "options": {"threshold": "hi"}}},
                     "rl.train")
