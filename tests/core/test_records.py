import numpy as np
import pandas as pd
import pytest

from tirl.core.records import plain, records, split_records


def test_plain_converts_nested_numpy():
    value = {"a": np.array([np.array([1, 2]), np.array([3])], dtype=object),
             "b": (np.int64(4), np.float32(0.5)), "c": "x"}
    assert plain(value) == {"a": [[1, 2], [3]], "b": [4, 0.5], "c": "x"}


def test_parquet_round_trip_gives_plain_lists(tmp_path):
    df = pd.DataFrame({"id": ["a", "b"], "split": ["test", "train"],
                       "facts": [["f1", "f2"], []]})
    df.to_parquet(tmp_path / "q.parquet")
    back = pd.read_parquet(tmp_path / "q.parquet")
    assert isinstance(back.loc[0, "facts"], np.ndarray)  # what parquet hands back
    recs = records(back)
    assert recs[0]["facts"] == ["f1", "f2"] and recs[1]["facts"] == []
    assert tuple(recs[1]["facts"] or ()) == ()  # the idiom that fails on an array


def test_split_records_names_the_key():
    df = pd.DataFrame({"id": ["a", "b", "c"], "split": ["train", "train", "val"]})
    assert [r["id"] for r in split_records(df, "train", 1)] == ["a"]
    with pytest.raises(ValueError, match=r"rollout.split: no questions in split 'test'"):
        split_records(df, "test", key="rollout.split")
    with pytest.raises(ValueError, match="no 'split' column"):
        split_records(df.drop(columns="split"), "train")
