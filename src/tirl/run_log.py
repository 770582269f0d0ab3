"""How a ``kedro run`` reads in a log file, and the last thing it says.

- When the console is not a terminal (``make run > log``, CI, ``nohup``), Kedro's Rich
  handler wraps every record at 80 columns, breaking dataset and node names mid-word. There
  the root logger's Rich handlers are replaced by plain one-line records on the same stream.
  (``conf/logging.yml`` cannot choose by terminal, and Kedro only trusts handler classes from
  ``logging`` and ``kedro.logging``, so the swap is done here.) Progress bars make the same
  choice: :mod:`tirl.core.progress`.
- Every successful run ends with a summary: the reports and models it wrote, and the MLflow
  run that holds its parameters and curves, with the command that opens the UI.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from tirl import tracking
from tirl.core.progress import is_terminal
from tirl.hooks import command_line

logger = logging.getLogger("tirl.run")

PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: Where a run's results live, in the order the summary lists them.
RESULT_LAYERS = ("data/08_reporting", "data/06_models", "data/07_model_output")


def _rich_stream(handler: logging.Handler) -> Any:
    console = getattr(handler, "console", None)
    return getattr(console, "file", None) if console is not None else None


def plain_console_logging(root: logging.Logger | None = None) -> int:
    """Replace each Rich handler of ``root`` whose stream is not a terminal by a plain
    ``StreamHandler`` on that stream (same level); return how many were replaced."""
    root = root if root is not None else logging.getLogger()
    replaced = 0
    for handler in list(root.handlers):
        stream = _rich_stream(handler)
        if stream is None or is_terminal(stream):
            continue
        plain = logging.StreamHandler(stream)
        plain.setLevel(handler.level)
        plain.setFormatter(logging.Formatter(PLAIN_FORMAT))
        for f in handler.filters:
            plain.addFilter(f)
        root.removeHandler(handler)
        root.addHandler(plain)
        replaced += 1
    return replaced


def result_paths(targets: Iterable[Path], project_path: Path) -> list[str]:
    """The output paths under :data:`RESULT_LAYERS`, relative to the project, reports first."""
    by_layer: dict[str, list[str]] = {layer: [] for layer in RESULT_LAYERS}
    for target in targets:
        path = Path(target)
        rel = path.relative_to(project_path) if path.is_absolute() and \
            path.is_relative_to(project_path) else path
        for layer in RESULT_LAYERS:
            if str(rel).startswith(layer + "/"):
                by_layer[layer].append(str(rel))
                break
    # The comparison report first: it is the file a user opens.
    return [p for layer in RESULT_LAYERS
            for p in sorted(set(by_layer[layer]), key=lambda q: (not q.endswith("comparison.md"), q))]


def summary_lines(paths: list[str], run_id: str | None, tracking_uri: str | None,
                  *, max_paths: int = 12) -> list[str]:
    lines = ["Run finished. Results:"]
    lines += [f"  {p}" for p in paths[:max_paths]]
    if len(paths) > max_paths:
        lines.append(f"  ... and {len(paths) - max_paths} more under "
                     f"{', '.join(sorted({'/'.join(p.split('/')[:2]) for p in paths[max_paths:]}))}")
    if not paths:
        lines.append("  (no files under data/)")
    if run_id:
        uri = tracking_uri or "sqlite:///mlflow.db"
        lines.append(f"MLflow run {run_id}: `mlflow ui --backend-store-uri {uri}` "
                     "(or `make mlflow-ui`), then open http://127.0.0.1:5000")
    return lines


def run_description(paths: list[str], *, max_paths: int = 12) -> str:
    """The MLflow run's description (Markdown): the command and the files it wrote, report
    first, so the run page says where its results are."""
    lines = [f"`{command_line(sys.argv)}`", "", "Results:"]
    lines += [f"- `{p}`" for p in paths[:max_paths]]
    if len(paths) > max_paths:
        lines.append(f"- ... and {len(paths) - max_paths} more")
    return "\n".join(lines)


class RunLogHook:
    """Plain log records off a terminal, and the run's closing summary."""

    def __init__(self) -> None:
        self._run_id: str | None = None
        self._project_path = Path.cwd()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project_path = Path(context.project_path)
        plain_console_logging()
        if not is_terminal():
            # transformers draws its own bars (loading weights, writing shards).
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self) -> None:
        self._run_id = tracking.active_run_id()

    @hook_impl
    def after_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        targets = []
        for name in sorted(pipeline.all_outputs()):
            try:
                dataset = catalog.get(name)
            except Exception:  # noqa: BLE001 - a summary must never fail a finished run
                dataset = None
            # Not publish_hook.publish_target: it leaves out the MLflow artifact datasets,
            # and those hold the reports.
            target = getattr(dataset, "publish_target", None)
            if target is not None:
                targets.append(Path(target))
        paths = result_paths(targets, self._project_path)
        if self._run_id is not None:
            tracking.describe_run(self._run_id, run_description(paths))
        for line in summary_lines(paths, self._run_id, tracking.tracking_uri()):
            logger.info(line)


__all__ = ["RunLogHook", "plain_console_logging", "result_paths", "summary_lines"]
