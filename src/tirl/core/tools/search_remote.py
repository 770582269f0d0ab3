"""The ``remote`` retriever: a client of the Search-R1 / FlashRAG retrieval server
(``POST {url}/retrieve`` with ``{"queries": [...], "topk": k, "return_scores": true}``).

One deadline per call, end to end (``timeout_s``): the client speaks HTTP through the
standard library's ``http.client`` because requests' timeouts bound each socket read, not the
call, and a server that trickles a byte per read held a call for 93 s at ``timeout_s: 3``.
The retries are tenacity's, with a stop of their own for the deadline (urllib3's ``Retry``
counts attempts and backs off but knows no deadline for the whole call, and it retries inside
urllib3's own connection pool, where the watchdog cannot reach the socket).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import tenacity

from tirl.core.tools.search_backends import Passage

__all__ = ["RemoteRetriever", "RemoteSearchError"]


class RemoteSearchError(RuntimeError):
    """The remote retrieval server failed or answered something that is not a result."""


def _parse_remote_doc(item: Any) -> Passage:
    """One entry of the server's result list: ``{"document": {...}, "score": s}`` when the
    request asked for scores, else the document itself."""
    if not isinstance(item, dict):
        raise RemoteSearchError(f"malformed result entry: expected an object, got "
                                f"{type(item).__name__}")
    doc, score = (item.get("document"), item.get("score", 0.0)) if "document" in item \
        else (item, 0.0)
    if not isinstance(doc, dict):
        raise RemoteSearchError("malformed result entry: 'document' is not an object")
    if isinstance(doc.get("contents"), str):
        # FlashRAG corpora store "title\ntext" in one field.
        title, _, text = doc["contents"].partition("\n")
    elif isinstance(doc.get("text"), str):
        title, text = str(doc.get("title", "")), doc["text"]
    else:
        raise RemoteSearchError("malformed result entry: document has no 'contents' or 'text'")
    try:
        score = float(score)
    except (TypeError, ValueError):
        raise RemoteSearchError(f"malformed result entry: score {score!r}") from None
    return Passage(str(doc.get("id", "")), title.strip().strip('"'), text.strip(), score)


class _DeadlinePassed(Exception):
    """Internal: the call's deadline passed during an exchange."""


class _Retryable(Exception):
    """Internal: an exchange failed in a way the next one may not (a connection error, a
    5xx); the message says how."""


