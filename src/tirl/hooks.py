"""Project hooks on the MLflow run that kedro-mlflow opens.

- :class:`RunTagsHook`: every run is tagged with the git commit (and whether the tree was
  dirty), the hash of ``dvc.lock`` and the pipeline name, so a number in the MLflow UI can be
  traced back to the exact code and data that produced it.
- :class:`NodeResourcesHook`: every node's wall time and the process's peak memory after it,
  so the node that sets a run's memory peak can be read off the run.
"""

from __future__ import annotations

import hashlib
import logging
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from tirl import tracking

logger = logging.getLogger(__name__)


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def lineage_tags(project_path: Path) -> dict[str, str]:
    """Tags that identify code and data: git commit/dirty flag and the dvc.lock hash."""
    tags: dict[str, str] = {}
    sha = _git("rev-parse", "HEAD", cwd=project_path)
    if sha:
        tags["git_commit"] = sha
        status = _git("status", "--porcelain", "--untracked-files=no", cwd=project_path)
        tags["git_dirty"] = str(bool(status))
    else:  # not a git checkout (an unpacked release, a scratch copy): say so explicitly
        tags["git_commit"] = "unknown"
    lock = project_path / "dvc.lock"
    tags["dvc_lock_hash"] = (hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
                             if lock.exists() else "none")
    return tags


class RunTagsHook:
    """Adds lineage tags once kedro-mlflow has started the run (hence ``trylast``)."""

    def __init__(self) -> None:
        self._project_path = Path.cwd()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project_path = Path(context.project_path)

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        tags = lineage_tags(self._project_path)
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name")]
        tags["pipeline"] = ",".join(n for n in names if n) or "__default__"
        tags["kedro_env"] = run_params.get("env") or "local"
        tracking.set_tags(tags)


def peak_rss_mb() -> float:
    """The process's resident-memory high-water mark so far, in MiB.

    Linux: ``VmHWM`` of this process's address space. ``ru_maxrss`` is not used there
    because a child inherits its parent's high-water mark through fork+exec, so a small
    process started from a big one would report the big one's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes | KiB


_MLFLOW_UNSAFE = re.compile(r"[^0-9A-Za-z_.\- /]")


def node_metric_key(node_name: str, metric: str) -> str:
    """``node/<name>/<metric>`` with the characters MLflow refuses in keys replaced by ``_``."""
    return f"node/{_MLFLOW_UNSAFE.sub('_', node_name)}/{metric}"


class NodeResourcesHook:
    """Logs each node's seconds and the process peak RSS after it (``node/<name>/...``).

    The peak is a high-water mark, so the first node whose ``peak_rss_mb`` reaches the run's
    final ``process/peak_rss_mb`` is the one that set it; ``rss_rise_mb`` says by how much
    that node raised it.
    """

    def __init__(self) -> None:
        self._started: dict[str, tuple[float, float]] = {}

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        self._started[node.name] = (time.perf_counter(), peak_rss_mb())

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        start, peak_before = self._started.pop(node.name, (time.perf_counter(), peak_rss_mb()))
        seconds, peak = time.perf_counter() - start, peak_rss_mb()
        logger.info("node %s: %.1f s, process peak RSS %.0f MiB (+%.0f)", node.name, seconds,
                    peak, peak - peak_before)
        tracking.log_metrics({node_metric_key(node.name, "seconds"): seconds,
                              node_metric_key(node.name, "peak_rss_mb"): peak,
                              node_metric_key(node.name, "rss_rise_mb"): peak - peak_before})

    @hook_impl(tryfirst=True)  # before kedro-mlflow's own hook ends the run
    def after_pipeline_run(self) -> None:
        tracking.log_metrics({"process/peak_rss_mb": peak_rss_mb()})
