"""The pretraining loop: seeds kept off the benchmark, validation, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tirl.core.config import ConfigError, build_config
from tirl.core.pretrain import loop as L
from tirl.core.pretrain.config import PretrainConfig, pretrain_seeds

TINY = {
    "world": {"n_persons": 30, "n_companies": 10, "n_universities": 4, "n_cities": 8, "n_countries": 3},
    "questions": {"single_hop": 6, "bridge": 3, "comparison": 3},  # 12 chats: 3 batches a world
    "worlds_per_block": 1, "tokenizer_worlds": 1, "vocab_size": 600,
    "architecture": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 2048},
    "phases": [{"steps": 3}, {"steps": 3, "context_weight": 0.0}],
    "batch_size": 4, "max_len": 2048, "warmup_steps": 1, "val_chats": 4, "eval_every": 3, "log_every": 1,
    "checkpoint_every": 2,
}


def tiny(path, **kw) -> PretrainConfig:
    return build_config(PretrainConfig, {**TINY, "checkpoint_dir": str(path), **kw}, "pretrain")


def test_pretrain_seeds_refuse_reserved_and_validation_seeds():
    assert list(pretrain_seeds(10, 3, [0, 1])) == [10, 11, 12]
    with pytest.raises(ValueError, match="reserved seed"):
        pretrain_seeds(0, 5, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="validation world"):
        pretrain_seeds(10, 5, [0], val_seed=12)
    with pytest.raises(ConfigError, match="val_seed"):
        build_config(PretrainConfig, {"val_seed": 0, "reserved_seeds": [0, 1, 2, 3]}, "pretrain")
    with pytest.raises(ConfigError, match="probe.world_seeds"):
        build_config(PretrainConfig, {"probe": {"world_seeds": [7]}}, "pretrain")


def test_the_stream_stops_before_a_reserved_world(tmp_path, monkeypatch):
    generated = []
    real = L.world_config

    def spy(seed, *args, **kwargs):
        generated.append(seed)
        return real(seed, *args, **kwargs)

    monkeypatch.setattr(L, "world_config", spy)
    with pytest.raises(ValueError, match="reserved"):
        L.pretrain(tiny(tmp_path / "a", first_seed=0))
    assert 0 not in generated
    # Six steps need a second world; it is reserved, so the run stops instead of reading it.
    with pytest.raises(ValueError, match="reserved"):
        L.pretrain(tiny(tmp_path / "b", reserved_seeds=[0, 1, 2, 3, 1_000_001]))
    assert 1_000_000 in generated and 1_000_001 not in generated


def test_the_default_config_reserves_the_benchmark_and_probe_worlds():
    conf = Path(__file__).resolve().parents[3] / "conf" / "base"
    cfg = build_config(PretrainConfig, yaml.safe_load((conf / "parameters_pretrain.yml").read_text())["pretrain"],
                       "pretrain")
    benchmark = yaml.safe_load((conf / "parameters_data_prep.yml").read_text())["data_prep"]["world"]["seed"]
    assert benchmark in cfg.reserved_seeds
    assert cfg.first_seed > max(cfg.reserved_seeds)


def test_pretrain_validates_and_a_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    model, _, summary = L.pretrain(tiny(tmp_path / "whole"))
    assert summary["steps"] == 6 and summary["tokens"] > 0
    assert summary["world_seeds"] == [1_000_000, 1_000_001]
    assert [v["step"] for v in summary["val"]] == [3, 6]
    assert {"answer_em", "first_query_em"} <= set(summary["val"][-1])

    real_step = L._train_step

    def dies_at_step_5(model, optimizer, config, state, *args):
        if state["step"] == 5:
            raise KeyboardInterrupt("killed")
        return real_step(model, optimizer, config, state, *args)

    monkeypatch.setattr(L, "_train_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        L.pretrain(tiny(tmp_path / "killed"))
    monkeypatch.setattr(L, "_train_step", real_step)
    resumed, _, summary_b = L.pretrain(tiny(tmp_path / "killed"))
    assert summary_b["steps"] == 6 and summary_b["tokens"] == summary["tokens"]
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def _publish(model, tokenizer, summary, path):
    """A finished base directory, as the pretrain stage's builtin_base writes it."""
    from tirl.core.pretrain.card import card_files, pretraining_record

    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # The summary's own recipe record, as the pretrain stage writes it.
    for name, text in card_files(pretraining_record(summary, {})).items():
        (path / name).write_text(text)


def test_a_finished_base_continued_at_a_restart_equals_the_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    restart = {"steps": 3, "context_weight": 0.0, "restart": True, "lr": 5e-3, "warmup_steps": 1}
    # The first cycle ends mid-world (2 of its 3 batches): the restart starts a fresh world.
    whole, _, summary = L.pretrain(tiny(tmp_path / "whole", phases=[{"steps": 2}, restart]))
    cfg_a = tiny(tmp_path / "a", phases=[{"steps": 2}])
    first, tokenizer, summary_a = L.pretrain(cfg_a)
    _publish(first, tokenizer, summary_a, tmp_path / "base")
    continued, _, summary_b = L.pretrain(tiny(tmp_path / "b", phases=[{"steps": 2}, restart],
                                              continue_from=str(tmp_path / "base")))
    assert summary_b["steps"] == 5 and summary_b["tokens"] == summary["tokens"]
    assert summary_b["world_seeds"] == summary["world_seeds"] == [1_000_000, 1_000_001]
    for a, b in zip(whole.state_dict().values(), continued.state_dict().values()):
        assert torch.equal(a, b)
    # The restart re-warms to its own peak: lr at its first step is lr / warmup_steps.
    history = {h["step"]: h["lr"] for h in summary["history"]}
    assert history[3] == pytest.approx(5e-3)


def test_continue_from_refuses_a_base_of_another_recipe_or_one_that_ends_off_a_restart(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny(tmp_path / "a", phases=[{"steps": 2}])
    model, tokenizer, summary = L.pretrain(cfg)
    _publish(model, tokenizer, summary, tmp_path / "base")
    restart = {"steps": 1, "restart": True}
    with pytest.raises(ValueError, match=r"another recipe \(differs in \['lr'\]\)"):
        L.pretrain(tiny(tmp_path / "b", lr=1e-3, phases=[{"steps": 2}, restart],
                        continue_from=str(tmp_path / "base")))
    # The search settings are part of the recipe: the gold chats were searched with them.
    assert summary["config"]["top_k"] == 3 and summary["config"]["max_passage_tokens"] is None
    with pytest.raises(ValueError, match=r"another recipe \(differs in \['top_k'\]\)"):
        L.pretrain(tiny(tmp_path / "g", phases=[{"steps": 2}, restart],
                        continue_from=str(tmp_path / "base")), top_k=2)
    with pytest.raises(ValueError, match="ended at step 2, where no phase with restart"):
        L.pretrain(tiny(tmp_path / "c", phases=[{"steps": 1}, {"steps": 2, "restart": True}],
                        continue_from=str(tmp_path / "base")))
    with pytest.raises(ValueError, match=r"another recipe \(differs in \['phases'\]\)"):
        L.pretrain(tiny(tmp_path / "f", phases=[{"steps": 1}, {"steps": 1}, restart],
                        continue_from=str(tmp_path / "base")))
    with pytest.raises(ValueError, match="pretraining.json does not exist"):
        L.pretrain(tiny(tmp_path / "d", phases=[{"steps": 2}, restart], continue_from=str(tmp_path)))
    with pytest.raises(ConfigError, match="restart: true"):
        tiny(tmp_path / "e", phases=[{"steps": 2, "lr": 1e-3}])
