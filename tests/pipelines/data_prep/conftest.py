from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from tirl.experiments import deep_merge

ROOT = Path(__file__).resolve().parents[3]
NQ_SAMPLE = ROOT / "tests" / "fixtures" / "flashrag_nq_test_sample.jsonl"
OUTPUTS = ("questions", "corpus", "gold_trajectories", "practice_trajectories", "world_kb",
           "data_validation_report")


def merged_params() -> dict[str, Any]:
    """conf/base parameters with the conf/test overrides on top (what `--env=test` reads)."""
    base = yaml.safe_load((ROOT / "conf/base/parameters_data_prep.yml").read_text())
    test = yaml.safe_load((ROOT / "conf/test/parameters_data_prep.yml").read_text())
    return deep_merge(base, test)["data_prep"]


def _reroot(entry: dict, root: Path) -> None:
    """Point the (possibly wrapped: atomic, MLflow artifact) dataset's file under ``root``."""
    while "filepath" not in entry:
        entry = entry["dataset"]
    entry["filepath"] = str(root / entry["filepath"])


def make_catalog(root: Path, params: dict[str, Any]):
    """The stage's own catalog entries (conf/base/catalog_data_prep.yml) under ``root``."""
    from kedro.io import DataCatalog, MemoryDataset

    entries = yaml.safe_load((ROOT / "conf/base/catalog_data_prep.yml").read_text())
    assert set(entries) == set(OUTPUTS)
    for entry in entries.values():
        _reroot(entry, root)
    catalog = DataCatalog.from_config(entries)
    catalog["params:data_prep"] = MemoryDataset(params)
    catalog["params:agent.search"] = MemoryDataset(
        yaml.safe_load((ROOT / "conf/test/parameters_agent.yml").read_text())["agent"]["search"])
    return catalog


def run_data_prep(root: Path, params: dict[str, Any]):
    from kedro.runner import SequentialRunner

    from tirl.pipelines.data_prep.pipeline import create_pipeline

    catalog = make_catalog(root, params)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


@pytest.fixture
def params() -> dict[str, Any]:
    return merged_params()


@pytest.fixture
def data_prep_runner():
    """``run(root, params) -> catalog``: the whole stage on a file catalog under ``root``."""
    return run_data_prep


@pytest.fixture
def output_paths():
    """``paths(root) -> {dataset name: Path}`` of the stage's catalog outputs under root."""
    def paths(root: Path) -> dict[str, Path]:
        catalog = make_catalog(root, {})
        return {name: Path(catalog.get(name)._filepath) for name in OUTPUTS}
    return paths


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    """One successful run on the conf/test world: (root, catalog, params)."""
    params = merged_params()
    root = tmp_path_factory.mktemp("world")
    return root, run_data_prep(root, params), params


@pytest.fixture(autouse=True)
def _quiet_kedro():
    logging.getLogger("kedro").setLevel(logging.WARNING)
