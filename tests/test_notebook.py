"""notebooks/compare_runs.ipynb executes under ``jupyter nbconvert --execute`` against an
MLflow store (a tiny one built here, never the project's mlflow.db) and compares only the
runs it selects, one row per variant and data source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "compare_runs.ipynb"

# parent run -> (data_prep params, git commit, {variant: [(seed, exact match)]})
CHAINS = {
    "old_world": ({"data_prep.source": "world", "data_prep.corpus": "auto"}, "abc1234",
                  {"vspo_prs": [(0, 0.5), (1, 0.7)], "sft_only": [(0, 0.3)]}),
    "old_flashrag": ({"data_prep.source": "flashrag", "data_prep.corpus": "auto",
                      "data_prep.flashrag.questions_path": "/data/nq.jsonl"}, "abc1234",
                     {"vspo_prs": [(0, 0.1)]}),
    "newest": ({"data_prep.source": "world", "data_prep.corpus": "auto"}, "def5678",
               {"grpo_binary": [(0, 0.2)], "sft_only": [(0, 0.4)]}),
}


@pytest.fixture
def tiny_store(tmp_path: Path) -> str:
    """Three ``kedro run``s, as the hooks and child runs tag them: the parent holds the
    data_prep params and the SFT loss, each variant a child with eval and RL metrics."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tirl")
    for name, (params, commit, variants) in CHAINS.items():
        tags = {"git_commit": commit, "kedro_env": "test", "pipeline": "compare"}
        with mlflow.start_run(run_name=name):
            mlflow.set_tags(tags)
            mlflow.log_params(params)
            for step, loss in enumerate((2.0, 1.2, 0.9)):
                mlflow.log_metric("sft/loss", loss, step=step)
            for variant, seeds in variants.items():
                for seed, em in seeds:
                    with mlflow.start_run(run_name=f"{variant}/seed{seed}", nested=True):
                        mlflow.set_tags({**tags, "variant": variant, "seed": str(seed)})
                        mlflow.log_metrics({"eval/all/exact_match": em,
                                            "eval/single_hop/exact_match": em})
                        if variant != "sft_only":
                            for step in range(3):
                                mlflow.log_metrics({"rl/reward/mean": 0.2 * step + em,
                                                    "rl/actor/kl": 0.01 * step}, step=step)
        time.sleep(0.01)  # distinct start times: "newest" is well defined
    return uri


def _execute(tmp_path: Path, uri: str, **env: str) -> dict:
    out = tmp_path / "executed.ipynb"
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         str(NOTEBOOK), "--output", str(out), "--ExecutePreprocessor.timeout=300"],
        check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "TIRL_MLFLOW_URI": uri,
             "TIRL_PARENT_RUN_ID": "", "TIRL_GIT_COMMIT": "", **env})
    return json.loads(out.read_text())


def _text(nb: dict) -> str:
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []))


def _images(nb: dict) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb["cells"]
               for o in c.get("outputs", []))


def test_notebook_compares_the_newest_run_by_default(tmp_path, tiny_store):
    nb = _execute(tmp_path, tiny_store)
    text = _text(nb)
    # only the newest kedro run: its two variants, nothing of the older runs
    assert "| grpo_binary | world(seed=0) @ test | 0.200 ± n/a | 0.200 ± n/a | 1 |" in text
    assert "| sft_only | world(seed=0) @ test | 0.400 ± n/a" in text
    assert "vspo_prs" not in text and "3 evaluated runs" not in text
    assert "2 evaluated runs" in text
    assert _images(nb) >= 3  # bars, reward curves, training curves (KL and SFT loss)


def test_notebook_selects_a_commit_and_keeps_data_sources_apart(tmp_path, tiny_store):
    nb = _execute(tmp_path, tiny_store, TIRL_GIT_COMMIT="abc1")
    text = _text(nb)
    # the same variant on two data sources: two rows, never one average of 0.5, 0.7 and 0.1
    assert "| vspo_prs | world(seed=0) @ test | 0.600 ± 0.141 | 0.600 ± 0.141 | 2 |" in text
    assert "| vspo_prs | flashrag(nq.jsonl) @ test | 0.100 ± n/a | 0.100 ± n/a | 1 |" in text
    assert "grpo_binary" not in text