def _post_once(url: urllib.parse.SplitResult, body: bytes, deadline: float,
               max_bytes: int) -> tuple[int, bytes]:
    """One HTTP POST of ``body`` to ``url`` -> ``(status, answer bytes)``, over by
    ``deadline`` (``time.monotonic()``) whatever the server does.

    Socket timeouts bound each read, but a server that sends a byte per read would pass every
    one of them: a watchdog shuts the socket down at the deadline, which ends a read in
    progress at once, so the call needs no thread of its own and leaves none behind.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlinePassed
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = cls(url.hostname, url.port, timeout=left)  # bounds the connect and each read
    expired = threading.Event()
    try:
        conn.connect()
    except OSError:
        conn.close()
        if time.monotonic() >= deadline:
            raise _DeadlinePassed from None
        raise
    # Held here: the connection hands its socket to the response (conn.sock = None) when
    # the server will close it, and the watchdog must still reach it then.
    sock = conn.sock

    def cut() -> None:
        expired.set()
        try:  # the plain socket's shutdown, also under TLS: the SSL object stays as it is
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:  # already closed
            pass

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    watchdog.name, watchdog.daemon = "tirl-remote-deadline", True
    watchdog.start()
    resp = None
    try:
        conn.request("POST", url.path or "/", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        chunks, size = [], 0
        while chunk := resp.read(min(1 << 20, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise RemoteSearchError(f"answer larger than {max_bytes} bytes")
        status = resp.status
    except (OSError, http.client.HTTPException):
        if expired.is_set() or time.monotonic() >= deadline:
            raise _DeadlinePassed from None
        raise
    finally:
        watchdog.cancel()
        watchdog.join()
        if resp is not None:
            resp.close()
        conn.close()
    if expired.is_set():  # a read cut short can look like a complete, shorter answer
        raise _DeadlinePassed
    return status, b"".join(chunks)


class RemoteRetriever:
    """Client of the Search-R1/FlashRAG retrieval server.

    ``timeout_s`` is the deadline of one :meth:`retrieve` call, end to end: connecting,
    sending, every byte of the answer, the retries and their backoff. Within it, connection
    errors and 5xx answers are retried ``max_retries`` times with exponential backoff
    (``backoff_s * 2**attempt``, skipped when no time is left); a 4xx, a malformed body or an
    answer over :attr:`max_response_bytes` fails at once. Failures raise
    :class:`RemoteSearchError` naming the URL and the cause.
    """

    #: Largest answer read, in bytes: a server cannot make the client hold an unbounded body.
    max_response_bytes = 64 * 2**20

    def __init__(self, url: str, *, timeout_s: float = 10.0, max_retries: int = 2,
                 backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep):
        if not url:
            raise ValueError("search kind 'remote' needs url= (e.g. http://127.0.0.1:8000)")
        self.url = url.rstrip("/") + "/retrieve"
        self._url = urllib.parse.urlsplit(self.url)
        if self._url.scheme not in ("http", "https") or not self._url.hostname:
            raise ValueError(f"search url: expected http(s)://host[:port], got {url!r}")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._sleep = sleep

    def _post(self, payload: dict[str, Any], budget: float) -> Any:
        deadline = time.monotonic() + budget
        body = json.dumps(payload).encode("utf-8")

        def no_time_left(state: tenacity.RetryCallState) -> bool:
            return time.monotonic() + state.upcoming_sleep >= deadline

        retrying = tenacity.Retrying(
            # A pause that would reach the deadline is not taken: the call ends there.
            stop=tenacity.stop_after_attempt(self.max_retries + 1) | no_time_left,
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, exp_base=2),
            retry=tenacity.retry_if_exception_type(_Retryable),
            sleep=self._sleep, reraise=True)
        try:
            return retrying(self._attempt, body, deadline)
        except _Retryable as exc:
            last = str(exc)
        except _DeadlinePassed:
            last = f"no answer within {budget:g} s"
        attempts = retrying.statistics["attempt_number"]
        plural = "" if attempts == 1 else "s"
        raise RemoteSearchError(f"{self.url}: {last} (after {attempts} attempt{plural})")

    def _attempt(self, body: bytes, deadline: float) -> Any:
        """One exchange -> the parsed answer; :class:`_Retryable` for a connection error or a
        5xx, :class:`RemoteSearchError` for what fails at once."""
        try:
            status, data = _post_once(self._url, body, deadline, self.max_response_bytes)
        except RemoteSearchError as exc:
            raise RemoteSearchError(f"{self.url}: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from None
        if status >= 500:
            raise _Retryable(f"HTTP {status}")
        text = data.decode("utf-8", "replace")
        if status >= 400:
            raise RemoteSearchError(f"{self.url}: HTTP {status}: {text[:200]}")
        try:
            return json.loads(text)
        except RecursionError:
            raise RemoteSearchError(f"{self.url}: answer is not JSON: nested too deeply "
                                    f"({len(data)} bytes)") from None
        except ValueError:
            raise RemoteSearchError(f"{self.url}: answer is not JSON: "
                                    f"{text[:100]!r}") from None

    def retrieve(self, queries: Sequence[str], k: int, *,
                 timeout_s: float | None = None) -> list[list[Passage]]:
        """Top-``k`` passages of each query; ``timeout_s`` (the engine's tool timeout)
        shortens the deadline below the retriever's own ``timeout_s``, never lengthens it."""
        if not queries:
            return []
        budget = self.timeout_s if timeout_s is None else min(self.timeout_s, timeout_s)
        body = self._post({"queries": list(queries), "topk": k, "return_scores": True}, budget)
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, list) or len(result) != len(queries):
            raise RemoteSearchError(f"{self.url}: expected {{'result': [...]}} with one list "
                                    f"per query ({len(queries)}), got {str(body)[:100]!r}")
        out = []
        for row in result:
            if not isinstance(row, list):
                raise RemoteSearchError(f"{self.url}: a query's result is not a list")
            out.append([_parse_remote_doc(item) for item in row[:k]])
        return out
