"""The one module (besides hooks) that talks to MLflow.

Core code never imports mlflow: it receives an ``on_metrics(metrics, step)`` callback. This
module builds such callbacks and opens child runs for variants, and degrades to logging only
when no MLflow run is active (e.g. plain pytest of a node).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import mlflow

logger = logging.getLogger(__name__)

MetricsCallback = Callable[[Mapping[str, float], int], None]


def _active() -> bool:
    return mlflow.active_run() is not None


def set_tags(tags: Mapping[str, str]) -> None:
    if _active():
        mlflow.set_tags(dict(tags))


def make_metrics_logger(prefix: str = "") -> MetricsCallback:
    """A callback that logs a step's finite scalar metrics to the active run.

    ``prefix`` namespaces the keys (e.g. ``"sft/"``) so stages do not collide in one run.
    """

    def on_metrics(metrics: Mapping[str, float], step: int) -> None:
        clean = {f"{prefix}{k}": float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v))}
        if _active():
            mlflow.log_metrics(clean, step=step)
        else:
            logger.debug("step %d: %s", step, clean)

    return on_metrics


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log final (non per-step) scalar metrics, e.g. evaluation results."""
    make_metrics_logger()(metrics, step if step is not None else 0)


def flatten(params: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


@contextlib.contextmanager
def child_run(name: str, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run the body inside a child run named ``name`` (nested under the active run).

    When the active run already *is* this variant (a standalone ``kedro run
    --pipeline=<variant>``), no child is opened: one variant, one run.
    """
    active = mlflow.active_run()
    if active is None or active.data.tags.get("mlflow.runName") == name:
        if active is not None:
            set_tags({"variant": name, **(tags or {})})
        yield
        return
    parent_tags = {k: v for k, v in active.data.tags.items() if not k.startswith("mlflow.")}
    with mlflow.start_run(run_name=name, nested=True):
        mlflow.set_tags({**parent_tags, "variant": name, **(tags or {})})
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        yield
