"""Calling tools safely: schemas for the chat template, argument validation, timeouts.

A tool is anything that satisfies :class:`tirl.core.types.Tool` (name, description, JSON
schema of its arguments, ``__call__(**arguments) -> str``). The rollout engine never calls a
tool directly: it goes through :func:`call_tool` / :func:`call_tools_batch`, which turn every
failure (unknown tool, arguments that break the schema, an exception, a timeout) into an
error *text* for the ``<tool_response>``, because one bad tool call must not end the batch:
the trajectory goes on and the failure is counted (``ToolResult.ok``).

A tool may also offer ``call_batch(list_of_arguments) -> list[str | Exception]``; then the
calls of one turn that go to it are executed in one batched call (BM25 and dense search score
all queries of a turn in one matrix product). A call that fails alone comes back as an
exception in its slot, so it fails that call only; ``call_batch`` raising fails them all
(the backend itself is down).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jsonschema

from tirl.core.types import Tool, ToolCall, valid_utf8

log = logging.getLogger(__name__)

__all__ = [
    "FunctionTool",
    "ToolResult",
    "ToolTimeoutError",
    "call_tool",
    "call_tools_batch",
    "check_arguments",
    "tool_schema",
    "tool_schemas",
    "validate_arguments",
]

#: Longest reason kept in an error text: a long traceback message would eat the agent's
#: context window and teach it nothing.
MAX_ERROR_CHARS = 300


class ToolResult(NamedTuple):
    """What one tool call produced. Unpacks as ``text, ok, error``."""

    text: str  # what goes into the <tool_response> (the tool's output or an error text)
    ok: bool
    error: str | None  # short reason when not ok, else None


class ToolTimeoutError(TimeoutError):
    """A tool did not return within its time budget."""


@dataclass
class FunctionTool:
    """A :class:`~tirl.core.types.Tool` made from a plain function.

    >>> echo = FunctionTool("echo", "Repeat the text.", {"type": "object",
    ...     "properties": {"text": {"type": "string"}}, "required": ["text"]},
    ...     lambda text: text)
    >>> echo(text="hi")
    'hi'
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., str] = field(repr=False)

    def __call__(self, **arguments: Any) -> str:
        return self.fn(**arguments)


def tool_schema(tool: Tool) -> dict[str, Any]:
    """The OpenAI/Qwen function schema of ``tool``, as chat templates take it in ``tools=``."""
    return {"type": "function", "function": {"name": tool.name, "description": tool.description,
                                             "parameters": tool.parameters}}


def tool_schemas(tools: Mapping[str, Tool] | Sequence[Tool]) -> list[dict[str, Any]]:
    """Schemas of several tools, in a stable order (by name for a mapping)."""
    items = [tools[k] for k in sorted(tools)] if isinstance(tools, Mapping) else list(tools)
    return [tool_schema(t) for t in items]


_VALIDATORS: dict[int, tuple[Any, Any]] = {}
_VALIDATORS_LOCK = threading.Lock()


def _min_length_not_blank(validator: Any, min_length: Any, instance: Any, schema: Any) -> Any:
    # JSON Schema counts whitespace as characters, so "   " passes minLength 1; a policy that
    # writes a blank query has not asked anything, and that is its own verdict (a parse rule
    # PRS sees), not a retriever error that would fail the batch.
    yield from _MIN_LENGTH(validator, min_length, instance, schema)
    if (validator.is_type(instance, "string") and isinstance(min_length, int)
            and 1 <= min_length <= len(instance) and not instance.strip()):
        yield jsonschema.ValidationError(f"{instance!r} is blank (only whitespace)")


_MIN_LENGTH = jsonschema.validators.validator_for({}).VALIDATORS["minLength"]


def _validator(schema: dict[str, Any]) -> Any:
    # Building a validator checks the schema itself; do it once per schema object.
    key = id(schema)
    with _VALIDATORS_LOCK:
        hit = _VALIDATORS.get(key)
        if hit is None or hit[0] is not schema:
            base = jsonschema.validators.validator_for(schema)
            base.check_schema(schema)
            cls = jsonschema.validators.extend(base, {"minLength": _min_length_not_blank})
            hit = (schema, cls(schema))
            _VALIDATORS[key] = hit
    return hit[1]


