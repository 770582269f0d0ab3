"""Publishing saved files: one target, or every output of a node, all new or all old.

A save writes a hidden *staging* sibling of its target (``.<name>.tmp-<pid>-<hex>``, a file
or a model directory) and flushes it to disk; :func:`publish` then puts it in place.

* One file: ``os.replace`` over the target, which POSIX makes atomic.
* Anything more (the outputs of one node, :class:`OutputSet`; or a directory, which cannot be
  renamed over a non-empty one): a *journal* ``.publish-<pid>-<hex>.json`` listing every
  (staged, target) pair is written, atomically, in the first target's directory; then each
  staged path is renamed into place (a directory target is first moved aside to
  ``.<name>.old-<pid>-<hex>``); then the journal is deleted, then the old directories.

A kill before the journal exists leaves only staging files: every target still holds the
old set, and the staging files are swept. A kill after it leaves the journal, and
:func:`recover` finishes the renames (roll forward: every staged file was complete before
the journal was written, so the new set is whole). The writer holds an exclusive ``flock``
on its journal until it is done, so recovery never touches a set that a live process is
still publishing. Staging files are swept only when the process named in them has ended.
Recovery and sweeping run at the next save or load of a target in that directory
(:func:`settle`), and for every output directory of a pipeline before it runs
(:class:`tirl.publish_hook.OutputSetHook`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: journals are recovered by age alone
    fcntl = None  # type: ignore[assignment]

from tirl.core.files import fsync_quietly, remove_path, staging_path, sweep_staging, unique_tag

log = logging.getLogger(__name__)

_JOURNAL = re.compile(r"^\.publish-\d+-[0-9a-f]{8}\.json$")


@dataclass(frozen=True)
class Entry:
    """One staged save: ``staged`` becomes ``target``."""

    target: Path
    staged: Path

    @property
    def is_dir(self) -> bool:
        return self.staged.is_dir()


def _roll_forward(entries: Iterable[Entry], old: dict[Path, Path]) -> None:
    """Rename each staged path still present into place (idempotent: safe to repeat)."""
    for e in entries:
        if not os.path.lexists(e.staged):
            continue  # already in place
        if e.is_dir:
            if os.path.lexists(e.target):
                aside = old[e.target]
                if os.path.lexists(aside):  # moved aside before: this is a stray copy
                    remove_path(e.target)
                else:
                    os.rename(e.target, aside)
            os.rename(e.staged, e.target)
        else:
            os.replace(e.staged, e.target)
    for parent in {e.target.parent for e in entries}:
        fsync_quietly(parent)


def _write_journal(entries: list[Entry], old: dict[Path, Path]) -> tuple[Path, int]:
    """Write the journal atomically; return its path and an fd holding its lock."""
    where = entries[0].target.parent
    journal = where / f".publish-{unique_tag()}.json"
    rel = lambda p: os.path.relpath(p, where)  # noqa: E731 - a project may be moved
    body = json.dumps({"entries": [{"target": rel(e.target), "staged": rel(e.staged),
                                    "old": rel(old[e.target])} for e in entries]})
    tmp = staging_path(journal)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, body.encode("utf-8"))
    os.fsync(fd)
    os.replace(tmp, journal)
    fsync_quietly(where)
    return journal, fd


def publish_entries(entries: list[Entry]) -> None:
    """Put every staged path of ``entries`` in place, as one set (see the module docstring)."""
    if not entries:
        return
    if len(entries) == 1 and not entries[0].is_dir:
        e = entries[0]
        os.replace(e.staged, e.target)
        fsync_quietly(e.target.parent)
        return
    old = {e.target: staging_path(e.target, "old") for e in entries}
    journal, fd = _write_journal(entries, old)
    try:
        _roll_forward(entries, old)
        journal.unlink()
    finally:
        os.close(fd)
    for aside in old.values():
        if os.path.lexists(aside):
            remove_path(aside)


def recover(directory: Path) -> None:
    """Finish every set whose writer died after writing its journal in ``directory``."""
    if not directory.is_dir():
        return
    for journal in sorted(p for p in directory.iterdir() if _JOURNAL.match(p.name)):
        try:
            fd = os.open(journal, os.O_RDONLY)
        except FileNotFoundError:
            continue  # finished meanwhile
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is alive and still publishing
            if not journal.exists():
                continue
            items = json.loads(journal.read_text(encoding="utf-8"))["entries"]
            at = lambda rel: Path(os.path.normpath(directory / rel))  # noqa: E731
            entries = [Entry(at(i["target"]), at(i["staged"])) for i in items]
            old = {e.target: at(i["old"]) for e, i in zip(entries, items)}
            log.warning("finishing an interrupted publish of %s",
                        ", ".join(str(e.target) for e in entries))
            _roll_forward(entries, old)
            journal.unlink(missing_ok=True)
            for aside in old.values():
                if os.path.lexists(aside):
                    remove_path(aside)
        finally:
            os.close(fd)


def sweep(directory: Path, name: str | None = None) -> None:
    """Remove staging files and directories (of target ``name``, or of any target) that a
    process which has ended left in ``directory``. Run :func:`recover` first: a journal's
    staged files are what it rolls forward."""
    # A journal's own staging file (killed while the journal was written) goes with any
    # target's sweep: that set never started, so nothing else refers to it.
    owned = None if name is None else (lambda n: n == name or bool(_JOURNAL.match(n)))
    sweep_staging(directory, owned)


def settle(target: Path) -> None:
    """Recover interrupted sets in ``target``'s directory, then sweep its leftovers."""
    recover(target.parent)
    sweep(target.parent, target.name)


# --- output sets ---------------------------------------------------------------------------

_lock = threading.Lock()
_open_sets: dict[Path, OutputSet] = {}


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


class OutputSet:
    """The targets of one node's outputs: while it is open, a save of any of them is staged,
    and :meth:`commit` publishes all of them together (:func:`publish_entries`)."""

    def __init__(self, targets: Iterable[Path]) -> None:
        self.targets = tuple(dict.fromkeys(_key(Path(t)) for t in targets))
        self._staged: dict[Path, Entry] = {}

    def open(self) -> OutputSet:
        with _lock:
            busy = [t for t in self.targets if t in _open_sets]
            if busy:
                raise RuntimeError(f"{busy[0]} is already an output of an open set")
            _open_sets.update({t: self for t in self.targets})
        return self

    def _close(self) -> list[Entry]:
        with _lock:
            for t in self.targets:
                if _open_sets.get(t) is self:
                    del _open_sets[t]
            staged, self._staged = list(self._staged.values()), {}
        return staged

    def stage(self, entry: Entry) -> None:
        with _lock:
            previous = self._staged.pop(entry.target, None)
            self._staged[entry.target] = entry
        if previous is not None:
            remove_path(previous.staged)

    def commit(self) -> None:
        publish_entries(self._close())

    def abort(self) -> None:
        for entry in self._close():
            remove_path(entry.staged)


def publish(target: Path, staged: Path) -> None:
    """Put ``staged`` in place of ``target``: now, or at the commit of the open
    :class:`OutputSet` that ``target`` belongs to."""
    entry = Entry(_key(target), _key(staged))
    with _lock:
        output_set = _open_sets.get(entry.target)
    if output_set is not None:
        output_set.stage(entry)
    else:
        publish_entries([entry])
