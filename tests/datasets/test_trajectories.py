"""TrajectoryDataset: the one Parquet layout of list[Trajectory]; round trip, atomic saves,
errors that name the file, row and column."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kedro.io import AbstractDataset, DatasetError

from tirl.core.types import RewardBreakdown, Trajectory
from tirl.datasets.trajectories import (
    REWARD_SCHEMA,
    TRAJECTORY_SCHEMA,
    TrajectoryDataset,
    table_trajectories,
    trajectory_table,
)

FULL = Trajectory(
    question_id="q1", sample_idx=3, prompt_len=2, token_ids=[5, 6, 7, 8, 9],
    mask=[0, 0, 1, 0, 1], logprobs=[0.0, 0.0, -0.25, 0.0, -1.5],
    messages=[{"role": "system", "content": "be brief"},
              {"role": "user", "content": "Wo liegt Mirebrook? \u00e9\u00e8"},
              {"role": "assistant", "content": "<tool_call>{}</tool_call>"},
              {"role": "tool", "content": "Doc 1"}],
    turns=[{"role": "assistant", "start": 2, "end": 3, "parse_errors": []},
           {"role": "tool", "start": 3, "end": 4},
           {"role": "assistant", "start": 4, "end": 5, "parse_errors": ["invalid_json"]}],
    tool_calls=[{"name": "search", "arguments": {"query": "Mirebrook", "top_k": 2},
                 "ok": True, "error": None},
                {"name": "search", "arguments": {}, "ok": False, "error": "missing query"}],
    answer="Norvale", finish_reason="answer", parse_errors=["invalid_json"])
# No answer, no tool calls, no parse errors: the None and empty-list cases.
BARE = Trajectory(question_id="q2", sample_idx=0, prompt_len=1, token_ids=[1, 2], mask=[0, 1],
                  logprobs=[0.0, -0.5], messages=[{"role": "user", "content": "?"}],
                  turns=[{"role": "assistant", "start": 1, "end": 2, "parse_errors": []}],
                  finish_reason="max_turns")
TRAJECTORIES = [FULL, BARE]
REWARDS = [RewardBreakdown(reward=1.0, stage=2, format=0.1, quality=1.0, exact_match=1.0,
                           outcome=1.0),
           RewardBreakdown(reward=0.1, stage=1, format=0.1, quality=0.0, exact_match=0.0,
                           outcome=0.0)]


def _ds(path: Path, **kwargs) -> TrajectoryDataset:
    return TrajectoryDataset(filepath=str(path), **kwargs)


def test_schemas_follow_the_dataclasses():
    # A field added to Trajectory or RewardBreakdown without a column would be dropped.
    assert TRAJECTORY_SCHEMA.names == [f.name for f in dataclasses.fields(Trajectory)]
    assert REWARD_SCHEMA.names == [f.name for f in dataclasses.fields(RewardBreakdown)]


def test_round_trip_keeps_every_field(tmp_path):
    path = tmp_path / "sub" / "rollouts.parquet"
    _ds(path).save(TRAJECTORIES)
    back = _ds(path).load()
    assert back == TRAJECTORIES
    assert back[1].answer is None and back[1].tool_calls == [] and back[1].parse_errors == []
    assert [p.name for p in path.parent.iterdir()] == ["rollouts.parquet"]  # no temp left


def test_file_layout(tmp_path):
    path = tmp_path / "rollouts.parquet"
    _ds(path).save(TRAJECTORIES)
    table = pq.read_table(path)
    assert table.schema.names == TRAJECTORY_SCHEMA.names
    assert table.schema.field("token_ids").type == pa.list_(pa.int64())
    row = table.to_pylist()[0]
    assert json.loads(row["tool_calls"][0])["arguments"] == {"query": "Mirebrook", "top_k": 2}
    assert row["messages"][1] == json.dumps(FULL.messages[1], ensure_ascii=False, sort_keys=True)
    # pandas reads it too (nested columns as arrays), for notebooks
    assert pd.read_parquet(path)["question_id"].tolist() == ["q1", "q2"]


def test_empty_list_round_trips(tmp_path):
    path = tmp_path / "empty.parquet"
    _ds(path).save([])
    assert _ds(path).load() == []
    assert pq.read_table(path).schema.names == TRAJECTORY_SCHEMA.names


def test_scored_round_trip_and_plain_read(tmp_path):
    path = tmp_path / "scored.parquet"
    _ds(path, scored=True).save(list(zip(TRAJECTORIES, REWARDS)))
    assert _ds(path, scored=True).load() == list(zip(TRAJECTORIES, REWARDS))
    assert _ds(path).load() == TRAJECTORIES  # the reward columns are extras to a plain read
    assert pq.read_table(path).schema.names == TRAJECTORY_SCHEMA.names + REWARD_SCHEMA.names
    plain = tmp_path / "plain.parquet"
    _ds(plain).save(TRAJECTORIES)
    with pytest.raises(DatasetError, match=r"plain.parquet: missing columns \['reward'"):
        _ds(plain, scored=True).load()


def test_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "rollouts.parquet"
    _ds(path).save(TRAJECTORIES)
    before = path.read_bytes()

    def crash(table, where, **kwargs):  # dies half-way through the write
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(DatasetError, match="disk full"):
        _ds(path).save([BARE])
    monkeypatch.undo()
    assert path.read_bytes() == before and _ds(path).load() == TRAJECTORIES
    assert [p.name for p in tmp_path.iterdir()] == ["rollouts.parquet"]


def test_unsavable_data_is_refused_before_writing(tmp_path):
    path = tmp_path / "rollouts.parquet"
    _ds(path).save(TRAJECTORIES)
    with pytest.raises(DatasetError, match="expects Trajectory items, got \\['dict'\\]"):
        _ds(path).save([FULL.to_record()])
    with pytest.raises(DatasetError, match="trajectory 1: token_ids"):
        _ds(path).save([FULL, dataclasses.replace(BARE, token_ids=[1, None])])
    with pytest.raises(DatasetError, match="tool_calls is not JSON-serialisable"):
        _ds(path).save([dataclasses.replace(BARE, tool_calls=[{"arguments": object()}])])
    assert _ds(path).load() == TRAJECTORIES


def _write(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def _with(table: pa.Table, name: str, values: list, type_: pa.DataType | None = None) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array(values, type=type_ or table.schema.field(name).type))


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop_columns(["turns", "answer"]), r"missing columns \['turns', 'answer'\]"),
    (lambda t: _with(t, "messages", [['{"role": "user"}'], ["{not json"]]),
     r"row 1, column 'messages', item 0: not JSON"),
    (lambda t: _with(t, "turns", [["[1, 2]"], []]),
     r"row 0, column 'turns', item 0: expected a JSON object, got list"),
    (lambda t: _with(t, "finish_reason", ["answer", None]), r"row 1, column 'finish_reason': null"),
    (lambda t: _with(t, "mask", [[0, 1], [0, None]]),
     r"row 1, column 'mask': null item at position 1"),
    (lambda t: _with(t, "logprobs", [["a"], ["b"]], pa.list_(pa.string())),
     r"row 0, column 'logprobs' is list<\w+: string>, expected list<item: double>"),
    (lambda t: _with(t, "sample_idx", [0.0, 1.5], pa.float64()),
     r"row 1, column 'sample_idx' is double, expected int64"),
])
def test_malformed_table_names_file_row_and_column(tmp_path, change, message):
    path = _write(tmp_path / "bad.parquet", change(trajectory_table(TRAJECTORIES)))
    with pytest.raises(DatasetError, match=message) as err:
        _ds(path).load()
    assert str(path) in str(err.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DatasetError, match="no trajectory table at"):
        _ds(tmp_path / "none.parquet").load()
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="junk.parquet: not a readable Parquet file"):
        _ds(tmp_path / "junk.parquet").load()
    assert not _ds(tmp_path / "none.parquet").exists()


def test_reads_the_table_pandas_wrote():
    # Files the rollout stage wrote before this dataset existed: pandas' to_parquet of
    # Trajectory.to_record() rows with JSON-string items; empty-list columns come back typed
    # list<null>.
    records = [t.to_record() for t in TRAJECTORIES]
    for r in records:
        for key in ("messages", "turns", "tool_calls"):
            r[key] = [json.dumps(item) for item in r[key]]
        r["parse_errors"] = []
    table = pa.Table.from_pandas(pd.DataFrame(records), preserve_index=False)
    assert table.schema.field("parse_errors").type == pa.list_(pa.null())
    back = table_trajectories(table, "old.parquet")
    assert [dataclasses.replace(t, parse_errors=[]) for t in TRAJECTORIES] == back


def test_catalog_config():
    ds = AbstractDataset.from_config("inspect_rollouts_trajectories", {
        "type": "tirl.datasets.trajectories.TrajectoryDataset", "filepath": "x.parquet"})
    assert isinstance(ds, TrajectoryDataset)