def check_arguments(schema: dict[str, Any], arguments: Any) -> str | None:
    """``None`` when ``arguments`` validate against the JSON ``schema``, else a short reason.

    Standard JSON Schema, with one rule more: a string whose schema asks ``minLength >= 1``
    must hold more than whitespace. Raises ``jsonschema.SchemaError`` for a broken schema.
    """
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"at {where!r}: {error.message}" if where else error.message


def validate_arguments(tool: Tool, arguments: Any) -> str | None:
    """``None`` when ``arguments`` validate against ``tool.parameters``, else a short reason
    (:func:`check_arguments`).

    >>> t = FunctionTool("f", "", {"type": "object", "properties": {"q": {"type": "string",
    ...                            "minLength": 1}}, "required": ["q"],
    ...                            "additionalProperties": False}, str)
    >>> validate_arguments(t, {"q": "x"}) is None
    True
    >>> validate_arguments(t, {"q": 1})
    "at 'q': 1 is not of type 'string'"
    >>> validate_arguments(t, {"q": "  "})
    "at 'q': '  ' is blank (only whitespace)"
    """
    return check_arguments(tool.parameters, arguments)


def _short(reason: str) -> str:
    reason = " ".join(str(reason).split())
    return reason if len(reason) <= MAX_ERROR_CHARS else reason[: MAX_ERROR_CHARS - 3] + "..."


def _error(name: str, reason: str) -> ToolResult:
    reason = valid_utf8(_short(reason))  # an exception's message may quote the bad text
    return ToolResult(text=f"Error: {name} failed: {reason}", ok=False, error=reason)


