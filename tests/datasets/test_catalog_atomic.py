"""Every file or directory the catalog writes is written by a dataset that saves atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONF = Path(__file__).resolve().parents[2] / "conf"
#: Datasets that stage and publish their own writes (tirl.datasets.publish).
ATOMIC = {"tirl.datasets.atomic.AtomicDataset", "tirl.datasets.trajectories.TrajectoryDataset",
          "tirl.datasets.hf_model.HFModelDataset"}
#: Wrappers that add no write of their own.
WRAPPERS = {"kedro_mlflow.io.artifacts.MlflowArtifactDataset"}


def _entries():
    for path in sorted(CONF.glob("*/catalog*.yml")):
        for name, cfg in (yaml.safe_load(path.read_text()) or {}).items():
            if isinstance(cfg, dict) and not name.startswith("_"):
                yield pytest.param(cfg, id=f"{path.parent.name}/{name}")


def _writes_files(cfg: dict) -> bool:
    return any(k in cfg for k in ("filepath", "path")) or isinstance(cfg.get("dataset"), dict)


@pytest.mark.parametrize("cfg", list(_entries()))
def test_persisted_outputs_are_atomic(cfg):
    layer = cfg
    while layer.get("type") in WRAPPERS:
        layer = layer["dataset"]
    if not _writes_files(layer):
        return  # MLflow-only (metrics history) or memory
    assert layer.get("type") in ATOMIC, f"{layer.get('type')} writes in place: wrap it in AtomicDataset"
