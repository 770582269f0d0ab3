"""model_init on an in-memory catalog: builtin path and pretrained-path path."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from tirl.core.agent import protocol as P
from tirl.core.config import ConfigError
from tirl.pipelines.model_init import create_pipeline
from tirl.pipelines.model_init.nodes import init_model

TINY_PARAMS = {"model": "scratch", "vocab_size": 400,
               "architecture": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 2048}}


@pytest.fixture
def tables(tiny_tables):
    return tiny_tables


def test_pipeline_builds_builtin_model(tables, tiny_gold):
    corpus, questions, gold = tables
    catalog = DataCatalog({"corpus": MemoryDataset(corpus), "questions": MemoryDataset(questions),
                           "gold_trajectories": MemoryDataset(gold),
                           "params:model_init": MemoryDataset(TINY_PARAMS),
                           "base_model": MemoryDataset(copy_mode="assign")})
    SequentialRunner().run(create_pipeline(), catalog)
    out = catalog.load("base_model")
    tok, model = out["tokenizer"], out["model"]
    gold = tiny_gold
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tok)
    assert all(len(tok.encode(t, add_special_tokens=False)) == 1 for t in P.PROTOCOL_TAGS)
    # Trained on the gold chats: the template's fixed text compresses to few tokens.
    ids = P.render(tok, gold[0], P.SEARCH_TOOL_SCHEMAS)
    assert len(ids) < len(P.render_text(tok, gold[0], P.SEARCH_TOOL_SCHEMAS)) / 2


def test_bad_gold_row_is_named(tables):
    corpus, questions, gold = tables
    gold.loc[1, "messages"] = "{not json"
    with pytest.raises(ValueError, match="id='g1'"):
        init_model(corpus, questions, gold, TINY_PARAMS)


def test_bad_param_is_named(tables):
    with pytest.raises(ConfigError, match="model_init.architecture.n_layers"):
        init_model(*tables, {"architecture": {"n_layers": 0}})


def test_pretrained_path_loads_from_disk(tables, tiny_model_dir):
    out = init_model(*tables, {"model": str(tiny_model_dir)})
    assert out["model"].config.hidden_size == 64
    assert out["tokenizer"].eos_token == P.IM_END


def test_gguf_path_goes_through_the_node(tables, tiny_tokenizer, tmp_path):
    pytest.importorskip("gguf", reason="the gguf package (smol extra) writes GGUF files")
    from gguf_writer import write_tiny_gguf

    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, tiny_tokenizer, n_vocab=len(tiny_tokenizer) - len(P.PROTOCOL_TAGS))
    out = init_model(*tables, {"model": str(path), "gguf_cache_dir": str(tmp_path / "cache")})
    assert out["model"].config.hidden_size == 32 and out["tokenizer"].chat_template == P.CHAT_TEMPLATE
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_builtin_loads_the_committed_base_directory(tables, tiny_model_dir):
    out = init_model(*tables, {"model": "builtin", "builtin_dir": str(tiny_model_dir)})
    assert out["model"].config.hidden_size == 64 and out["tokenizer"].eos_token == P.IM_END


def test_builtin_without_its_directory_says_how_to_rebuild_it(tables, tmp_path):
    with pytest.raises(FileNotFoundError, match="model_init.builtin_dir.*dvc repro pretrain"):
        init_model(*tables, {"model": "builtin", "builtin_dir": str(tmp_path / "missing")})


def test_default_builtin_dir_is_the_pretrain_stages_output():
    import yaml
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    init = yaml.safe_load((root / "conf/base/parameters_model_init.yml").read_text())["model_init"]
    catalog = yaml.safe_load((root / "conf/base/catalog_pretrain.yml").read_text())
    assert init["model"] == "builtin" and init["builtin_dir"] == catalog["builtin_base"]["path"]
