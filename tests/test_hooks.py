"""hooks: lineage tags and per-node resources, against a real (SQLite) MLflow store."""

import subprocess
import sys
from pathlib import Path

import mlflow
from kedro.pipeline import node

from tirl import hooks


def test_peak_rss_sees_an_allocation_in_a_fresh_process():
    # A fresh interpreter: the high-water mark is not already set by earlier tests.
    code = ("from tirl.hooks import peak_rss_mb\n"
            "before = peak_rss_mb()\n"
            "block = b'x' * (200 * 1024 * 1024)\n"  # written, so every page is resident
            "print(peak_rss_mb() - before)\n")
    rise = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)
    assert 150 < rise < 400


def test_node_metric_key_is_mlflow_safe():
    assert hooks.node_metric_key("vspo_prs.seed0.train", "seconds") == \
        "node/vspo_prs.seed0.train/seconds"
    assert hooks.node_metric_key("f([a,b]) -> [c]", "peak_rss_mb") == \
        "node/f__a_b__ -_ _c_/peak_rss_mb"


def test_node_resources_hook_logs_each_node_and_the_peak(store):
    hook = hooks.NodeResourcesHook()
    first = node(lambda x: x, "a", "b", name="first")
    second = node(lambda x: x, "b", "c", name="second")
    with mlflow.start_run() as run:
        for n in (first, second):
            hook.before_node_run(node=n)
            hook.after_node_run(node=n)
        hook.after_pipeline_run()
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    for name in ("first", "second"):
        assert metrics[f"node/{name}/seconds"] >= 0
        assert metrics[f"node/{name}/rss_rise_mb"] >= 0
        assert metrics[f"node/{name}/peak_rss_mb"] <= metrics["process/peak_rss_mb"]


def test_node_resources_hook_without_run_is_quiet():
    hook = hooks.NodeResourcesHook()
    n = node(lambda x: x, "a", "b", name="alone")
    hook.before_node_run(node=n)
    hook.after_node_run(node=n)  # no active run: logs to the console only, must not raise
    assert mlflow.active_run() is None


def test_lineage_tags_outside_git(tmp_path: Path):
    tags = hooks.lineage_tags(tmp_path)
    assert tags["git_commit"] == "unknown" and tags["dvc_lock_hash"] == "none"
