"""Project hooks on the MLflow run that kedro-mlflow opens.

- :class:`RunTagsHook`: every run is tagged with the git commit (and whether the tree was
  dirty), the hash of ``dvc.lock``, the pipeline name and the command as typed, so a number
  in the MLflow UI can be traced back to the exact code, data and command that produced it.
- :class:`NodeResourcesHook`: every node's wall time and the process's peak memory after it,
  so the node that sets a run's memory peak can be read off the run.
- :class:`SecretsHook`: a key in the parameters stops the run before anything is logged;
  keys come from Kedro's credentials (or the environment) and are redacted everywhere.
- :class:`RunStatusHook`: a run ended by SIGTERM, SIGINT or an exit that skips Kedro's
  error path is marked KILLED, not left RUNNING (Kedro's error path marks it FAILED).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from tirl import tracking
from tirl.core import secrets
from tirl.core.config import ConfigError

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
    def before_pipeline_run(self, run_params: dict[str, Any], catalog: Any) -> None:
        tags = lineage_tags(self._project_path)
        tags.update(tracking.subject_tags(_param(catalog, "model_init"), _param(catalog, "data_prep")))
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name")]
        tags["pipeline"] = ",".join(n for n in names if n) or "__default__"
        tags["kedro_env"] = run_params.get("env") or "local"
        # kedro-mlflow tags the runner with its object repr and rebuilds the command from a
        # few run_params (no --env, no --params): the class name and the command as typed.
        tags["runner"] = runner_name(run_params.get("runner"))
        tags["kedro_command"] = command_line(sys.argv)
        tracking.set_tags(tags)


def _param(catalog: Any, name: str) -> Mapping[str, Any]:
    """``params:<name>`` of the run's catalog, or ``{}`` when the project has none."""
    try:
        value = catalog.load(f"params:{name}")
    except Exception:  # noqa: BLE001 - a tag is never worth failing a run for
        return {}
    return value if isinstance(value, Mapping) else {}


def runner_name(runner: Any) -> str:
    """``SequentialRunner`` for a runner, its class or its repr ``<kedro...SequentialRunner
    object at 0x...>``."""
    if runner is None:
        return "unknown"
    if not isinstance(runner, str):
        return runner.__name__ if isinstance(runner, type) else type(runner).__name__
    match = re.search(r"([A-Za-z_][A-Za-z0-9_]*) object at 0x", runner)
    return match.group(1) if match else runner.rsplit(".", 1)[-1]


def command_line(argv: list[str]) -> str:
    """The command as typed, with the program as its base name (``kedro run --env=test
    --params ...``); values that hold keys are redacted by :func:`tracking.set_tags`."""
    if not argv:
        return "unknown"
    return shlex.join([Path(argv[0]).name, *argv[1:]])


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


class SecretsHook:
    """Keys never travel in the parameters, and come from Kedro's credentials.

    Parameters are logged to MLflow by kedro-mlflow (every ``params:*`` input, and the
    ``runtime_params`` tag of ``--params``), copied into outputs and tracked by DVC: a key
    there would be stored in plain text in all of them. Redacting each of those sinks would
    mean patching kedro-mlflow and finding every future one, so a secret-looking parameter
    is refused instead, once the catalog exists and before the MLflow run starts
    (``after_catalog_created`` precedes ``before_pipeline_run``), naming the key and where
    the value goes instead (:data:`tirl.core.secrets.WHERE`). The Kedro credentials are then
    handed to :mod:`tirl.core.secrets`, where a judge finds its entry by name and redaction
    learns every value.
    """

    @hook_impl
    def after_catalog_created(self, conf_creds: Mapping[str, Any] | None,
                              parameters: Mapping[str, Any]) -> None:
        found = secrets.secret_parameters(parameters)
        if found:
            raise ConfigError(
                f"{', '.join(found)}: a secret in the parameters would be stored in plain text "
                f"(MLflow params and tags, outputs, dvc.lock); {secrets.WHERE}")
        secrets.provide_credentials(conf_creds)

    @hook_impl
    def on_pipeline_error(self, error: BaseException) -> None:
        # The CLI prints this exception last; its log lines are redacted where they are made.
        secrets.scrub_exception(error)


class RunStatusHook:
    """Marks the pipeline's MLflow run (and any child run still open) KILLED when SIGTERM,
    SIGINT or an exit ends the process before Kedro's end- or error-path runs.

    Without it a SIGTERM leaves the run RUNNING forever, and a Ctrl-C or ``sys.exit`` marks
    it FINISHED (MLflow's own exit handler). The handlers are installed only while the
    pipeline runs (and only from the main thread, where Python delivers signals); after
    marking the run they hand the signal on to the handler that was there before, so
    SIGINT still raises ``KeyboardInterrupt`` and SIGTERM still ends the process at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._run_id: str | None = None
        self._previous: dict[int, Any] = {}
        self._exit_registered = False

    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self) -> None:
        self._run_id = tracking.active_run_id()
        if self._run_id is None:
            return
        if not self._exit_registered:
            # Registered after MLflow's own handler, so it runs before it (atexit is LIFO).
            atexit.register(self._on_exit)
            self._exit_registered = True
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                previous = signal.getsignal(signum)
                if previous is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._on_signal)

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self) -> None:
        self._finish()

    @hook_impl(tryfirst=True)  # kedro-mlflow's own hook then marks the run FAILED
    def on_pipeline_error(self) -> None:
        self._finish()

    def _finish(self) -> None:
        self._run_id = None
        while self._previous:
            signum, previous = self._previous.popitem()
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def _end_killed(self) -> None:
        if self._run_id is not None:
            tracking.end_runs(self._run_id, "KILLED")

    def _on_exit(self) -> None:
        self._end_killed()
        self._run_id = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.warning("%s: marking MLflow run %s KILLED", signal.Signals(signum).name,
                       self._run_id)
        self._end_killed()
        previous = self._previous.get(signum)
        self._finish()
        if callable(previous):
            previous(signum, frame)  # SIGINT: default_int_handler raises KeyboardInterrupt
            return
        # SIG_DFL: die of the signal, as without this hook (exit status -signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
