"""Progress bars that read well both in a terminal and in a log file.

In a terminal, :func:`progress` is a ``tqdm`` bar. When stderr is not a terminal (``make run >
log``, CI, ``nohup``), tqdm would still redraw with carriage returns (hundreds of them in a
log) and glue log lines to the end of a bar; there it is :class:`LineProgress` instead: one log
line at every tenth of the total (and at the end), with the same ``update`` /
``set_postfix`` / ``close`` calls.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("tirl.progress")


def is_terminal(stream: Any = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class LineProgress:
    """A progress report of ``total`` units as log lines, ``lines`` of them at most (plus the
    last)."""

    def __init__(self, *, total: int, desc: str, initial: int = 0, unit: str = "it",
                 lines: int = 10, disable: bool = False) -> None:
        self.total, self.desc, self.unit, self.disable = int(total), desc, unit, disable
        self.n, self._start, self._t0 = int(initial), int(initial), time.perf_counter()
        self._every = max(1, self.total // max(1, lines))
        self._next = self.n + self._every
        self._postfix = ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next and self.n < self.total:
            self._emit()
            while self._next <= self.n:
                self._next += self._every

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if not self._closed and self.n > self._start:
            self._emit()
        self._closed = True

    def _emit(self) -> None:
        if self.disable:
            return
        elapsed = time.perf_counter() - self._t0
        rate = (self.n - self._start) / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = f", {self._postfix}" if self._postfix else ""
        log.info("%s: %d/%d %s%s in %.0f s (%.2f %s/s)%s", self.desc, self.n, self.total,
                 self.unit, pct, elapsed, rate, self.unit, tail)


def progress(*, total: int, desc: str, initial: int = 0, unit: str = "it",
             disable: bool = False, stream: Any = None) -> Any:
    """A tqdm bar in a terminal, a :class:`LineProgress` otherwise (``stream``: the one tqdm
    would draw on, stderr by default)."""
    if is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, initial=initial, unit=unit, disable=disable,
                    dynamic_ncols=True)
    return LineProgress(total=total, desc=desc, initial=initial, unit=unit, disable=disable)
