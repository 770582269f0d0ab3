"""Secrets: where credentials come from, and the redaction that keeps them out of every text.

A key never travels in the parameters: parameters are logged to MLflow (every ``params:*``
input, and the ``runtime_params`` tag), copied into outputs (``inspect_rewards_stats``) and
tracked by DVC, so :func:`secret_parameters` finds any that look like one and the project's
hook refuses the run before anything is written. Keys come from Kedro's credentials
(``conf/local/credentials.yml``, handed to :func:`provide_credentials` by the hook and named
in the parameters, as catalog datasets name theirs) or from the environment.

Every secret the process holds is registered (:class:`Secret`, a pydantic ``SecretStr``, and
:func:`provide_credentials`) and :func:`redact` replaces it with ``***`` in any text: log
records (a record factory installed with the first secret, so every handler, the console
included, sees the redacted text), MLflow params, tags and text artifacts (``tirl.tracking``),
error messages. The registry is process-wide on purpose: a log line or a tag can come from anywhere.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import traceback
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

__all__ = ["MASK", "Secret", "contains_secret", "credentials", "provide_credentials", "redact",
           "register", "scrub_exception", "secret_parameters"]

MASK = "***"
#: Parameter names that hold a secret (the last part of a dotted key). ``credentials`` is
#: allowed as the *name* of an entry of the Kedro credentials, not as a mapping of values.
#: (``token`` alone or with a credential prefix: ``pad_token`` is a tokenizer setting.)
_SECRET_NAME = re.compile(r"^((.*[_-])?(api[_-]?key|apikey|secret|password|passwd|authorization"
                          r"|(access|auth|bearer|api|hf|refresh)[_-]?token)|token)$", re.I)
#: Shorter values are not registered for redaction: masking every "user" or "1" in the logs
#: would hide more than it protects, and no real key is that short.
MIN_SECRET_LEN = 8
#: Where a key goes instead of the parameters (the refusal says it; docs/rewards.md, "API keys").
WHERE = ("put it in conf/local/credentials.yml (e.g. `openai_judge: {api_key: ...}`) and name "
         "that entry in the judge's options (`credentials: openai_judge`), or export it "
         "(OPENAI_API_KEY, or the variable named by the judge's `api_key_env`)")

_lock = threading.Lock()
_known: set[str] = set()
_named: dict[str, dict[str, Any]] = {}


def register(value: Any) -> None:
    """Redact ``value`` (a string of at least :data:`MIN_SECRET_LEN` characters) from now on.

    The first registration installs the redacting log-record factory."""
    if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_LEN:
        return
    value = value.strip()
    # Also as a repr or a JSON string shows it (an error quoting a header, a JSON body
    # echoing the request): a key with a special character is escaped there.
    with _lock:
        _known.update({value, repr(value)[1:-1], json.dumps(value)[1:-1]})
    _install_log_redaction()


def redact(text: Any) -> Any:
    """``text`` with every registered secret replaced by ``***`` (non-strings unchanged).

    >>> register("sk-doctest-0123456789")
    >>> redact("Bearer sk-doctest-0123456789 was refused")
    'Bearer *** was refused'
    """
    if not isinstance(text, str) or not _known:
        return text
    # Longest first: a secret that contains another is masked whole.
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def contains_secret(text: Any) -> bool:
    return isinstance(text, str) and any(s in text for s in tuple(_known))


class Secret(SecretStr):
    """Holds a credential: pydantic's :class:`~pydantic.SecretStr` (its repr and str never
    show it, nor does a pydantic model that holds it), registered so that :func:`redact`
    hides it from every text; surrounding whitespace is dropped, and no value (``None`` or
    blank) is no key: false, ``repr`` ``None``.

    >>> key = Secret(" sk-doctest-secret-42 ")
    >>> key, str(key), key.get_secret_value()
    (Secret('**********'), '**********', 'sk-doctest-secret-42')
    >>> bool(Secret(None)), Secret("  ")
    (False, None)
    """

    def __init__(self, value: str | None):
        super().__init__(value.strip() if isinstance(value, str) else "")
        register(self.get_secret_value())

    def __repr__(self) -> str:
        return super().__repr__() if self else "None"


# --- where keys come from ------------------------------------------------------------------


def provide_credentials(conf_creds: Mapping[str, Any] | None) -> None:
    """Make the Kedro credentials (``conf/<env>/credentials.yml``) available by entry name to
    :func:`credentials`, and register every string in them for redaction."""
    entries = {str(k): dict(v) for k, v in (conf_creds or {}).items() if isinstance(v, Mapping)}

    def leaves(obj: Any):
        if isinstance(obj, Mapping):
            for v in obj.values():
                yield from leaves(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from leaves(v)
        else:
            yield obj

    for value in leaves(conf_creds or {}):
        register(value)
    with _lock:
        _named.clear()
        _named.update(entries)


def credentials(name: str) -> dict[str, Any]:
    """The Kedro credentials entry ``name`` (a mapping such as ``{"api_key": ...}``)."""
    with _lock:
        found = _named.get(name)
        known = sorted(_named)
    if found is None:
        raise ValueError(f"credentials {name!r}: no such entry in the Kedro credentials "
                         f"(conf/local/credentials.yml, or conf/<env>/credentials.yml; entries "
                         f"found: {known or 'none'})")
    return dict(found)


def secret_parameters(params: Any, prefix: str = "") -> list[str]:
    """Dotted keys of ``params`` that hold a secret: a non-empty string under a secret-looking
    name (``api_key``, ``token``, ``password``, ...), or ``credentials`` given as a mapping
    of values instead of the name of an entry of the Kedro credentials.

    >>> secret_parameters({"judge": {"options": {"credentials": {"api_key": "sk-1"},
    ...                                          "api_key_env": "OPENAI_API_KEY"}}})
    ['judge.options.credentials']
    """
    found: list[str] = []
    if isinstance(params, Mapping):
        for key, value in params.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if str(key).lower() == "credentials" and isinstance(value, Mapping) and value:
                found.append(path)
            elif _SECRET_NAME.match(str(key)) and isinstance(value, str) and value.strip():
                found.append(path)
            else:
                found.extend(secret_parameters(value, path))
    elif isinstance(params, (list, tuple)):
        for i, value in enumerate(params):
            found.extend(secret_parameters(value, f"{prefix}[{i}]"))
    return found


# --- redaction of what leaves the process ----------------------------------------------------


def scrub_exception(exc: BaseException | None) -> None:
    """Redact the string arguments of ``exc`` and of its causes, in place (the traceback a
    CLI prints at the end is built from them)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(contains_secret(a) for a in exc.args):
            try:
                exc.args = tuple(redact(a) for a in exc.args)
            except (AttributeError, TypeError):  # an exception type with read-only args
                pass
        exc = exc.__cause__ or exc.__context__


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is the handler's error to report
        return record
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info))
        if contains_secret(text):
            # The handler would format the traceback itself, from the live exception.
            message = f"{message}\n{text.rstrip()}"
            record.exc_info, record.exc_text = None, None
    if contains_secret(message):
        record.msg, record.args = redact(message), ()
    return record


def _install_log_redaction() -> None:
    """Wrap the log-record factory (once) so that every record is redacted where it is made:
    every handler (console, file, pytest's caplog) then sees the same redacted text."""
    with _lock:
        base = logging.getLogRecordFactory()
        if getattr(base, "_tirl_redacting", False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = base(*args, **kwargs)
            return _redact_record(record) if _known else record

        factory._tirl_redacting = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
