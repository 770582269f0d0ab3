"""The ``hf`` generation backend (registered in :mod:`tirl.core.agent.backends`): any
transformers causal LM (CPU or GPU). A tight sampling loop with the KV cache kept for the
duration of one call in buffers sized for the whole call (no copy of the cache per generated
token); sequences that stop leave the batch (their rows are dropped from the cache once a
quarter of the batch has stopped), so finished trajectories cost little.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

from tirl.core.agent.generation import GenOut, new_token_budgets


def sample_next(*, logits: Any, temperature: float, top_p: float, generator: Any) -> tuple[Any, Any]:
    """Sample one token per row.

    logits: [B, V] float. Returns (tokens [B] long, logprobs [B] float) where logprobs are
    ``log_softmax(logits / temperature)`` at the sampled token (before top-p filtering).
    ``temperature == 0`` means greedy; its logprobs are those of the untempered logits.
    """
    import torch

    logits = logits.float()
    if temperature <= 0.0:
        logp = torch.log_softmax(logits, dim=-1)
        tokens = logp.argmax(dim=-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    probs = logp.exp()
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
        drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


@functools.cache
def _reserved_layer_class() -> type:
    """``DynamicLayer`` writing into a buffer reserved up front (built on first use so that
    importing this module does not import transformers)."""
    import torch
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        """transformers' ``DynamicLayer`` concatenates the whole cache with every new token,
        a copy that grows with the sequence and took a third of CPU rollout time. This one
        writes each step into a buffer of ``reserve`` positions (grown only if exceeded)
        and exposes ``keys``/``values`` as views of its filled part."""

        def __init__(self, reserve: int) -> None:
            super().__init__()
            self.reserve = reserve
            self._k = self._v = None
            self._len = 0

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self._len + key_states.shape[-2]
            if self._k is None or end > self._k.shape[-2]:
                shape = (*key_states.shape[:2], max(end, self.reserve), key_states.shape[-1])
                k, v = key_states.new_empty(shape), value_states.new_empty(shape)
                if self._len:
                    k[..., :self._len, :] = self.keys
                    v[..., :self._len, :] = self.values
                self._k, self._v = k, v
            self._k[..., self._len:end, :] = key_states
            self._v[..., self._len:end, :] = value_states
            self._len = end
            self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self._len:
                self._k, self._v = self._k[indices, ...], self._v[indices, ...]
                self.keys, self.values = self._k[..., :self._len, :], self._v[..., :self._len, :]

        def reset(self) -> None:
            self._k = self._v = None
            self._len = 0
            super().reset()

    return ReservedLayer


def _reserved_cache(config: Any, reserve: int) -> Any:
    """A ``DynamicCache`` whose full-attention layers reserve ``reserve`` positions."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layer_cls = _reserved_layer_class()
    cache = DynamicCache(config=config)
    cache.layers = [layer_cls(reserve) if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


class HFBackend:
    """Batched sampling with a transformers causal LM and its KV cache.

    Prompts are left-padded into micro-batches of at most ``max_batch`` rows (sorted by
    length so that padding stays small). Each step feeds one token per live row; rows that
    stop are removed from the batch and from the cache.

    Multi-turn reuse: when the caller passes ``cache_ids`` (one hashable per prompt, e.g. the
    trajectory), the KV of each row is kept when the row stops, and the next call whose prompt
    for that id *extends* the kept tokens prefills only the new tokens (the turn close and the
    observation) instead of the whole conversation. Ids absent from a call are forgotten, so
    memory holds at most the live trajectories. Turn it off with ``reuse_kv=False``.
    """

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any = None, *, max_batch: int = 256,
                 device: str | None = None, reuse_kv: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.reuse_kv = reuse_kv
        self.device = device or str(next(model.parameters()).device)
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        if pad is None:
            pad = getattr(model.config, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0
        # transformers 5.x renamed past_key_values -> cache; accept models of either vintage.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        #: cache id -> (token ids whose KV is kept, per-layer (keys, values) [H, T, D])
        self._kept: dict[Any, tuple[list[int], list[tuple[Any, Any]]]] = {}

    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int | Sequence[int],
                 stop_token_ids: set[int] | frozenset[int] = frozenset(),
                 stop_strings: Sequence[str] = (), temperature: float = 1.0, top_p: float = 1.0,
                 seed: int | None = None, cache_ids: Sequence[Any] | None = None) -> list[GenOut]:
        import torch

        n = len(prompts)
        budgets = new_token_budgets(max_new_tokens, n)
        if stop_strings and self.tokenizer is None:
            raise ValueError("stop_strings need a tokenizer: make the backend with one")
        if cache_ids is not None and len(cache_ids) != n:
            raise ValueError(f"cache_ids has {len(cache_ids)} entries for {n} prompts")
        reuse = self.reuse_kv and cache_ids is not None
        kept = self._kept if reuse else {}
        self._kept = {}
        # The kept KV of each row, when its tokens are a strict prefix of the new prompt.
        past: list[tuple[list[int], list[tuple[Any, Any]]] | None] = []
        for i in range(n):
            entry = kept.get(cache_ids[i]) if reuse else None
            ok = (entry is not None and len(entry[0]) < len(prompts[i])
                  and list(prompts[i][:len(entry[0])]) == entry[0])
            past.append(entry if ok else None)
        del kept
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(seed) if seed is not None else int(torch.seed() % (2**63)))
        outs: list[GenOut | None] = [None] * n
        order = sorted(range(n), key=lambda i: (past[i] is None, len(prompts[i])))
        for lo in range(0, n, self.max_batch):
            idx = order[lo:lo + self.max_batch]
            chunk, keep = self._generate_chunk(
                [prompts[i] for i in idx], [budgets[i] for i in idx], [past[i] for i in idx],
                stop_token_ids=set(stop_token_ids), stop_strings=list(stop_strings),
                temperature=temperature, top_p=top_p, generator=gen, keep_kv=reuse)
            for r, (i, out) in enumerate(zip(idx, chunk)):
                outs[i] = out
                if reuse and keep[r] is not None:
                    self._kept[cache_ids[i]] = keep[r]
        return [o for o in outs if o is not None]

    def forget(self) -> None:
        """Drop all kept KV (e.g. after the policy's weights changed)."""
        self._kept = {}

    def _prefill_inputs(self, prompts: list[Sequence[int]], past: list[Any], live: list[int],
                        new_tokens: int):
        """Batch layout ``[pad][kept KV][pad][new tokens]`` per row (attention mask 0 on pads).

        Returns (input_ids [B, N], attention_mask [B, C + N], position_ids [B, N], cache); the
        cache has room for ``new_tokens`` more positions per row.
        """
        import torch

        kept_len = [len(past[i][0]) if past[i] is not None else 0 for i in live]
        new = [list(prompts[i][k:]) for i, k in zip(live, kept_len)]
        c, w = max(kept_len), max(len(t) for t in new)
        if w == 0:
            raise ValueError("cannot generate from an empty prompt")
        ids = torch.full((len(live), w), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(live), c + w), dtype=torch.long)
        for r, (k, toks) in enumerate(zip(kept_len, new)):
            ids[r, w - len(toks):] = torch.tensor(toks, dtype=torch.long)
            attn[r, c - k:c] = 1
            attn[r, c + w - len(toks):] = 1
        ids, attn = ids.to(self.device), attn.to(self.device)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, c:]
        reserve = c + w + new_tokens
        cache = _reserved_cache(self.model.config, reserve)
        if c > 0:
            first = next(i for i in live if past[i] is not None)
            for layer, (ref_k, ref_v) in enumerate(past[first][1]):
                # One allocation per layer; each row's kept KV is copied right-aligned.
                keys = ref_k.new_zeros((len(live), ref_k.shape[0], c, ref_k.shape[2]))
                values = ref_v.new_zeros((len(live), ref_v.shape[0], c, ref_v.shape[2]))
                for r, (i, k) in enumerate(zip(live, kept_len)):
                    if k:
                        keys[r, :, c - k:] = past[i][1][layer][0]
                        values[r, :, c - k:] = past[i][1][layer][1]
                cache.update(keys, values, layer)
        return ids, attn, pos, cache

    @staticmethod
    def _row_kv(cache: Any, row: int, spans: list[tuple[int, int]]) -> list[tuple[Any, Any]]:
        """The KV of one batch row over its unmasked ``spans`` (at most two contiguous
        ranges: kept KV, then prompt + sampled tokens), per layer ([H, T, D] each)."""
        import torch

        out = []
        for layer in cache.layers:
            k, v = layer.keys[row], layer.values[row]
            out.append((torch.cat([k[:, a:b] for a, b in spans], dim=1),
                        torch.cat([v[:, a:b] for a, b in spans], dim=1)))
        return out

    def _generate_chunk(self, prompts: list[Sequence[int]], budgets: list[int], past: list[Any], *,
                        stop_token_ids: set[int], stop_strings: list[str], temperature: float,
                        top_p: float, generator: Any, keep_kv: bool) -> tuple[list[GenOut], list[Any]]:
        import torch

        b = len(prompts)
        outs = [GenOut(token_ids=[], logprobs=[], stop_reason="length") for _ in range(b)]
        keep: list[Any] = [None] * b
        live = [i for i in range(b) if budgets[i] > 0]
        if not live:
            return outs, keep
        longest = max(budgets[i] for i in live)
        step_input, attn, step_pos, cache = self._prefill_inputs(prompts, past, live, longest)
        # Where each row's real tokens sit in the cache: [c - kept, c) and [c + w - new, end).
        c, w = attn.shape[1] - step_input.shape[1], step_input.shape[1]
        spans0 = {}
        for i in live:
            k = len(past[i][0]) if past[i] is not None else 0
            spans0[i] = [(c - k, c), (c + w - (len(prompts[i]) - k), None)]
        stop_t = torch.tensor(sorted(stop_token_ids), dtype=torch.long, device=self.device)
        rows = torch.tensor(live, dtype=torch.long)  # row r of the batch is output rows[r]
        max_len = max(len(s) for s in stop_strings) if stop_strings else 0
        dead: set[int] = set()  # batch rows that stopped but still sit in the cache
        with torch.inference_mode():
            for _ in range(longest):
                out = self.model(input_ids=step_input, attention_mask=attn, position_ids=step_pos,
                                 use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
                cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
                tokens, logps = sample_next(logits=out.logits[:, -1, :], temperature=temperature,
                                            top_p=top_p, generator=generator)
                tok_list, lp_list = tokens.tolist(), logps.tolist()
                stopped = (torch.isin(tokens, stop_t) if len(stop_t) else
                           torch.zeros_like(tokens, dtype=torch.bool)).tolist()
                for r, i in enumerate(rows.tolist()):
                    if r in dead or not self._record(outs[i], tok_list[r], lp_list[r], stopped[r],
                                                     budgets[i], stop_strings, max_len):
                        continue
                    dead.add(r)
                    if keep_kv:
                        # The cache holds the prompt and every sampled token but the last one.
                        tokens_kept = list(prompts[i]) + outs[i].token_ids[:-1]
                        (a, b), (d, _) = spans0[i]
                        keep[i] = (tokens_kept, self._row_kv(cache, r, [(a, b), (d, attn.shape[1])]))
                if len(dead) == len(rows):
                    break
                # Dropping stopped rows copies the whole cache, so it waits until a quarter of
                # the batch has stopped: rows finish one by one, and a copy per finished row
                # costs more than a few wasted single-token steps. Until then a dead row keeps
                # decoding; its tokens are ignored and nothing reads its sampler draws.
                if len(dead) * 4 >= len(rows):
                    still = [r for r in range(len(rows)) if r not in dead]
                    sel = torch.tensor(still, dtype=torch.long, device=self.device)
                    cache.batch_select_indices(sel)
                    attn, tokens, step_pos = attn[sel], tokens[sel], step_pos[sel]
                    rows = rows[torch.tensor(still, dtype=torch.long)]
                    dead = set()
                attn = torch.cat([attn, attn.new_ones((len(rows), 1))], dim=-1)
                step_pos = step_pos[:, -1:] + 1
                step_input = tokens[:, None]
        return outs, keep

    def _record(self, out: GenOut, token: int, logprob: float, stop_token: bool, budget: int,
                stop_strings: list[str], max_len: int) -> bool:
        """Append one sampled token to ``out``; True when the row stops here (and why, in
        ``out.stop_reason``)."""
        out.token_ids.append(token)
        out.logprobs.append(logprob)
        if stop_token:
            out.stop_reason = "stop_token"
        elif stop_strings and self._hit_stop_string(out.token_ids, stop_strings, max_len):
            out.stop_reason = "stop_string"
        elif len(out.token_ids) >= budget:
            out.stop_reason = "length"
        else:
            return False
        return True

    def _hit_stop_string(self, token_ids: list[int], stop_strings: list[str], max_len: int) -> bool:
        # A token holds at least one byte, so the last max_len + 1 tokens cover any stop
        # string that the newest token completed (the +1 for a token straddling its start).
        tail = self.tokenizer.decode(token_ids[-(max_len + 1):], skip_special_tokens=False)
        return any(s in tail for s in stop_strings)


__all__ = ["HFBackend", "sample_next"]
