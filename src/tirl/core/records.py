"""Table rows -> plain Python records.

Parquet hands nested columns back as numpy arrays (and numbers as numpy scalars); core code
expects lists, dicts and Python numbers (``question.get("facts") or ()`` must not meet an
array). Every stage converts its table rows here, once, at the boundary.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def plain(value: Any) -> Any:
    """numpy arrays and scalars (nested anywhere in lists/dicts) -> plain Python.

    >>> plain({"a": np.array([1, 2]), "b": [np.float32(0.5)]})
    {'a': [1, 2], 'b': [0.5]}
    """
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as plain-Python dicts."""
    return [{k: plain(v) for k, v in rec.items()} for rec in frame.to_dict("records")]


def split_records(questions: pd.DataFrame, split: str, n: int | None = None, *,
                  key: str = "split") -> list[dict[str, Any]]:
    """The first ``n`` (all if None) questions of ``split`` as plain records.

    ``key`` names the parameter in error messages (e.g. ``rollout.split``).
    """
    if "split" not in questions.columns:
        raise ValueError(f"questions: no 'split' column (columns: {list(questions.columns)})")
    chosen = questions[questions["split"] == split]
    if chosen.empty:
        raise ValueError(f"{key}: no questions in split {split!r} "
                         f"(present: {sorted(questions['split'].unique())})")
    return records(chosen.head(n) if n is not None else chosen)
