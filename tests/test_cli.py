"""The ``tirl`` command line (tirl.commands): overrides, the user's data, errors outside a project."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import mlflow
import pandas as pd
import pytest
from scratch_project import scratch_project

from tirl import commands as cli

ROOT = Path(__file__).resolve().parents[1]
NQ = ROOT / "tests" / "fixtures" / "flashrag_nq_test_sample.jsonl"


def _tirl(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "KEDRO_ENV")}
    env.update({"KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    return subprocess.run([sys.executable, "-m", "tirl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_overrides_are_dotted_keys_with_yaml_values_and_lists_of_several_items():
    assert cli.parse_overrides(["evaluation.splits=[test_in_domain,test]", "rl.train.lr=1e-4",
                                "rl.train.vspo.selection=none", "model_init.model=null"]) == {
        "evaluation": {"splits": ["test_in_domain", "test"]},
        "rl": {"train": {"lr": 1e-4, "vspo": {"selection": "none"}}},
        "model_init": {"model": None}}
    with pytest.raises(click.UsageError, match="expected KEY=VALUE"):
        cli.parse_overrides(["rl.train.lr"])


def test_the_users_split_is_added_to_the_evaluated_splits_unless_set():
    params = {"data_prep": {"flashrag": {"split": "test", "keep_world_questions": True}},
              "evaluation": {"splits": ["test_in_domain", "test_ood"]}}
    users = {"data_prep": {"source": "flashrag"}}
    assert cli.with_user_split(params, users)["evaluation"]["splits"] == \
        ["test_in_domain", "test_ood", "test"]
    chosen = {**users, "evaluation": {"splits": ["test"]}}
    assert cli.with_user_split(params, chosen)["evaluation"]["splits"] == ["test"]
    assert "evaluation" not in cli.with_user_split(params, {})  # the world's questions only


def test_a_missing_data_file_is_named(tmp_path: Path):
    with pytest.raises(click.BadParameter, match="nope.jsonl: no such file"):
        cli.data_overrides(str(tmp_path / "nope.jsonl"), None, None)


def test_outside_a_project_tirl_says_so_and_exits_2(tmp_path: Path):
    proc = _tirl(tmp_path, "report")
    assert proc.returncode == 2
    assert "not inside a tirl project" in proc.stderr and "Traceback" not in proc.stderr
    assert str(tmp_path) in proc.stderr


def test_the_project_is_found_from_a_subdirectory():
    assert cli.find_project(ROOT / "src" / "tirl") == ROOT


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return scratch_project(tmp_path_factory.mktemp("cli_project"))


def test_eval_of_own_model_and_questions_evaluates_the_users_split(project: Path):
    # Your own questions (a FlashRAG NQ sample), a model of your choosing, and a list
    # override with two items, under conf/test sizes.
    proc = _tirl(project, "eval", "--model", "scratch", "--questions", str(NQ), "--env", "test",
                 "data_prep.gold.splits=[train,val]")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = pd.read_csv(project / "data/08_reporting/evaluation/direct_inference/seed0/summary.csv")
    sources = set(pd.read_json(NQ, lines=True).get("source", pd.Series(["nq"])).astype(str))
    assert set(summary["benchmark"]) & (sources | {"nq", "flashrag"}), summary["benchmark"].tolist()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["tirl"], output_format="list",
                             filter_string="attributes.run_name = 'direct_inference'")[0]
    assert run.data.params["data_prep.gold.splits"] == "['train', 'val']"
    assert "test" in run.data.params["evaluation.splits"]
    assert run.data.tags["data_source"] == f"flashrag({NQ.name})"
    assert "MLflow run" in proc.stdout.strip().splitlines()[-1]  # the last word names the run


def test_a_typo_in_an_override_is_named_before_anything_runs(project: Path):
    proc = _tirl(project, "train", "--env", "test", "rl.train.lrr=1e-4")
    assert proc.returncode != 0
    assert "rl.train.lrr" in proc.stdout + proc.stderr and "did you mean" in proc.stdout + proc.stderr
