from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
NQ_SAMPLE = ROOT / "tests" / "fixtures" / "flashrag_nq_test_sample.jsonl"


@pytest.fixture(scope="session")
def suites() -> dict:
    """The expectation suites exactly as declared in conf/base/parameters_data_prep.yml."""
    params = yaml.safe_load((ROOT / "conf/base/parameters_data_prep.yml").read_text())
    return params["data_prep"]["validation"]


@pytest.fixture
def nq_records() -> list[dict]:
    return [json.loads(line) for line in NQ_SAMPLE.read_text(encoding="utf-8").splitlines()]


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, records) -> path``: one JSON object per line."""
    return _write_jsonl


@pytest.fixture
def nq_path() -> Path:
    return NQ_SAMPLE
