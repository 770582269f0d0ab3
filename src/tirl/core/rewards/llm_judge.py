"""LLM judges for long-form answers: an OpenAI-compatible endpoint, or a local transformers model.

Both follow :class:`tirl.core.types.Judge` and share one prompt and one strict verdict format
(docs/rewards.md, "Judges"), defined in :mod:`tirl.core.rewards.judge_format`; verdicts are
cached on disk (:class:`JudgeCache`, diskcache); the OpenAI judge's retries and backoff are
tenacity's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import diskcache
import tenacity

from tirl.core.rewards.judge_format import (DEFAULT_PROMPT_TEMPLATE, JudgeError,
                                           VerdictParseError, check_template, parse_verdict,
                                           render_prompt)
from tirl.core.secrets import Secret, redact
from tirl.core.secrets import credentials as named_credentials
from tirl.core.types import JudgeVerdict

log = logging.getLogger(__name__)

__all__ = [
    "JudgeCache",
    "OpenAIJudge",
    "TransformersJudge",
]


# --- cache -------------------------------------------------------------------------------


class JudgeCache:
    """Verdicts on disk (:mod:`diskcache`, in ``cache_dir/judge_cache/``), keyed by a hash
    of the model and the full request.

    diskcache is SQLite underneath: each write is one transaction (a reader sees a verdict
    whole or not at all), and the cache is safe across threads (a connection per thread) and
    processes (SQLite locking; a forked child opens its own connection). Nothing is evicted
    (``eviction_policy="none"``): a verdict is kept for as long as the directory is. Values are
    JSON text, not pickles, so that a cache directory never executes what it holds. Only parsed
    verdicts are stored, never errors.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.path = Path(cache_dir) / "judge_cache"
        self._cache = diskcache.Cache(self.path, timeout=30, eviction_policy="none")

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()

    def get(self, key: str) -> JudgeVerdict | None:
        value = self._cache.get(key)
        if value is None:
            return None
        v = json.loads(value)
        return JudgeVerdict(score=float(v["score"]), match=bool(v["match"]),
                            rationale=str(v.get("rationale", "")))

    def put(self, key: str, verdict: JudgeVerdict) -> None:
        self._cache.set(key, json.dumps({"score": verdict.score, "match": verdict.match,
                                         "rationale": verdict.rationale}))

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()


class _Retryable(Exception):
    """Internal: an attempt failed in a way the next one may not (a timeout, a 5xx, an
    unparseable verdict); the message says how."""


def _judge_items(judge: Any, items: Sequence[Mapping[str, Any]], max_workers: int
                 ) -> list[JudgeVerdict]:
    def one(i: int) -> JudgeVerdict:
        item = items[i]
        try:
            return judge.judge(question=item["question"], reference=item["reference"],
                               answer=item["answer"], facts=tuple(item.get("facts", ()) or ()))
        except KeyError as exc:
            raise ValueError(f"judge_batch: item {i} has no key {exc}") from None
        except JudgeError as exc:
            raise JudgeError(f"item {i}: {exc}") from exc

    if max_workers <= 1 or len(items) <= 1:
        return [one(i) for i in range(len(items))]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items)),
                            thread_name_prefix="tirl-judge") as pool:
        return list(pool.map(one, range(len(items))))


# --- OpenAI-compatible endpoint ---------------------------------------------------------


