"""Generation backends: the hf sampling loop against transformers' own generate and forward."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tirl.core.agent.backends import BACKENDS, make_backend
from tirl.core.agent.generation import GenOut
from tirl.core.agent.hf_backend import sample_next


@pytest.fixture
def prompts(tiny_tokenizer):
    texts = ["Where was Alice Marlow born?", "Doc 1 (Title: Ostmark) The capital", "Velden"]
    return [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _forward_logprobs(model, prompt, new):
    with torch.no_grad():
        logits = model(torch.tensor([list(prompt) + list(new)])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return [logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(new)]


def test_greedy_matches_transformers_generate(tiny_model, tiny_tokenizer, prompts):
    """Left padding, position ids and the shrinking cache must not change greedy tokens."""
    backend = make_backend("hf", tiny_model, tiny_tokenizer)
    outs = backend.generate(prompts, max_new_tokens=[9, 5, 12], temperature=0.0)
    for prompt, out, n in zip(prompts, outs, [9, 5, 12]):
        ref = tiny_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                  max_new_tokens=n, do_sample=False, eos_token_id=None)
        assert out.token_ids == ref[0, len(prompt):].tolist()
        assert out.stop_reason == "length" and len(out.logprobs) == n


def test_sampled_logprobs_match_a_forward_pass(tiny_model, tiny_tokenizer, prompts):
    backend = make_backend("hf", tiny_model, tiny_tokenizer)
    for out, prompt in zip(backend.generate(prompts, max_new_tokens=16, seed=1), prompts):
        ref = _forward_logprobs(tiny_model, prompt, out.token_ids)
        assert out.logprobs == pytest.approx(ref, abs=1e-4)


def test_temperature_scales_recorded_logprobs(tiny_model, tiny_tokenizer, prompts):
    backend = make_backend("hf", tiny_model, tiny_tokenizer)
    out = backend.generate(prompts[:1], max_new_tokens=6, temperature=0.5, seed=3)[0]
    with torch.no_grad():
        logits = tiny_model(torch.tensor([prompts[0] + out.token_ids])).logits[0].float()
    logp = torch.log_softmax(logits / 0.5, -1)
    ref = [logp[len(prompts[0]) - 1 + k, t].item() for k, t in enumerate(out.token_ids)]
    assert out.logprobs == pytest.approx(ref, abs=1e-4)


def test_same_seed_same_tokens_other_seed_differs(tiny_model, tiny_tokenizer, prompts):
    backend = make_backend("hf", tiny_model, tiny_tokenizer)
    a = backend.generate(prompts, max_new_tokens=20, seed=7)
    b = backend.generate(prompts, max_new_tokens=20, seed=7)
    c = backend.generate(prompts, max_new_tokens=20, seed=8)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert [o.token_ids for o in a] != [o.token_ids for o in c]


def test_stop_tokens_end_rows_independently(tiny_model, tiny_tokenizer, prompts):
    backend = make_backend("hf", tiny_model, tiny_tokenizer)
    free = backend.generate(prompts, max_new_tokens=10, temperature=0.0)
    # A token of the first row's greedy output becomes a stop token: each row stops right
    # after its first occurrence, the others keep going to their budget.
    stop = free[0].token_ids[2]
    outs = backend.generate(prompts, max_new_tokens=10, temperature=0.0, stop_token_ids={stop})
    assert outs[0].stop_reason == "stop_token" and len(outs[0].token_ids) <= 3
    for out, ref in zip(outs, free):
        hit = stop in ref.token_ids
        cut = ref.token_ids.index(stop) + 1 if hit else len(ref.token_ids)
        assert out.token_ids == ref.token_ids[:cut]
        assert out.stop_reason == ("stop_token" if hit else "length")


def test_stop_strings(tiny_model, tiny_tokenizer, prompts):
    backend = make_backend("hf", tiny_model, tiny_tokenizer)
    free = backend.generate(prompts[:1], max_new_tokens=12, temperature=0.0)[0]
    target = tiny_tokenizer.decode(free.token_ids[3:5])
    out = backend.generate(prompts[:1], max_new_tokens=12, temperature=0.0, stop_strings=[target])[0]
    assert target in tiny_tokenizer.decode(out.token_ids)
    assert len(out.token_ids) <= 5 and out.stop_reason == "stop_string"


def test_micro_batches_give_the_same_greedy_result(tiny_model, tiny_tokenizer, prompts):
    whole = make_backend("hf", tiny_model, tiny_tokenizer).generate(prompts, max_new_tokens=8, temperature=0.0)
    split = make_backend("hf", tiny_model, tiny_tokenizer, max_batch=1).generate(
        prompts, max_new_tokens=8, temperature=0.0)
    assert [o.token_ids for o in whole] == [o.token_ids for o in split]


def test_zero_budget_gives_empty_output(tiny_model, tiny_tokenizer, prompts):
    outs = make_backend("hf", tiny_model, tiny_tokenizer).generate(prompts, max_new_tokens=[0, 2, 0])
    assert [len(o.token_ids) for o in outs] == [0, 2, 0]


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    seen = {sample_next(logits=logits, temperature=1.0, top_p=0.7, generator=gen)[0].item()
            for _ in range(200)}
    assert seen == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3
    tok, lp = sample_next(logits=logits, temperature=1.0, top_p=0.1, generator=gen)
    assert tok.item() == 0 and lp.item() == pytest.approx(torch.log(torch.tensor(0.5)).item())


def test_unknown_backend_lists_known():
    with pytest.raises(ValueError, match="hf"):
        make_backend("tgi", None)
    assert set(BACKENDS) == {"hf", "vllm"}


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                    reason="vLLM (GPU extra) not installed")
def test_vllm_backend_returns_logprobs(tiny_model_dir, tiny_tokenizer, prompts):
    backend = make_backend("vllm", str(tiny_model_dir), tiny_tokenizer, gpu_memory_utilization=0.2,
                           enforce_eager=True)
    outs = backend.generate(prompts, max_new_tokens=8, seed=0)
    assert all(isinstance(o, GenOut) and len(o.token_ids) == len(o.logprobs) for o in outs)


def test_vllm_absent_gives_a_clear_error(tiny_model):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    with pytest.raises(ImportError, match="vllm"):
        make_backend("vllm", "some/path")


def test_kv_kept_between_calls_gives_the_same_result(tiny_model, tiny_tokenizer, prompts):
    """Second turn with the kept KV (only new tokens prefilled) == a full prefill, for rows
    that extend their kept tokens; a row whose prompt changed falls back to a full prefill."""
    reuse = make_backend("hf", tiny_model, tiny_tokenizer)
    fresh = make_backend("hf", tiny_model, tiny_tokenizer, reuse_kv=False)
    first = reuse.generate(prompts, max_new_tokens=[5, 8, 3], temperature=0.0, cache_ids=["a", "b", "c"])
    assert sorted(reuse._kept) == ["a", "b", "c"]
    assert len(reuse._kept["b"][0]) == len(prompts[1]) + 8 - 1  # the last sampled token is not fed
    extra = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in (" Doc 1", " Velden", "x")]
    second = [list(p) + o.token_ids + e for p, o, e in zip(prompts, first, extra)]
    second[2] = [7] + second[2][1:]  # no longer extends what was kept for "c"
    a = reuse.generate(second, max_new_tokens=10, temperature=0.0, cache_ids=["a", "b", "c"])
    b = fresh.generate(second, max_new_tokens=10, temperature=0.0)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    for x, y, p in zip(a, b, second):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
        assert x.logprobs == pytest.approx(_forward_logprobs(tiny_model, p, x.token_ids), abs=1e-4)
    reuse.forget()
    assert reuse._kept == {}


def test_kv_reuse_with_sampling_matches_forward(tiny_model, tiny_tokenizer, prompts):
    backend = make_backend("hf", tiny_model, tiny_tokenizer)
    first = backend.generate(prompts, max_new_tokens=6, seed=2, cache_ids=[0, 1, 2])
    second = [list(p) + o.token_ids + [5, 6] for p, o in zip(prompts, first)]
    for out, p in zip(backend.generate(second, max_new_tokens=6, seed=3, cache_ids=[0, 1, 2]), second):
        assert out.logprobs == pytest.approx(_forward_logprobs(tiny_model, p, out.token_ids), abs=1e-4)
