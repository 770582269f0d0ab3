"""The committed built-in base (models/builtin): it loads, and its model card tells the truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "models" / "builtin"

pytestmark = pytest.mark.skipif(not (BASE / "config.json").is_file(),
                                reason="models/builtin is not committed in this checkout")


def test_the_committed_base_loads_and_records_its_pretraining():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((BASE / "pretraining.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(BASE)
    tok = AutoTokenizer.from_pretrained(BASE)
    assert sum(p.numel() for p in model.parameters()) == record["parameters"]
    assert len(tok) == record["vocab"]
    assert (BASE / "model.safetensors").stat().st_size < 60e6
    lo, hi = record["world_seeds"]
    assert not any(lo <= s <= hi for s in record["reserved_seeds"])
    assert "Reading probe" in (BASE / "README.md").read_text()


@pytest.mark.slow
def test_the_cards_probe_figures_match_a_fresh_probe_run():
    """Greedy decoding on CPU is deterministic up to the float order of the matrix products
    (thread count): allow one question's difference per figure."""
    from tirl.core.agent.env import AgentConfig, Sampling
    from tirl.core.config import build_config
    from tirl.core.eval.probe import reading_probe
    from tirl.core.modeling.factory import load_model

    import yaml

    record = json.loads((BASE / "pretraining.json").read_text())
    card = record["probe"]["per_seed"][0]
    agent = build_config(AgentConfig, yaml.safe_load(
        (ROOT / "conf/base/parameters_agent.yml").read_text())["agent"], "agent")
    model, tok = load_model(str(BASE))
    fresh = reading_probe(model, tok, world_seed=card["world_seed"], n=card["n"],
                          rollout=agent.rollout_overrides(Sampling(temperature=0.0)),
                          search=dict(agent.search))
    for key in ("query_match", "em_given_gold_search", "em"):
        assert abs(fresh[key] - card[key]) <= 1.0 / card["n"] + 1e-9, key
