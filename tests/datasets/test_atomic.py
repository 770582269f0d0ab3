import pandas as pd
import pytest

from tirl.datasets.atomic import AtomicDataset


def _ds(path):
    return AtomicDataset({"type": "pandas.CSVDataset", "filepath": str(path)})


def test_round_trip_and_no_temp_left(tmp_path):
    path = tmp_path / "sub" / "t.csv"
    _ds(path).save(pd.DataFrame({"a": [1, 2]}))
    assert _ds(path).load()["a"].tolist() == [1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "t.json"
    ds = AtomicDataset({"type": "json.JSONDataset", "filepath": str(path)})
    ds.save({"ok": 1})
    with pytest.raises(Exception):
        ds.save({"bad": object()})  # not JSON-serialisable: fails mid-write
    assert ds.load() == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_needs_filepath():
    with pytest.raises(ValueError, match="filepath"):
        AtomicDataset({"type": "pandas.CSVDataset"})
