"""Kedro dataset for ``list[Trajectory]``: one Parquet table, one row per trajectory.

This module is the one place that turns trajectories into a table and back; every stage that
reads or writes trajectories does it through :class:`TrajectoryDataset` in the catalog.

Layout (:data:`TRAJECTORY_SCHEMA`, the fields of :class:`~tirl.core.types.Trajectory` in
order): scalars as columns; ``token_ids``, ``mask``, ``logprobs`` and ``parse_errors`` as
native lists; ``messages``, ``turns`` and ``tool_calls`` as lists of JSON objects, one string
per item (keys sorted). Those three hold dicts whose keys differ from item to item (a tool
call's ``arguments`` follow the tool's schema), which a Parquet struct column cannot hold.
``answer`` is the only nullable column.

With ``scored: true`` each row also carries its :class:`~tirl.core.types.RewardBreakdown`
(:data:`REWARD_SCHEMA`: ``reward``, ``stage``, ``format``, ``quality``, ``exact_match``,
``outcome``) and the data is ``list[tuple[Trajectory, RewardBreakdown]]``. Columns beyond the
ones read are ignored, so a scored table also loads as plain trajectories.

Catalog::

    inspect_rollouts_trajectories:
      type: tirl.datasets.trajectories.TrajectoryDataset
      filepath: data/07_model_output/inspect_rollouts/trajectories.parquet

``save`` writes a temporary sibling and renames it over the file (:func:`atomic_file`), so a
failed or interrupted save leaves the previous table intact (and, as one of several outputs
of a node, it is published with the others). ``load`` checks the table and
names the file, row and column of anything malformed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from kedro.io import AbstractDataset, DatasetError

from tirl.core.types import RewardBreakdown, Trajectory
from tirl.datasets.atomic import atomic_file
from tirl.datasets.publish import settle

TRAJECTORY_SCHEMA = pa.schema([
    pa.field("question_id", pa.string(), nullable=False),
    pa.field("sample_idx", pa.int64(), nullable=False),
    pa.field("prompt_len", pa.int64(), nullable=False),
    pa.field("token_ids", pa.list_(pa.int64()), nullable=False),
    pa.field("mask", pa.list_(pa.int64()), nullable=False),
    pa.field("logprobs", pa.list_(pa.float64()), nullable=False),
    pa.field("messages", pa.list_(pa.string()), nullable=False),
    pa.field("turns", pa.list_(pa.string()), nullable=False),
    pa.field("tool_calls", pa.list_(pa.string()), nullable=False),
    pa.field("answer", pa.string(), nullable=True),
    pa.field("finish_reason", pa.string(), nullable=False),
    pa.field("parse_errors", pa.list_(pa.string()), nullable=False),
])

REWARD_SCHEMA = pa.schema([
    pa.field("reward", pa.float64(), nullable=False),
    pa.field("stage", pa.int64(), nullable=False),
    pa.field("format", pa.float64(), nullable=False),
    pa.field("quality", pa.float64(), nullable=False),
    pa.field("exact_match", pa.float64(), nullable=False),
    pa.field("outcome", pa.float64(), nullable=False),
])

#: Columns whose list items are JSON objects (see the module docstring).
JSON_ITEM_COLUMNS = ("messages", "turns", "tool_calls")

Scored = tuple[Trajectory, RewardBreakdown]


class TrajectoryTableError(ValueError):
    """A table that is not in the trajectory layout; the message names file, row and column."""


def _json_items_out(name: str, rows: list[list[Any]]) -> list[list[str]]:
    out = []
    for row, items in enumerate(rows):
        try:
            out.append([json.dumps(item, ensure_ascii=False, sort_keys=True) for item in items])
        except TypeError as exc:
            raise ValueError(f"trajectory {row}: {name} is not JSON-serialisable ({exc})") from exc
    return out


def _column(fld: pa.Field, values: list[Any]) -> pa.Array:
    for row, value in enumerate(values):
        if (value is None and not fld.nullable) or (isinstance(value, list) and None in value):
            raise ValueError(f"trajectory {row}: {fld.name} is or holds None")
    try:
        return pa.array(values, type=fld.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{fld.name}: not {fld.type} ({exc})") from exc


def trajectory_table(trajectories: list[Trajectory],
                     rewards: list[RewardBreakdown] | None = None) -> pa.Table:
    """The table of ``trajectories`` (and, when given, one reward breakdown per row)."""
    columns = {name: [getattr(t, name) for t in trajectories] for name in TRAJECTORY_SCHEMA.names}
    for name in JSON_ITEM_COLUMNS:
        columns[name] = _json_items_out(name, columns[name])
    schema = TRAJECTORY_SCHEMA
    if rewards is not None:
        if len(rewards) != len(trajectories):
            raise ValueError(f"{len(rewards)} reward breakdowns for {len(trajectories)} "
                             "trajectories")
        columns.update({name: [getattr(r, name) for r in rewards] for name in REWARD_SCHEMA.names})
        schema = pa.schema([*TRAJECTORY_SCHEMA, *REWARD_SCHEMA])
    return pa.Table.from_arrays([_column(fld, columns[fld.name]) for fld in schema], schema=schema)


def _first_bad_row(column: pa.ChunkedArray, type_: pa.DataType) -> str:
    """``"row <i>, "`` for the first value that does not cast to ``type_`` (or ``""`` when the
    column's type itself cannot be cast)."""
    for row in range(len(column)):
        try:
            column.slice(row, 1).cast(type_)
        except pa.ArrowNotImplementedError:
            return ""
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return f"row {row}, "
    return ""


def _checked_columns(table: pa.Table, schema: pa.Schema, source: str) -> dict[str, list[Any]]:
    """The columns of ``schema`` as Python lists, cast to their types; nulls refused."""
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise TrajectoryTableError(f"{source}: missing columns {missing} (expected "
                                   f"{schema.names})")
    out: dict[str, list[Any]] = {}
    for fld in schema:
        column = table.column(fld.name)
        try:
            column = column.cast(fld.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise TrajectoryTableError(f"{source}: {_first_bad_row(column, fld.type)}column "
                                       f"{fld.name!r} is {column.type}, expected {fld.type} "
                                       f"({exc})") from exc
        values = column.to_pylist()
        for row, value in enumerate(values):
            if value is None and not fld.nullable:
                raise TrajectoryTableError(f"{source}: row {row}, column {fld.name!r}: null")
            if isinstance(value, list) and any(v is None for v in value):
                raise TrajectoryTableError(f"{source}: row {row}, column {fld.name!r}: null "
                                           f"item at position {value.index(None)}")
        out[fld.name] = values
    return out


def _json_items(values: list[str], source: str, row: int, column: str) -> list[dict[str, Any]]:
    items = []
    for pos, text in enumerate(values):
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrajectoryTableError(f"{source}: row {row}, column {column!r}, item {pos}: "
                                       f"not JSON ({exc})") from exc
        if not isinstance(item, dict):
            raise TrajectoryTableError(f"{source}: row {row}, column {column!r}, item {pos}: "
                                       f"expected a JSON object, got {type(item).__name__}")
        items.append(item)
    return items


def table_trajectories(table: pa.Table, source: str = "trajectory table") -> list[Trajectory]:
    """Inverse of :func:`trajectory_table` (reward columns and other extras are ignored).

    ``source`` (a file name) starts every error message.
    """
    columns = _checked_columns(table, TRAJECTORY_SCHEMA, source)
    out = []
    for row in range(table.num_rows):
        record = {name: values[row] for name, values in columns.items()}
        for name in JSON_ITEM_COLUMNS:
            record[name] = _json_items(record[name], source, row, name)
        out.append(Trajectory(**record))
    return out


def table_rewards(table: pa.Table, source: str = "trajectory table") -> list[RewardBreakdown]:
    """The reward breakdowns of a scored table, one per row."""
    columns = _checked_columns(table, REWARD_SCHEMA, source)
    return [RewardBreakdown(**{name: values[row] for name, values in columns.items()})
            for row in range(table.num_rows)]


class TrajectoryDataset(AbstractDataset[list, list]):
    """``list[Trajectory]`` (``scored: true``: ``list[tuple[Trajectory, RewardBreakdown]]``)
    as one Parquet file, saved atomically.

    Catalog::

        inspect_rewards_trajectories:
          type: tirl.datasets.trajectories.TrajectoryDataset
          filepath: data/07_model_output/inspect_rewards/trajectories.parquet
          scored: true
    """

    def __init__(self, filepath: str, scored: bool = False,
                 metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self._scored = bool(scored)
        self.metadata = metadata

    @property
    def publish_target(self) -> Path:
        """The file a save publishes (what an output set stages)."""
        return self._filepath

    def load(self) -> list[Trajectory] | list[Scored]:
        settle(self._filepath)
        if not self._filepath.is_file():
            raise DatasetError(f"no trajectory table at {self._filepath}")
        try:
            table = pq.read_table(self._filepath)
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"{self._filepath}: not a readable Parquet file ({exc})") from exc
        trajectories = table_trajectories(table, str(self._filepath))
        if not self._scored:
            return trajectories
        return list(zip(trajectories, table_rewards(table, str(self._filepath))))

    def save(self, data: list[Trajectory] | list[Scored]) -> None:
        if self._scored:
            pairs = list(data)
            if not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
                raise DatasetError(f"{self._filepath}: a scored trajectory table saves "
                                   "(Trajectory, RewardBreakdown) pairs")
            trajectories, rewards = [t for t, _ in pairs], [r for _, r in pairs]
        else:
            trajectories, rewards = list(data), None
        bad = sorted({type(t).__name__ for t in trajectories if not isinstance(t, Trajectory)})
        if bad:
            raise DatasetError(f"{self._filepath}: save() expects Trajectory items, got {bad}")
        try:
            table = trajectory_table(trajectories, rewards)
        except ValueError as exc:
            raise DatasetError(f"{self._filepath}: {exc}") from exc
        with atomic_file(self._filepath) as tmp:
            pq.write_table(table, tmp)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "scored": self._scored}
