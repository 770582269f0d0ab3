"""OpenAIJudge: where its key comes from, and that no body a server echoes shows it
(issue 15, item 3)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tirl.core import secrets
from tirl.core.rewards.judge_format import JudgeError
from tirl.core.rewards.llm_judge import OpenAIJudge

KEY = "sk-judge-ECHOED-93c1d0e4aa"
ITEM = {"question": "Who founded Kestrel Works?", "reference": "Brin Adler founded it.",
        "answer": "Brin Adler."}


@pytest.fixture
def echo_server():
    """Answers every request with (status, body), where ``{auth}`` in the body is replaced
    by the request's Authorization header, as a proxy that echoes the request would."""
    state = {"status": 400, "body": "{auth}", "auth": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            auth = self.headers.get("Authorization") or ""
            state["auth"].append(auth)
            data = state["body"].replace("{auth}", auth).encode()
            self.send_response(state["status"])
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()


def _judge(url: str, **kw) -> OpenAIJudge:
    return OpenAIJudge(url, "m", **{"credentials": {"api_key": KEY}, "max_retries": 1,
                                    "timeout_s": 5.0, "sleep": lambda s: None, **kw})


@pytest.mark.parametrize("body", [
    '{"error": "bad header Authorization: {auth}"}',
    "x" * 185 + "{auth}",  # the key straddles the 200-character cut of the message
])
def test_an_echoed_key_is_redacted_from_the_error(echo_server, body):
    echo_server.update(status=400, body=body)
    with pytest.raises(JudgeError, match="HTTP 400") as info:
        _judge(echo_server["url"]).judge(**ITEM)
    assert echo_server["auth"] == [f"Bearer {KEY}"]
    assert KEY[:8] not in str(info.value)
    assert "***" in str(info.value) or len(str(info.value)) < 300


def test_an_echoed_key_in_a_malformed_body_is_redacted_from_logs_and_error(echo_server, caplog):
    echo_server.update(status=200, body='{"echo": "{auth}"}')
    caplog.set_level(logging.DEBUG)
    with pytest.raises(JudgeError, match="malformed") as info:
        _judge(echo_server["url"]).judge(**ITEM)
    assert KEY[:8] not in str(info.value)
    assert caplog.records and KEY[:8] not in caplog.text


def test_a_key_that_breaks_the_header_is_not_quoted_in_the_error(echo_server):
    broken = "sk-broken\nHEADER-77a1b2c3d4"  # requests quotes an invalid header value
    with pytest.raises(JudgeError) as info:
        _judge(echo_server["url"], credentials={"api_key": broken}).judge(**ITEM)
    assert "sk-broken" not in str(info.value) and "77a1b2c3d4" not in str(info.value)
    assert echo_server["auth"] == []  # nothing was sent


def test_the_key_comes_from_kedro_credentials_by_name(echo_server, monkeypatch):
    monkeypatch.setattr(secrets, "_named", {})
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    secrets.provide_credentials({"openai_judge": {"api_key": KEY}})
    match = json.dumps({"choices": [{"message": {
        "content": '{"score": 9, "verdict": "Match", "rationale": "ok"}'}}]})
    echo_server.update(status=200, body=match)
    judge = OpenAIJudge(echo_server["url"], "m", credentials="openai_judge")
    assert judge.judge(**ITEM).match and echo_server["auth"] == [f"Bearer {KEY}"]
    assert KEY not in repr(judge)
    with pytest.raises(ValueError, match=r"credentials 'other'.*credentials\.yml"):
        OpenAIJudge(echo_server["url"], "m", credentials="other")
