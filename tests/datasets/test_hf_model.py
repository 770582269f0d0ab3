"""HFModelDataset saves atomically and loads back an equal model."""

from __future__ import annotations

import pytest
import torch
from kedro.io import DatasetError

from tirl.datasets.hf_model import HFModelDataset


def test_save_load_round_trip(tmp_path, tiny_model, tiny_tokenizer):
    ds = HFModelDataset(path=str(tmp_path / "m"))
    assert not ds.exists()
    ds.save({"model": tiny_model, "tokenizer": tiny_tokenizer})
    assert ds.exists()
    loaded = ds.load()
    x = torch.tensor([[1, 5, 7]])
    with torch.no_grad():
        assert torch.allclose(loaded["model"](x).logits, tiny_model(x).logits, atol=1e-5)
    assert loaded["tokenizer"].get_vocab() == tiny_tokenizer.get_vocab()
    assert "m" in str(ds._describe()["path"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dirs left over


def test_failed_save_keeps_previous_model(tmp_path, tiny_model, tiny_tokenizer):
    ds = HFModelDataset(path=str(tmp_path / "m"))
    ds.save({"model": tiny_model, "tokenizer": tiny_tokenizer})
    before = sorted(p.name for p in (tmp_path / "m").iterdir())

    class Broken:
        def save_pretrained(self, path, **kwargs):
            (path / "half_written.bin").parent.mkdir(parents=True, exist_ok=True)
            (path / "half_written.bin").write_bytes(b"x")
            raise RuntimeError("disk full")

    with pytest.raises(DatasetError, match="disk full"):
        ds.save({"model": Broken(), "tokenizer": tiny_tokenizer})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert ds.load()["model"] is not None


def test_save_overwrites_and_rejects_bad_input(tmp_path, tiny_model, tiny_tokenizer):
    ds = HFModelDataset(path=str(tmp_path / "m"))
    ds.save({"model": tiny_model, "tokenizer": tiny_tokenizer})
    ds.save({"model": tiny_model, "tokenizer": tiny_tokenizer})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(DatasetError, match="'model' and 'tokenizer'"):
        ds.save({"model": tiny_model})
    with pytest.raises(DatasetError, match="no model directory"):
        HFModelDataset(path=str(tmp_path / "absent")).load()
