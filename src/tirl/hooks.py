"""Run-level lineage tags for the MLflow run that kedro-mlflow opens.

Every run is tagged with the git commit (and whether the tree was dirty), the hash of
``dvc.lock`` and the pipeline name, so a number in the MLflow UI can be traced back to the
exact code and data that produced it.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
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
