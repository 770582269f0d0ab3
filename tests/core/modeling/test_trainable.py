"""Training only the top decoder layers (tirl.core.modeling.trainable), in SFT and in RL."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tirl.core.agent import protocol as P
from tirl.core.config import build_config
from tirl.core.modeling.factory import ModelConfig, build_model
from tirl.core.modeling.trainable import decoder_layers, set_trainable
from tirl.core.rl.config import TrainConfig, make_reward
from tirl.core.rl.loop import train
from tirl.core.sft.config import SFTConfig
from tirl.core.sft.loop import train_sft


@pytest.fixture
def four_layers(tiny_tokenizer):
    return build_model(tiny_tokenizer, ModelConfig(d_model=64, n_layers=4, n_heads=4, max_len=2048))


def _changed(before: torch.nn.Module, after: torch.nn.Module) -> set[str]:
    old = dict(before.named_parameters())
    return {n for n, p in after.named_parameters() if not torch.equal(p, old[n])}


def test_only_the_top_layers_and_the_final_norm_train(four_layers):
    counts = set_trainable(four_layers, 2)
    trainable = {n for n, p in four_layers.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.2.", "model.layers.3.", "model.norm."))
                             for n in trainable)
    assert any(n.startswith("model.layers.2.") for n in trainable)
    assert "model.norm.weight" in trainable
    assert counts["trainable"] == sum(p.numel() for p in four_layers.parameters() if p.requires_grad)
    assert counts["total"] == sum(p.numel() for p in four_layers.parameters())
    # Autograd stops at the lowest trainable layer: the rest get no gradient at all.
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    four_layers(input_ids=ids, labels=ids).loss.backward()
    for name, p in four_layers.named_parameters():
        assert (p.grad is not None) == (name in trainable), name


def test_none_leaves_requires_grad_as_it_is(four_layers):
    four_layers.model.layers[0].requires_grad_(False)
    counts = set_trainable(four_layers, None)
    assert not any(p.requires_grad for p in four_layers.model.layers[0].parameters())
    assert counts["trainable"] < counts["total"]


@pytest.mark.parametrize("n", [0, 5])
def test_a_count_outside_the_layers_is_refused(four_layers, n):
    with pytest.raises(ValueError, match=r"train_top_layers: .* 4 decoder layers"):
        set_trainable(four_layers, n)


def test_a_model_without_a_layer_list_is_refused():
    with pytest.raises(ValueError, match="no decoder layer list"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_sft_updates_only_the_top_layers(four_layers, tiny_tokenizer, tiny_gold):
    before = copy.deepcopy(four_layers)
    cfg = SFTConfig(max_steps=2, batch_size=2, lr=1e-2, probe_size=0, progress_bar=False,
                    train_top_layers=1)
    model, summary = train_sft(four_layers, tiny_tokenizer, tiny_gold, cfg,
                               tools=P.SEARCH_TOOL_SCHEMAS)
    changed = _changed(before, model)
    assert changed and all(n.startswith(("model.layers.3.", "model.norm.")) for n in changed)
    assert summary["trainable_params"] == sum(
        p.numel() for n, p in model.named_parameters() if n.startswith(("model.layers.3.", "model.norm.")))


def test_rl_updates_only_the_top_layers(four_layers, tiny_tokenizer):
    import pandas as pd

    from tirl.core.tools.search import build_search_tool

    corpus = pd.DataFrame({"id": ["1"], "title": ["Alice Marlow"],
                           "text": ["Alice Marlow was born in Norvale."]})
    questions = [{"id": f"q{i}", "question": "Where was Alice Marlow born?", "answers": ["Norvale"],
                  "split": "train", "task": "short", "qtype": "single_hop", "facts": [],
                  "source": "world"} for i in range(2)]
    cfg = build_config(TrainConfig, {
        "lr": 1e-2, "steps": 1, "batch_prompts": 2, "group_size": 2, "kl_beta": 0.0,
        "train_top_layers": 2, "vspo": {"selection": "none"},
        "rollout": {"max_turns": 1, "max_new_tokens_per_turn": 8, "max_total_tokens": 2048}})
    before = copy.deepcopy(four_layers)
    policy, hist = train(policy=four_layers, tokenizer=tiny_tokenizer, questions=questions,
                         tools=[build_search_tool(corpus, top_k=1)], config=cfg,
                         reward_fn=make_reward(cfg))
    assert math.isfinite(hist[0]["reward/mean"])
    # The loop froze the lower layers before building its optimiser...
    assert not any(p.requires_grad for p in policy.model.layers[1].parameters())
    assert all(p.requires_grad for p in policy.model.layers[2].parameters())
    # ...so whatever the step changed (a toy step may change nothing) is in the top layers.
    changed = _changed(before, policy)
    assert all(n.startswith(("model.layers.2.", "model.layers.3.", "model.norm.")) for n in changed)
