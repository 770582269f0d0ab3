"""The ``vllm`` generation backend (registered in :mod:`tirl.core.agent.backends`): vLLM's
offline ``LLM`` (GPU, optional extra, imported lazily). Prompt token ids in, token ids and
sampling log-probs out; :meth:`VLLMBackend.sync_weights` pushes updated policy weights into
the engine (as TRL's colocate mode does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tirl.core.agent.generation import GenOut, new_token_budgets


class VLLMBackend:
    """vLLM offline engine (GPU). ``vllm`` is imported only when this backend is built.

    ``model`` may be a path/hub id, or a transformers model whose ``name_or_path`` vLLM loads;
    pass an in-memory policy to :meth:`sync_weights` after each update.
    """

    name = "vllm"

    def __init__(self, model: Any, tokenizer: Any = None, *, gpu_memory_utilization: float = 0.5,
                 max_model_len: int | None = None, dtype: str = "auto", seed: int = 0,
                 enforce_eager: bool = False, **llm_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError as exc:  # optional GPU extra
            raise ImportError("the 'vllm' backend needs vLLM: pip install 'tirl[vllm]' on a CUDA "
                              "machine") from exc
        self._vllm = vllm
        path = model if isinstance(model, str) else getattr(model, "name_or_path", None)
        if not path:
            raise ValueError("vllm backend: model must be a path/hub id or a saved model with "
                             "name_or_path set")
        self.tokenizer = tokenizer
        self.llm = vllm.LLM(model=str(path), gpu_memory_utilization=gpu_memory_utilization,
                            max_model_len=max_model_len, dtype=dtype, seed=seed,
                            enforce_eager=enforce_eager, **llm_kwargs)

    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int | Sequence[int],
                 stop_token_ids: set[int] | frozenset[int] = frozenset(),
                 stop_strings: Sequence[str] = (), temperature: float = 1.0, top_p: float = 1.0,
                 seed: int | None = None, cache_ids: Sequence[Any] | None = None) -> list[GenOut]:
        # cache_ids is not needed: vLLM's automatic prefix caching reuses shared prefixes.
        vllm = self._vllm
        budgets = new_token_budgets(max_new_tokens, len(prompts))
        params = [vllm.SamplingParams(
            max_tokens=max(1, b), temperature=temperature, top_p=top_p, logprobs=1,
            stop_token_ids=sorted(stop_token_ids), stop=list(stop_strings) or None,
            include_stop_str_in_output=True, skip_special_tokens=False,
            seed=None if seed is None else seed + k) for k, b in enumerate(budgets)]
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        results = self.llm.generate(inputs, params, use_tqdm=False)
        outs = []
        for res in results:
            comp = res.outputs[0]
            ids = list(comp.token_ids)
            lps = [float(step[tok].logprob) if step and tok in step else 0.0
                   for tok, step in zip(ids, comp.logprobs or [{}] * len(ids))]
            reason = ("length" if comp.finish_reason == "length" else
                      "stop_string" if isinstance(comp.stop_reason, str) else "stop_token")
            outs.append(GenOut(token_ids=ids, logprobs=lps, stop_reason=reason))
        return outs

    def sync_weights(self, model: Any) -> None:
        """Load ``model``'s current parameters into the engine (colocated, same process).

        Same path as TRL's colocate mode: the driver worker's model ``load_weights``, then a
        prefix-cache reset so no stale KV from the old weights is reused.
        """
        engine = self.llm.llm_engine
        try:
            runner_model = engine.model_executor.driver_worker.model_runner.model
        except AttributeError:  # vLLM V1 layout
            runner_model = engine.model_executor.driver_worker.worker.model_runner.model
        runner_model.load_weights(((n, p.data) for n, p in model.named_parameters()))
        self.llm.reset_prefix_cache()


__all__ = ["VLLMBackend"]