def _run_with_timeout(fn: Callable[[], Any], timeout_s: float | None) -> Any:
    """Run ``fn()``; raise :class:`ToolTimeoutError` if it has not returned in ``timeout_s``.

    The work runs in a daemon thread so that a tool that never returns cannot keep the
    process alive; such a thread is abandoned (Python cannot kill threads). A tool that
    ``honours_timeout`` is therefore not run here: it gets the timeout and ends by it itself
    (:func:`_batch_fn`).
    """
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["exc"] = exc

    thread = threading.Thread(target=target, name="tirl-tool", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise ToolTimeoutError(f"timed out after {timeout_s:g} s")
    if "exc" in box:
        raise box["exc"]
    return box["value"]


def _check_call(tools: Mapping[str, Tool], call: ToolCall) -> ToolResult | None:
    """An error result when ``call`` cannot run (unknown tool, bad arguments), else None."""
    tool = tools.get(call.name) if isinstance(call.name, str) else None
    if tool is None:
        return _error(str(call.name), f"unknown tool {call.name!r} (known: {sorted(tools)})")
    if not isinstance(call.arguments, Mapping):
        return _error(call.name, f"invalid arguments: expected an object, got "
                                 f"{type(call.arguments).__name__}")
    try:
        reason = validate_arguments(tool, dict(call.arguments))
    except Exception as exc:  # noqa: BLE001 - e.g. the tool's own schema is invalid
        return _error(call.name, f"cannot validate arguments: {_exc_reason(exc)}")
    if reason is not None:
        return _error(call.name, f"invalid arguments: {reason}")
    return None


def _as_result(name: str, value: Any) -> ToolResult:
    if isinstance(value, Exception):  # a batched tool's call that failed alone
        return _error(name, _exc_reason(value))
    if not isinstance(value, str):
        return _error(name, f"tool returned {type(value).__name__}, not text")
    # Tool text enters the trajectory here: made valid UTF-8 once (tirl.core.types.valid_utf8).
    return ToolResult(text=valid_utf8(value), ok=True, error=None)


def _exc_reason(exc: BaseException) -> str:
    if isinstance(exc, ToolTimeoutError):
        return str(exc)
    msg = str(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _honours_timeout(tool: Any) -> bool:
    return bool(getattr(tool, "honours_timeout", False)) and callable(
        getattr(tool, "call_batch", None))


def _batch_fn(tool: Any, args: list[dict[str, Any]],
              timeout_s: float | None) -> Callable[[], Sequence[Any]]:
    """``tool.call_batch(args)`` as a thunk that ends by ``timeout_s``: the tool's own
    deadline when it ``honours_timeout``, else a helper thread abandoned at the timeout."""
    if _honours_timeout(tool):
        return lambda: tool.call_batch(args, timeout_s=timeout_s)
    return lambda: _run_with_timeout(lambda: tool.call_batch(args), timeout_s)


def call_tool(tools: Mapping[str, Tool], call: ToolCall, *,
              timeout_s: float | None = None) -> ToolResult:
    """Execute one tool call. Never raises (except ``KeyboardInterrupt``/``SystemExit``).

    Returns ``ToolResult(text, ok, error)``; on failure ``text`` is
    ``"Error: <tool> failed: <reason>"`` so the agent reads why, and ``ok`` is False.

    >>> tools = {"boom": FunctionTool("boom", "", {"type": "object"}, lambda: 1 / 0)}
    >>> call_tool(tools, ToolCall("boom", {}))
    ToolResult(text='Error: boom failed: ZeroDivisionError: division by zero', ok=False, error='ZeroDivisionError: division by zero')
    """
    bad = _check_call(tools, call)
    if bad is not None:
        return bad
    tool = tools[call.name]
    arguments = dict(call.arguments)
    try:
        if _honours_timeout(tool):
            value = _batch_fn(tool, [arguments], timeout_s)()[0]
        else:
            value = _run_with_timeout(lambda: tool(**arguments), timeout_s)
    except Exception as exc:  # noqa: BLE001 - a tool failure is an observation, not a crash
        log.debug("tool %s failed", call.name, exc_info=True)
        return _error(call.name, _exc_reason(exc))
    return _as_result(call.name, value)


def call_tools_batch(tools: Mapping[str, Tool], calls: Sequence[ToolCall], *,
                     timeout_s: float | None = None, max_workers: int = 8) -> list[ToolResult]:
    """Execute the tool calls of one turn (of all live trajectories) together.

    Calls to a tool that has ``call_batch`` go to it in one batched call (an exception in a
    result slot fails that call; the batch raising or timing out fails that tool's calls);
    the others run on a bounded thread pool (``max_workers``), each with its own
    ``timeout_s``. A batched tool with ``honours_timeout = True`` gets
    ``call_batch(args, timeout_s=...)`` and ends by it itself, so no thread outlives the
    timeout. Results come back in the order of ``calls``; count failures with
    ``sum(not r.ok for r in results)``. Never raises.
    """
    results: list[ToolResult | None] = [None] * len(calls)
    batched: dict[str, list[int]] = {}
    single: list[int] = []
    for i, call in enumerate(calls):
        bad = _check_call(tools, call)
        if bad is not None:
            results[i] = bad
        elif callable(getattr(tools[call.name], "call_batch", None)):
            batched.setdefault(call.name, []).append(i)
        else:
            single.append(i)

    def run_batch(name: str, idx: list[int]) -> None:
        tool = tools[name]
        args = [dict(calls[i].arguments) for i in idx]
        try:
            values = _batch_fn(tool, args, timeout_s)()
            if len(values) != len(idx):
                raise RuntimeError(f"call_batch returned {len(values)} results for "
                                   f"{len(idx)} calls")
        except Exception as exc:  # noqa: BLE001
            log.debug("batched tool %s failed", name, exc_info=True)
            for i in idx:
                results[i] = _error(name, _exc_reason(exc))
            return
        for i, value in zip(idx, values):
            results[i] = _as_result(name, value)

    def run_single(i: int) -> None:
        results[i] = call_tool(tools, calls[i], timeout_s=timeout_s)

    jobs: list[Callable[[], None]] = [lambda n=n, ix=ix: run_batch(n, ix)
                                      for n, ix in batched.items()]
    jobs += [lambda i=i: run_single(i) for i in single]
    if len(jobs) == 1:
        jobs[0]()
    elif jobs:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs))),
                                thread_name_prefix="tirl-tools") as pool:
            for fut in [pool.submit(job) for job in jobs]:
                fut.result()  # jobs catch their own errors; this only waits
    out = [r if r is not None else _error("tool", "no result") for r in results]
    failures = sum(not r.ok for r in out)
    if failures:
        log.debug("%d of %d tool calls failed", failures, len(out))
    return out
