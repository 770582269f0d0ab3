"""Results and measurements: what a run computed, and how long it took.

A stage's tracked outputs (DVC outs: histories, metrics files) are a function of code,
parameters and data, so that rerunning the same command reproduces them byte for byte and
``dvc status`` can tell a changed result from a rerun. Wall-clock figures (seconds, tokens
per second) differ on every run: they are split off into files of their own, which DVC does
not track, and into MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Key prefixes and suffixes of wall-clock measurements (``time/rollout_s``,
#: ``perf/tokens_per_s``, ``sft/train_seconds``, ``sft/tokens_per_s``).
MEASUREMENT_PREFIXES = ("time/", "perf/")
MEASUREMENT_SUFFIXES = ("_seconds", "tokens_per_s")


def is_measurement(key: str) -> bool:
    """Whether ``key`` names a wall-clock measurement (the namespace is ignored:
    ``rl/time/step_s`` and ``time/step_s`` alike)."""
    leaf = key.split("/", 1)[1] if key.startswith(("rl/", "sft/")) else key
    return leaf.startswith(MEASUREMENT_PREFIXES) or key.endswith(MEASUREMENT_SUFFIXES)


def split_measurements(record: Mapping[str, Any], keep: Sequence[str] = ("step",)
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(results, measurements)`` of one record; the keys of ``keep`` (the step) go to
    both, so a measurement row still says which step it timed."""
    results = {k: v for k, v in record.items() if not is_measurement(k)}
    measured = {k: v for k, v in record.items() if is_measurement(k) or k in keep}
    return results, measured
