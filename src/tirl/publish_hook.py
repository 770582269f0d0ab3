"""A node's outputs are published as a set: all new or all old (:class:`OutputSetHook`).

Kedro saves a node's outputs one after the other, after the node returns (and after
``after_node_run``), so a run killed between two saves would leave, say, a new
``questions.parquet`` beside the old corpus. Here, before a node runs, its outputs that our
datasets write (:class:`~tirl.datasets.atomic.AtomicDataset`,
:class:`~tirl.datasets.trajectories.TrajectoryDataset`,
:class:`~tirl.datasets.hf_model.HFModelDataset`) join one
:class:`~tirl.datasets.publish.OutputSet`: each save is staged, and the set is published
with a journal once the node's last output is saved (:mod:`tirl.datasets.publish` says how
a kill at any point is rolled forward or back). A node that fails, or a save that raises,
discards the staged files: the previous outputs stay.

Before the pipeline runs, every output directory of it is settled: interrupted sets are
finished and the staging files and ``.old-*`` model copies of killed runs are removed.

Two kinds of output publish on their own, at their save, atomically: MLflow artifacts
(kedro-mlflow's ``MlflowArtifactDataset`` logs the file at the target path right after the
save, so it must be in place by then: reports, histories, samples), and the outputs of a
node with a single persisted output. Under ``ParallelRunner`` with the ``spawn`` start
method the workers do not see the catalog here, and each file is atomic on its own.
"""

from __future__ import annotations

import inspect
import logging
import threading
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from tirl.datasets.publish import OutputSet, recover, sweep

log = logging.getLogger(__name__)


def publish_target(dataset: Any) -> Path | None:
    """The path a dataset's save publishes, when that save can join an output set."""
    if dataset is None or hasattr(type(dataset), "_logging_activated"):
        return None  # kedro-mlflow's artifact wrapper: logged from the target path at save
    target = getattr(dataset, "publish_target", None)
    return Path(target) if target is not None else None


class OutputSetHook:
    """Stages the persisted outputs of each node and publishes them together."""

    def __init__(self) -> None:
        self._catalog: Any = None
        self._lock = threading.Lock()
        self._open: dict[str, tuple[OutputSet, set[str]]] = {}

    def _target(self, name: str) -> Path | None:
        if self._catalog is None or name.startswith("params:") or name == "parameters":
            return None
        return publish_target(self._catalog.get(name))

    @hook_impl
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        self._catalog = catalog
        targets = [t for t in (self._target(n) for n in sorted(pipeline.datasets())) if t]
        for directory in sorted({t.parent for t in targets}):
            recover(directory)
            sweep(directory)

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        if inspect.isgeneratorfunction(node.func):
            return  # saved chunk by chunk: there is no last save to publish at
        targets = [t for t in (self._target(n) for n in node.outputs) if t]
        if len(targets) < 2:
            return
        output_set = OutputSet(targets).open()
        with self._lock:
            self._open[node.name] = (output_set, set(node.outputs))

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node: Any) -> None:
        with self._lock:
            entry = self._open.get(node.name)
            if entry is None:
                return
            entry[1].discard(dataset_name)
            if entry[1]:
                return
            del self._open[node.name]
        entry[0].commit()
        log.info("published the outputs of %s together", node.name)

    def _abort(self, names: list[str]) -> None:
        with self._lock:
            entries = [self._open.pop(n) for n in names if n in self._open]
        for output_set, _ in entries:
            output_set.abort()

    @hook_impl
    def on_node_error(self, node: Any) -> None:
        self._abort([node.name])

    @hook_impl
    def on_pipeline_error(self) -> None:
        # A save that raised ends the run without on_node_error: drop what is staged.
        with self._lock:
            names = list(self._open)
        self._abort(names)

    @hook_impl
    def after_pipeline_run(self) -> None:
        with self._lock:
            names = list(self._open)
        self._abort(names)
