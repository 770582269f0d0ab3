"""Atomic saves for any file-based Kedro dataset, and the staging every dataset here uses.

Kedro's file datasets write in place, so a crash (or a Ctrl-C) mid-save leaves a truncated
Parquet/CSV/JSON file behind and the previous good version is gone. :class:`AtomicDataset`
wraps such a dataset: it saves to a hidden temporary sibling, flushes it to disk and
publishes it over the target (:mod:`tirl.datasets.publish`): at once, by a rename, which POSIX
makes atomic; or, when the target is one of several outputs of a node, together with the
others once the node's last output is saved (:class:`tirl.publish_hook.OutputSetHook`).
Readers see the old file or the new one, never half of one, and a node's outputs are all old
or all new. :func:`atomic_file` and :func:`atomic_dir` are the same for a dataset's own
writer (trajectory tables, model directories).

Catalog::

    questions:
      type: tirl.datasets.atomic.AtomicDataset
      dataset:
        type: pandas.ParquetDataset
        filepath: data/03_primary/questions.parquet
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from tirl.core.files import fsync_tree, remove_path, staging_path
from tirl.datasets.publish import publish, settle


@contextmanager
def _staged(target: Path, make: bool) -> Iterator[Path]:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    settle(target)  # finish or sweep what an interrupted earlier save left
    tmp = staging_path(target)
    if make:
        tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
    except BaseException:
        remove_path(tmp)
        raise
    publish(target, tmp)


def atomic_file(target: Path) -> Iterator[Path]:
    """Context manager: yield a hidden temporary sibling of ``target`` to write; publish it.

    When the ``with`` body returns, the temporary file is flushed to disk and published over
    ``target`` (:func:`tirl.datasets.publish.publish`); when it raises, the temporary file is
    removed and ``target`` is untouched.
    """
    return _staged(target, make=False)


def atomic_dir(target: Path) -> Iterator[Path]:
    """:func:`atomic_file` for a directory: yields a new empty directory to fill."""
    return _staged(target, make=True)


class AtomicDataset(AbstractDataset[Any, Any]):
    """Wraps a dataset config whose ``filepath`` is a local file; saves atomically."""

    def __init__(self, dataset: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        if "filepath" not in dataset:
            raise ValueError("AtomicDataset: the wrapped dataset needs a 'filepath'")
        self._config = copy.deepcopy(dataset)
        self._filepath = Path(dataset["filepath"])
        self._inner = AbstractDataset.from_config("inner", copy.deepcopy(dataset))
        self.metadata = metadata

    @property
    def publish_target(self) -> Path:
        """The file a save publishes (what an output set stages)."""
        return self._filepath

    def load(self) -> Any:
        settle(self._filepath)  # a set interrupted mid-publish is finished before a read
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
