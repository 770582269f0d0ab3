"""Write a tiny Llama model and its byte-level BPE tokenizer as a GGUF file (tests only).

The layout is llama.cpp's (``convert_hf_to_gguf.py``): tensors ``token_embd``,
``blk.N.attn_q`` ..., q/k rows permuted for its rotary layout (transformers undoes the permute
on load), metadata under ``llama.*`` and ``tokenizer.ggml.*``. Embeddings are tied (no
``output.weight``), as in SmolLM2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (interleaved rotary halves)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_fields(tokenizer: Any, n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens (ids below ``n_vocab``), their GGUF types and the BPE merges."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    tokens = [by_id[i] for i in range(n_vocab)]
    special = {t["content"] for t in spec["added_tokens"] if t["special"]}
    types = [int(gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL) for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return tokens, types, merges


def write_tiny_gguf(path: Path, tokenizer: Any, *, n_vocab: int, d_model: int = 32, n_layers: int = 2,
                    n_heads: int = 4, n_kv_heads: int = 2, seed: int = 0, f16: bool = False) -> Any:
    """Write a random tiny Llama (vocabulary: ``tokenizer``'s first ``n_vocab`` ids) to ``path``
    as GGUF (float32 tensors, or float16 with ``f16``); returns the HF model it was made from."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tirl.core.agent import protocol as P

    config = LlamaConfig(vocab_size=n_vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads,
                         num_key_value_heads=n_kv_heads, max_position_embeddings=2048,
                         rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(d_model)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_rope_dimension_count(d_model // n_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(n_vocab)
    tokens, types, merges = _tokenizer_fields(tokenizer, n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokenizer.convert_tokens_to_ids(P.IM_END))
    w.add_bos_token_id(tokenizer.convert_tokens_to_ids(P.IM_START))
    w.add_add_bos_token(False)
    for name, array in _gguf_tensors(model, n_heads, n_kv_heads):
        w.add_tensor(name, array.astype(np.float16 if f16 and array.ndim == 2 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


def _gguf_tensors(model: Any, n_heads: int, n_kv_heads: int):
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    yield "token_embd.weight", sd["model.embed_tokens.weight"]
    for i in range(model.config.num_hidden_layers):
        p = f"model.layers.{i}."
        yield f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"]
        yield f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], n_heads)
        yield f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], n_kv_heads)
        yield f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"]
        yield f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"]
        yield f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"]
        yield f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"]
        yield f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"]
        yield f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"]
    yield "output_norm.weight", sd["model.norm.weight"]
