"""Scripted generation backends for rollout tests: what a backend returns for a given text."""

from __future__ import annotations

from tirl.core.agent.generation import GenOut


def scripted_out(tokenizer, text: str, budget: int, stop_token_ids, logprob: float) -> GenOut:
    """The backend's answer when the model "writes" ``text``: cut after the first stop token
    (stop_token) or at ``budget`` tokens (length), every token at ``logprob``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    reason = "length"
    for k, t in enumerate(ids):
        if t in stop_token_ids:
            ids, reason = ids[:k + 1], "stop_token"
            break
    if len(ids) > budget:
        ids, reason = ids[:budget], "length"
    return GenOut(list(ids), [logprob] * len(ids), reason)
