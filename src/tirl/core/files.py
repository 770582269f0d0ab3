"""Files written safely: flushing to disk (checkpoints, published outputs) and the hidden
*staging* siblings that a save writes before it renames them into place.

A staging path is ``.<name>.<kind>-<pid>-<hex>`` beside its target (same directory: renames
never cross devices). The pid says whose it is, so a leftover is removed only once the
process that wrote it has ended (:func:`sweep_staging`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: ``.<name>.tmp-<pid>-<hex>`` / ``.<name>.old-<pid>-<hex>``; older saves wrote no pid.
STAGING = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")


def fsync_quietly(path: Path) -> None:
    """fsync one file or directory. A directory's fsync makes renames and creations in it
    durable; where the OS cannot open or fsync a directory this is skipped, not an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """:func:`fsync_quietly` a file, or a directory and every file under it."""
    path = Path(path)
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                fsync_quietly(child)
    fsync_quietly(path)


def unique_tag() -> str:
    """``<pid>-<8 hex>``: unique among concurrent writers, and names the writing process."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def staging_path(target: Path, kind: str = "tmp") -> Path:
    """A fresh hidden sibling of ``target`` (``kind``: ``tmp`` for new content, ``old`` for
    a directory moved aside)."""
    return target.with_name(f".{target.name}.{kind}-{unique_tag()}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_staging(directory: Path, owned: Callable[[str], bool] | None = None) -> None:
    """Remove the staging paths in ``directory`` whose writer has ended (or named none), of
    every target or only of the target names ``owned`` accepts."""
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        m = STAGING.match(child.name)
        if not m or (owned is not None and not owned(m.group("name"))):
            continue
        pid = m.group("pid")
        if pid is None or not pid_alive(int(pid)):
            log.info("removing %s, left by an interrupted save", child)
            remove_path(child)
