"""Built-in tokenizer + model round trip through save_pretrained and Auto* loaders."""

from __future__ import annotations

import pytest
import torch

from tirl.core.agent import protocol as P
from tirl.core.config import ConfigError, build_config
from tirl.core.modeling.factory import ModelConfig, build_model, ensure_protocol_tokens, load_model


def test_default_model_is_about_5m_params(tiny_tokenizer):
    # Vocab 8000 as in the built-in default; params scale with vocab * d_model.
    class Vocab8k:
        pad_token_id, eos_token = 0, P.IM_END

        def __len__(self):
            return 8000

        def convert_tokens_to_ids(self, t):
            return {P.ENDOFTEXT: 0, P.IM_START: 1, P.IM_END: 2}[t]

        unk_token_id = None

    model = build_model(Vocab8k(), ModelConfig())
    n = sum(p.numel() for p in model.parameters())
    assert 4e6 < n < 7e6
    assert model.config.intermediate_size == 704  # 8/3*256 = 682 -> next multiple of 64


def test_build_is_deterministic_and_does_not_touch_global_rng(tiny_tokenizer):
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, seed=3)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = build_model(tiny_tokenizer, cfg)
    after = torch.rand(1)
    b = build_model(tiny_tokenizer, cfg)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.d_model"):
        build_config(ModelConfig, {"d_model": "big"}, "model")
    with pytest.raises(ConfigError, match="divisible"):
        build_config(ModelConfig, {"d_model": 30, "n_heads": 4}, "model")


def test_round_trip_auto_load_and_generate(tiny_model_dir, tiny_tokenizer, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True).eval()
    chat = P.initial_messages("Who founded Kestrel Works?")
    ids = P.render(tok, chat, P.SEARCH_TOOL_SCHEMAS, add_generation_prompt=True)
    assert ids == P.render(tiny_tokenizer, chat, P.SEARCH_TOOL_SCHEMAS, add_generation_prompt=True)
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(model(x).logits, tiny_model(x).logits, atol=1e-5)
    out = model.generate(x, max_new_tokens=4, do_sample=False,
                         eos_token_id=None, min_new_tokens=4)
    assert out.shape == (1, len(ids) + 4)
    assert tok.convert_tokens_to_ids(P.IM_END) in model.generation_config.eos_token_id


def test_load_model_is_offline_by_default(tiny_model_dir, tmp_path):
    model, tok = load_model(str(tiny_model_dir), dtype="float32")
    assert tok.eos_token == P.IM_END and model.dtype == torch.float32
    with pytest.raises(OSError, match="allow_download"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ValueError, match="dtype"):
        load_model(str(tiny_model_dir), dtype="float8")


def test_ensure_protocol_tokens_adds_missing_tags_and_resizes(tiny_model_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model, _ = load_model(str(tiny_model_dir))
    # A tokenizer that lacks the tags (as a pretrained one would).
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.add_special_tokens([P.IM_END])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=P.IM_END)
    n_before = len(tok)
    added = ensure_protocol_tokens(tok, model)
    assert added == list(P.PROTOCOL_TAGS)
    assert len(tok) == n_before + len(P.PROTOCOL_TAGS)
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    assert all(len(tok.encode(t, add_special_tokens=False)) == 1 for t in P.PROTOCOL_TAGS)
    assert tok.chat_template == P.CHAT_TEMPLATE
    assert ensure_protocol_tokens(tok, model) == []


def test_capitalised_words_and_numbers_tokenise_the_same_after_space_or_tag(tiny_tokenizer):
    # The agent copies names from the question into a JSON query and from a passage into
    # <answer>: the copied tokens must be the same ids in both contexts.
    tok = tiny_tokenizer
    in_text = tok.encode("Where did Alice Marlow study in 1931?", add_special_tokens=False)
    in_json = tok.encode('{"query": "Alice Marlow"}', add_special_tokens=False)
    in_answer = tok.encode("<answer>Alice Marlow 1931</answer>", add_special_tokens=False)
    name = tok.encode("Alice Marlow", add_special_tokens=False)
    year = tok.encode("1931", add_special_tokens=False)

    def contains(seq, sub):
        return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))

    assert contains(in_text, name) and contains(in_json, name) and contains(in_answer, name)
    assert contains(in_text, year) and contains(in_answer, year)
    for text in ("Where did Alice  Marlow study?\n\n 1931", '{"query": "x"}', "a b C 1"):
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
