"""Flushing written files and directory entries to disk (checkpoints, published outputs)."""

from __future__ import annotations

import os
from pathlib import Path


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