class OpenAIJudge:
    """A judge over any OpenAI-compatible chat-completions endpoint (``vllm serve``, hosted).

    The API key comes from ``credentials``: the name of an entry of the Kedro credentials
    (``conf/local/credentials.yml``, e.g. ``openai_judge: {api_key: ...}``; the parameters
    hold only the name) or, from Python, a mapping with ``api_key``; else from the
    environment variable ``api_key_env``. With neither, no Authorization header is sent (a
    local ``vllm serve`` needs none). The key is a :class:`~tirl.core.secrets.Secret`: never
    in ``repr``, and redacted from every log line and error, also where a server echoes it.

    Each call: cache lookup, then up to ``1 + max_retries`` requests; a timeout, a connection
    error, HTTP 429/5xx, a body without ``choices[0].message.content``, or an unparseable
    verdict is retried after ``backoff_s * 2**attempt`` seconds; other 4xx fail at once.
    At most ``max_concurrency`` requests are in flight per judge, across threads.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 credentials: str | Mapping[str, Any] | None = None,
                 prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
                 system_prompt: str | None = None, temperature: float = 0.0,
                 max_tokens: int = 256, timeout_s: float = 60.0, max_retries: int = 3,
                 backoff_s: float = 1.0, max_concurrency: int = 8,
                 cache_dir: str | os.PathLike | None = None,
                 extra_body: Mapping[str, Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not base_url:
            raise ValueError("base_url: required (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise ValueError("model: required (the served model name)")
        if max_retries < 0 or max_concurrency < 1 or timeout_s <= 0:
            raise ValueError("max_retries >= 0, max_concurrency >= 1 and timeout_s > 0 required")
        check_template(prompt_template)
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        self.extra_body = dict(extra_body or {})
        if isinstance(credentials, str):
            credentials = named_credentials(credentials)
        key = (credentials or {}).get("api_key") or os.environ.get(api_key_env) or None
        self._api_key = Secret(key)
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._count_lock = threading.Lock()
        self._sleep = sleep
        self.cache = JudgeCache(cache_dir) if cache_dir is not None else None
        self.num_requests = 0  # HTTP requests sent (for throughput figures and tests)

    def __repr__(self) -> str:
        return (f"OpenAIJudge(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key={self._api_key!r}, cache={'on' if self.cache else 'off'})")

    def _payload(self, prompt: str) -> dict[str, Any]:
        messages = ([{"role": "system", "content": self.system_prompt}]
                    if self.system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        return {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens, **self.extra_body}

    def judge(self, *, question: str, reference: str, answer: str,
              facts: Sequence[str] = ()) -> JudgeVerdict:
        prompt = render_prompt(self.prompt_template, question=question, reference=reference,
                               answer=answer, facts=facts)
        payload = self._payload(prompt)
        key = JudgeCache.key("openai", self.base_url, payload)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return hit
        verdict = self._request(payload)
        if self.cache is not None:
            self.cache.put(key, verdict)
        return verdict

    def judge_batch(self, items: Sequence[Mapping[str, Any]]) -> list[JudgeVerdict]:
        """Judge ``items`` (dicts with question, reference, answer[, facts]) concurrently,
        at most ``max_concurrency`` at a time; results in order. Raises the first
        :class:`JudgeError` (naming the item) after the others have finished."""
        return _judge_items(self, items, self.max_concurrency)

    def _request(self, payload: dict[str, Any]) -> JudgeVerdict:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            # backoff_s * 2**(n - 1) after the n-th failed attempt: backoff_s, 2*backoff_s, ...
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, exp_base=2),
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=self._log_retry, sleep=self._sleep, reraise=True)
        try:
            return retrying(self._attempt, payload, headers)
        except _Retryable as exc:
            raise JudgeError(f"judge {self.model} at {self.url}: {exc} "
                             f"(after {self.max_retries + 1} attempts)") from None

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        log.warning("judge %s: %s; retry %d/%d in %.2g s", self.model,
                    state.outcome.exception(), state.attempt_number, self.max_retries,
                    state.upcoming_sleep)

    def _attempt(self, payload: dict[str, Any], headers: dict[str, str]) -> JudgeVerdict:
        """One request -> its verdict; :class:`_Retryable` for a failure another attempt may
        not repeat, :class:`JudgeError` for one it would (a 4xx, a bad header)."""
        import requests

        try:
            with self._slots:
                with self._count_lock:
                    self.num_requests += 1
                resp = requests.post(self.url, json=payload, headers=headers,
                                     timeout=self.timeout_s)
        except requests.Timeout:
            raise _Retryable(f"no answer within {self.timeout_s:g} s") from None
        except requests.ConnectionError as exc:
            raise _Retryable(f"connection to {self.url} failed ({type(exc).__name__})") from None
        except requests.RequestException as exc:  # e.g. InvalidHeader quotes the header
            raise JudgeError(f"judge {self.model} at {self.url}: {type(exc).__name__}: "
                             f"{redact(str(exc))[:200]}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}")
        # A server may echo the request (its Authorization header included) in a body:
        # redact before cutting, or a key cut in half would show its first part.
        if resp.status_code >= 400:
            raise JudgeError(f"judge {self.model} at {self.url}: HTTP {resp.status_code}: "
                             f"{redact(resp.text)[:200]}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable(f"malformed chat-completions body: "
                             f"{redact(resp.text)[:100]!r}") from None
        try:
            return parse_verdict(content)
        except VerdictParseError as exc:
            raise _Retryable(redact(str(exc))) from None

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


# --- local transformers model ----------------------------------------------------------


class TransformersJudge:
    """A judge run by a local causal LM (any HF id or path, or a loaded model + tokenizer).

    Same prompt and strict parsing as :class:`OpenAIJudge`. The first attempt decodes
    greedily (``temperature == 0``) or samples at ``temperature``; retries after an
    unparseable reply sample at ``retry_temperature`` (a greedy retry would repeat the same
    text). ``generate_fn(prompt) -> reply`` replaces the model entirely (tests, custom
    backends).
    """

    def __init__(self, model_or_path: Any = None, *, tokenizer: Any = None,
                 prompt_template: str = DEFAULT_PROMPT_TEMPLATE, max_new_tokens: int = 128,
                 temperature: float = 0.0, retry_temperature: float = 0.7,
                 max_retries: int = 2, device: str | None = None, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None,
                 generate_fn: Callable[[str, int], str] | None = None):
        check_template(prompt_template)
        if generate_fn is None and model_or_path is None:
            raise ValueError("model_or_path: required (an HF id/path or a loaded model)")
        self.prompt_template = prompt_template
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.retry_temperature = retry_temperature
        self.max_retries = max_retries
        self.seed = seed
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant
        self.cache = JudgeCache(cache_dir) if cache_dir is not None else None
        self.model = self.tokenizer = None
        self.name = getattr(generate_fn, "__name__", "generate_fn")
        if generate_fn is not None:
            self._generate = generate_fn
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model_or_path, (str, os.PathLike)):
            self.name = str(model_or_path)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_or_path)
            self.model = AutoModelForCausalLM.from_pretrained(model_or_path)
        else:
            if tokenizer is None:
                raise ValueError("tokenizer: required with a loaded model")
            self.model, self.tokenizer = model_or_path, tokenizer
            self.name = str(getattr(self.model, "name_or_path", "") or type(self.model).__name__)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self._generate = self._hf_generate

    def __repr__(self) -> str:
        return f"TransformersJudge(model={self.name!r}, max_retries={self.max_retries})"

    def _hf_generate(self, prompt: str, attempt: int) -> str:
        import torch

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                           add_generation_prompt=True, tokenize=False)
        else:
            text = prompt
        enc = tok(text, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        temperature = self.temperature if attempt == 0 else self.retry_temperature
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens,
                                  "pad_token_id": tok.pad_token_id
                                  if tok.pad_token_id is not None else tok.eos_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0)
            torch.manual_seed(self.seed + attempt)  # reproducible retries
        else:
            kwargs.update(do_sample=False)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def judge(self, *, question: str, reference: str, answer: str,
              facts: Sequence[str] = ()) -> JudgeVerdict:
        prompt = render_prompt(self.prompt_template, question=question, reference=reference,
                               answer=answer, facts=facts)
        key = JudgeCache.key("transformers", self.name, self.max_new_tokens, self.temperature,
                             prompt)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return hit
        last = ""
        for attempt in range(self.max_retries + 1):
            with self._lock:
                reply = self._generate(prompt, attempt)
            try:
                verdict = parse_verdict(reply)
            except VerdictParseError as exc:
                last = str(exc)
                log.warning("judge %s: %s (attempt %d/%d)", self.name, last, attempt + 1,
                            self.max_retries + 1)
                continue
            if self.cache is not None:
                self.cache.put(key, verdict)
            return verdict
        raise JudgeError(f"judge {self.name}: {last} (after {self.max_retries + 1} attempts)")

    def judge_batch(self, items: Sequence[Mapping[str, Any]]) -> list[JudgeVerdict]:
        """Judge ``items`` one after the other (a local model runs one generate at a time)."""
        return _judge_items(self, items, 1)
