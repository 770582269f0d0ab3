"""AgentConfig (``params:agent``): every search option and budget is checked when it is built."""

from __future__ import annotations

import inspect
import math

import pytest

from tirl.core.agent.env import AgentConfig, SearchConfig
from tirl.core.config import ConfigError, build_config
from tirl.core.tools.search import build_search_tool


def _agent(**values):
    return build_config(AgentConfig, values, "agent")


@pytest.mark.parametrize("search, match", [
    ({"kind": "bm25", "topk": 3}, r"^agent\.search\.topk: unknown key .*did you mean 'top_k'"),
    ({"kind": "bm52"}, r"^agent\.search\.kind: 'bm52' is not one of \['bm25', 'dense', 'remote'\]"),
    ({"top_k": 0}, r"^agent\.search\.top_k: 0 must be >= 1"),
    ({"top_k": "3"}, r"^agent\.search\.top_k: expected an integer"),
    ({"kind": "remote", "url": "http://x", "timeout_s": -1.0}, r"^agent\.search\.timeout_s"),
    ({"kind": "remote", "url": "http://x", "timeout_s": math.nan}, r"^agent\.search\.timeout_s"),
    ({"max_retries": -1}, r"^agent\.search\.max_retries"),
])
def test_bad_search_options_name_the_key(search, match):
    with pytest.raises(ConfigError, match=match):
        _agent(search=search)


@pytest.mark.parametrize("value", [-1.0, 0.0, 0, math.nan, math.inf, "30"])
def test_tool_timeout_must_be_a_finite_positive_number(value):
    with pytest.raises(ConfigError, match=r"^agent\.tool_timeout_s"):
        _agent(tool_timeout_s=value)


def test_tool_timeout_null_means_no_limit():
    assert _agent(tool_timeout_s=None).rollout_config().tool_timeout_s is None


def test_search_options_are_exactly_the_tool_builders():
    # SearchConfig is the checked form of build_search_tool's options: a new option of the
    # builder that is not declared here (or the reverse) would be refused or ignored.
    params = inspect.signature(build_search_tool).parameters
    options = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - {"tokenizer"}
    assert options == set(SearchConfig.__dataclass_fields__)
    defaults = SearchConfig()
    assert {n: params[n].default for n in options} == {n: getattr(defaults, n) for n in options}


def test_search_stays_a_plain_dict_of_the_given_keys():
    env = _agent(search={"kind": "bm25", "top_k": 2})
    assert env.search == {"kind": "bm25", "top_k": 2} and env.top_k == 2
