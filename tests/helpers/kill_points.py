"""Fault injection for save tests: run a function in a forked child that SIGKILLs itself at
its k-th write point, then look at what it left on disk.

A *write point* is a filesystem mutation seen by Python's audit hooks (``open`` for writing,
rename/replace, remove, mkdir, rmdir, rmtree) or a ``write`` call on a file object (seen by
a profile function), so a kill lands between two renames of a set as well as in the middle of
a file's bytes. Writes done inside C++ or Rust (pyarrow's Parquet writer, safetensors) are
not points of their own; the points around them are.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

_AUDITED = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _is_write_open(args: tuple) -> bool:
    path, mode, flags = (tuple(args) + (None, None, None))[:3]
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _install(kill_at: int | None, kinds: list[str]) -> None:
    def point(kind: str) -> None:
        kinds.append(kind)
        if kill_at is not None and len(kinds) >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def audit(event: str, args: tuple) -> None:
        if event in _AUDITED or (event == "open" and _is_write_open(args)):
            point("fs")

    def profile(frame, event, arg) -> None:  # noqa: ANN001
        if event == "c_return" and getattr(arg, "__name__", "") in ("write", "writelines"):
            point("write")

    sys.addaudithook(audit)
    sys.setprofile(profile)


def _private_locks() -> None:
    """In the child: tqdm's write lock is a *process-shared* semaphore (multiprocessing), so a
    child killed inside a progress bar (``save_pretrained`` shows one) would leave it held and
    the parent would wait forever at its next bar; another parent thread (tqdm's monitor) may
    also hold it at the fork. The child gets private locks of its own instead."""
    tqdm_std = sys.modules.get("tqdm.std")
    if tqdm_std is None:
        return
    import threading

    classes, todo = [], [tqdm_std.tqdm]
    while todo:
        cls = todo.pop()
        classes.append(cls)
        todo.extend(cls.__subclasses__())
    for cls in classes:
        if cls is tqdm_std.tqdm or "_lock" in cls.__dict__:
            cls._lock = threading.RLock()


def run_forked(fn: Callable[[], None], kill_at: int | None = None,
               hang_s: float = 600.0) -> tuple[int, list[str]]:
    """Run ``fn`` in a forked child, killed at write point ``kill_at`` (1-based; None: never).

    Returns ``(-signal or exit status, kinds)``: the kind of each write point passed (``fs``
    or ``write``), known only when the child was not killed (empty otherwise). A child still
    running after ``hang_s`` is killed and reported as hung (a deadlock guard, not a timing).
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        code = 0
        kinds: list[str] = []
        try:
            _private_locks()
            _install(kill_at, kinds)
            fn()
        except BaseException:  # noqa: BLE001 - report, do not unwind into pytest
            import traceback

            traceback.print_exc()
            code = 3
        sys.setprofile(None)
        os.write(write, ",".join(kinds).encode())
        os._exit(code)
    os.close(write)
    deadline = time.monotonic() + hang_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            raise AssertionError(f"the forked save hung (kill point {kill_at})")
        time.sleep(0.02)
    with os.fdopen(read) as pipe:
        passed = pipe.read()
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status), []
    return os.WEXITSTATUS(status), passed.split(",") if passed else []


def kill_points(fn: Callable[[], None], *, writes: int = 12, seed: int = 0) -> list[int]:
    """The write points of ``fn`` to kill at: every filesystem point (open, rename, remove,
    mkdir: where a set of files is published), and ``writes`` of its ``write`` calls drawn
    with ``seed`` (the middle of a file's bytes), plus the last point."""
    code, kinds = run_forked(fn)
    assert code == 0 and kinds, f"dry run failed (status {code}, {len(kinds)} write points)"
    fs = [i + 1 for i, k in enumerate(kinds) if k == "fs"]
    chunks = [i + 1 for i, k in enumerate(kinds) if k == "write"]
    drawn = random.Random(seed).sample(chunks, min(writes, len(chunks)))
    return sorted({*fs, *drawn, len(kinds)})


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) -> its bytes; directories as ``/`` keys."""
    out: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel + ("/" if path.is_dir() else "")] = b"" if path.is_dir() else path.read_bytes()
    return out
