"""hooks: lineage tags, per-node resources, secrets and run status, against a real (SQLite)
MLflow store."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
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


# --- SecretsHook and RunStatusHook (issue 15, items 3 and 8) --------------------------------

KEY = "sk-hook-PARAM-61d7c0ffee"


def test_secrets_hook_refuses_a_key_in_the_parameters_naming_it_not_showing_it():
    from tirl.core.config import ConfigError

    params = {"rl": {"train": {"judge": {"name": "openai",
                                         "options": {"credentials": {"api_key": KEY}}}}}}
    with pytest.raises(ConfigError) as info:
        hooks.SecretsHook().after_catalog_created(conf_creds={}, parameters=params)
    message = str(info.value)
    assert message.startswith("rl.train.judge.options.credentials:")
    assert "conf/local/credentials.yml" in message and "OPENAI_API_KEY" in message
    assert KEY not in message


def test_secrets_hook_hands_the_kedro_credentials_to_the_judges(monkeypatch):
    from tirl.core import secrets

    monkeypatch.setattr(secrets, "_named", {})
    params = {"rl": {"train": {"judge": {"options": {"credentials": "openai_judge"}}}}}
    hooks.SecretsHook().after_catalog_created(
        conf_creds={"openai_judge": {"api_key": KEY}}, parameters=params)
    assert secrets.credentials("openai_judge") == {"api_key": KEY}
    error = RuntimeError(f"server echoed {KEY}")
    hooks.SecretsHook().on_pipeline_error(error=error)
    assert str(error) == "server echoed ***"


@pytest.fixture
def default_sigint():
    """SIGINT as a plain interpreter has it (a test runner may have changed it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _status(run_id: str) -> str:
    return mlflow.get_run(run_id).info.status


def test_sigint_marks_the_run_and_its_child_killed_and_still_interrupts(store, default_sigint):
    from tirl import tracking

    hook = hooks.RunStatusHook()
    with pytest.raises(KeyboardInterrupt):
        with mlflow.start_run(run_name="compare") as parent:
            hook.before_pipeline_run()
            with tracking.child_run("vspo_prs"):
                child = mlflow.active_run().info.run_id
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler interrupts this
    assert _status(parent.info.run_id) == "KILLED" and _status(child) == "KILLED"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back
    assert mlflow.active_run() is None


def test_an_exit_that_skips_kedro_marks_the_run_killed(store, default_sigint):
    hook = hooks.RunStatusHook()
    run = mlflow.start_run()
    hook.before_pipeline_run()
    hook._on_exit()  # what atexit calls: neither after_pipeline_run nor on_pipeline_error ran
    assert _status(run.info.run_id) == "KILLED" and mlflow.active_run() is None


def test_a_finished_or_failed_pipeline_is_left_to_kedro_mlflow(store, default_sigint):
    hook = hooks.RunStatusHook()
    for end in (hook.after_pipeline_run, hook.on_pipeline_error):
        with mlflow.start_run() as run:
            hook.before_pipeline_run()
            end()
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            hook._on_exit()  # nothing to do: the pipeline ended through Kedro
            assert _status(run.info.run_id) == "RUNNING"


def test_runner_tag_is_a_class_name_and_the_command_is_the_one_typed():
    from kedro.runner import SequentialRunner

    from tirl.hooks import command_line, runner_name

    assert runner_name("<kedro.runner.sequential_runner.SequentialRunner object at 0x7f2f0a>") \
        == "SequentialRunner"
    assert runner_name(SequentialRunner()) == runner_name(SequentialRunner) == "SequentialRunner"
    assert runner_name(None) == "unknown"
    argv = ["/work/main/.venv/bin/kedro", "run", "--env=test", "--params",
            "rl.train.lr=1e-4,rl.train.steps=3"]
    assert command_line(argv) == "kedro run --env=test --params rl.train.lr=1e-4,rl.train.steps=3"
    assert command_line(["kedro", "run", "--params", "a=b c"]) == "kedro run --params 'a=b c'"
