"""Atomic saves for any file-based Kedro dataset.

Kedro's file datasets write in place, so a crash (or a Ctrl-C) mid-save leaves a truncated
Parquet/CSV/JSON file behind and the previous good version is gone. :class:`AtomicDataset`
wraps such a dataset: it saves to a hidden temporary sibling, flushes it to disk and renames
it over the target, which POSIX makes atomic. Readers see the old file or the new one, never
half of one.

Catalog::

    questions:
      type: tirl.datasets.atomic.AtomicDataset
      dataset:
        type: pandas.ParquetDataset
        filepath: data/03_primary/questions.parquet
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``target`` to write; publish it over ``target``.

    When the ``with`` body returns, the temporary file is flushed to disk and renamed over
    ``target``; when it raises, the temporary file is removed and ``target`` is untouched.
    The sibling lives in the same directory so that the rename never crosses file systems.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


class AtomicDataset(AbstractDataset[Any, Any]):
    """Wraps a dataset config whose ``filepath`` is a local file; saves atomically."""

    def __init__(self, dataset: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        if "filepath" not in dataset:
            raise ValueError("AtomicDataset: the wrapped dataset needs a 'filepath'")
        self._config = copy.deepcopy(dataset)
        self._filepath = Path(dataset["filepath"])
        self._inner = AbstractDataset.from_config("inner", copy.deepcopy(dataset))
        self.metadata = metadata

    def load(self) -> Any:
        return self._inner.load()

    def save(self, data: Any) -> None:
        with atomic_file(self._filepath) as tmp:
            writer = AbstractDataset.from_config("tmp", {**copy.deepcopy(self._config),
                                                         "filepath": str(tmp)})
            writer.save(data)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "dataset": self._config.get("type")}
