"""secrets: which parameters hold a secret, named credentials, and redaction of logs and
errors (issue 15, item 3)."""

from __future__ import annotations

import doctest
import logging

import pytest

from tirl.core import secrets
from tirl.core.secrets import Secret, redact, scrub_exception, secret_parameters

KEY = "sk-unit-REDACT-5e1f0a9b77"


def test_doctests():
    assert doctest.testmod(secrets).failed == 0


def test_secret_parameters_finds_values_not_names():
    params = {"rl": {"train": {
        "judge": {"name": "openai", "options": {
            "credentials": "openai_judge",           # the name of a credentials entry: fine
            "api_key_env": "OPENAI_API_KEY",         # the name of a variable: fine
            "max_tokens": 256, "api_key": None}},    # no value: fine
        "micro_tokens": 4096}},
        "agent": {"max_new_tokens_per_turn": 64, "tokenizer": {"pad_token": "<pad>"}}}
    assert secret_parameters(params) == []
    params["rl"]["train"]["judge"]["options"].update(
        {"credentials": {"api_key": KEY}, "extra_body": {"headers": {"Authorization": "Bearer x"}}})
    params["evaluation"] = {"judge": {"api_key": KEY}, "hub": [{"hf_token": "hf_abc"}]}
    assert secret_parameters(params) == [
        "rl.train.judge.options.credentials",
        "rl.train.judge.options.extra_body.headers.Authorization",
        "evaluation.judge.api_key", "evaluation.hub[0].hf_token"]


def test_named_credentials_are_found_by_name_and_unknown_names_list_the_known(monkeypatch):
    monkeypatch.setattr(secrets, "_named", {})
    secrets.provide_credentials({"openai_judge": {"api_key": KEY}, "s3": {"key": "short"}})
    assert secrets.credentials("openai_judge") == {"api_key": KEY}
    with pytest.raises(ValueError, match=r"'nope'.*credentials\.yml.*\['openai_judge', 's3'\]") as info:
        secrets.credentials("nope")
    assert KEY not in str(info.value)
    assert redact(f"key={KEY}") == "key=***"
    assert redact("short") == "short"  # too short to be a key: not masked everywhere


def test_secret_never_shows_and_is_redacted():
    s = Secret(f"  {KEY}\n")  # surrounding whitespace (a copied key) is not part of it
    assert s.get_secret_value() == KEY and KEY not in repr(s) and KEY not in str(s) and bool(s)
    assert not Secret(None) and not Secret("  ") and repr(Secret(None)) == "None"
    assert redact(f"Authorization: Bearer {KEY}; again {KEY}") == \
        "Authorization: Bearer ***; again ***"


def test_secret_is_a_pydantic_secret_str_also_inside_a_model():
    from pydantic import BaseModel, SecretStr

    class Settings(BaseModel):
        api_key: Secret

    key = "sk-unit-PYDANTIC-77c0ffee12"
    settings = Settings(api_key=f" {key} ")  # pydantic builds the field through Secret
    assert isinstance(settings.api_key, SecretStr)
    assert settings.api_key.get_secret_value() == key
    assert key not in repr(settings) and key not in settings.model_dump_json()
    assert redact(f"echo {key}") == "echo ***"  # registered on the way in


def test_every_log_record_is_redacted_where_it_is_made(caplog):
    Secret(KEY)
    log = logging.getLogger("tirl.test_secrets")
    with caplog.at_level(logging.INFO):
        log.info("server said %s", f"bad key {KEY}")
        try:
            raise RuntimeError(f"echo: {KEY}")
        except RuntimeError:
            log.exception("request failed")
        log.info("nothing secret %d", 3)
    texts = [r.getMessage() for r in caplog.records]
    assert texts[0] == "server said bad key ***"
    assert texts[1].startswith("request failed\n") and "RuntimeError: echo: ***" in texts[1]
    assert texts[2] == "nothing secret 3"
    assert KEY not in caplog.text


def test_scrub_exception_redacts_the_chain():
    Secret(KEY)
    try:
        try:
            raise ValueError(f"inner {KEY}")
        except ValueError as inner:
            raise RuntimeError(f"outer {KEY}", 3) from inner
    except RuntimeError as exc:
        scrub_exception(exc)
        assert exc.args == ("outer ***", 3) and str(exc.__cause__) == "inner ***"
