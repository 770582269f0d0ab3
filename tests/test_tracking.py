"""tracking: metrics callback and child runs against a real (SQLite) MLflow store."""

import mlflow
import pandas as pd
import pytest

from tirl import tracking


def test_metrics_logger_without_run_is_noop():
    tracking.make_metrics_logger("rl")({"a": 1.0}, 0)  # must not raise or start a run
    assert mlflow.active_run() is None


def test_metrics_logger_drops_non_finite(store):
    with mlflow.start_run() as run:
        tracking.make_metrics_logger("sft")({"loss": 1.5, "bad": float("nan"), "s": "x"}, 3)
    data = mlflow.get_run(run.info.run_id).data
    assert data.metrics == {"sft/loss": 1.5}


def test_child_run_is_reentered_by_name(store):
    with mlflow.start_run(run_name="compare") as parent:
        mlflow.set_tag("git_commit", "abc")
        with tracking.child_run("vspo_prs", params={"a": {"b": 1}}):
            tracking.log_metrics({"m": 1.0})
        with tracking.child_run("vspo_prs", params={"a": {"b": 1}, "c": 2}):
            tracking.log_metrics({"n": 2.0})
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list")
    assert len(children) == 1
    child = children[0].data
    assert child.metrics == {"m": 1.0, "n": 2.0}
    assert child.params == {"a.b": "1", "c": "2"}
    assert child.tags["git_commit"] == "abc" and child.tags["variant"] == "vspo_prs"


def test_child_run_same_name_as_active_does_not_nest(store):
    with mlflow.start_run(run_name="vspo_prs") as run:
        with tracking.child_run("vspo_prs"):
            assert mlflow.active_run().info.run_id == run.info.run_id


def test_load_eval_summaries_rebuilds_rows(store):
    for variant, seed, em in (("vspo_prs", 0, 0.5), ("vspo_prs", 1, 0.7), ("grpo_prs", 0, 0.2)):
        with mlflow.start_run():
            mlflow.set_tags({"variant": variant, "seed": str(seed)})
            tracking.log_metrics({"eval/all/exact_match": em, "eval/single_hop/exact_match": em,
                                  "loss/policy": 1.0})
    with mlflow.start_run():  # a stage run without a variant tag is skipped
        tracking.log_metrics({"eval/all/exact_match": 0.99})
    df = tracking.load_eval_summaries("t")
    assert len(df) == 6
    overall = df[df.benchmark == "all"].sort_values(["variant", "seed"])
    assert overall["exact_match"].tolist() == [0.2, 0.5, 0.7]
    assert set(df.columns) >= {"variant", "seed", "run_id", "benchmark", "exact_match"}


def _chain(name, commit, source, variants):
    """A ``kedro run`` as the hooks tag it: data_prep params on the parent, a child per
    variant with its eval metrics (and an RL curve)."""
    with mlflow.start_run(run_name=name) as parent:
        mlflow.set_tags({"git_commit": commit, "kedro_env": "test"})
        mlflow.log_params({"data_prep.source": source, "data_prep.corpus": "auto"})
        for variant, em in variants.items():
            with mlflow.start_run(run_name=variant, nested=True):
                mlflow.set_tags({"git_commit": commit, "variant": variant, "seed": "0"})
                tracking.log_metrics({"eval/all/exact_match": em})
                for step in range(2):
                    mlflow.log_metrics({"rl/reward/mean": em + step, "rl/val/exact_match": em},
                                       step=step)
    return parent.info.run_id


def test_load_eval_summaries_selects_a_parent_run_or_a_commit(store):
    old = _chain("old", "aaa111", "flashrag", {"vspo_prs": 0.1})
    new = _chain("new", "bbb222", "world", {"vspo_prs": 0.6, "grpo_prs": 0.4})
    with mlflow.start_run():  # a later run without evaluation results is not "the newest"
        tracking.log_metrics({"sft/loss": 1.0})
    assert tracking.newest_parent_run("t") == new
    df = tracking.load_eval_summaries("t", parent_run_id=new)
    assert sorted(df["variant"]) == ["grpo_prs", "vspo_prs"]
    # Labelled from the data_prep parameters: these runs have no data_source tag.
    assert set(df["parent_run_id"]) == {new} and set(df["data"]) == {"world(seed=0) @ test"}
    by_commit = tracking.load_eval_summaries("t", git_commit="AAA1")  # prefix, any case
    assert by_commit[["variant", "data", "exact_match"]].values.tolist() == [
        ["vspo_prs", "flashrag(?) @ test", 0.1]]
    assert set(by_commit["parent_run_id"]) == {old}
    assert len(tracking.load_eval_summaries("t")) == 3  # no filter: every variant run
    with pytest.raises(ValueError, match="git_commit 'ccc'.*aaa111"):
        tracking.load_eval_summaries("t", git_commit="ccc")
    with pytest.raises(ValueError, match="parent_run_id 'nope'"):
        tracking.load_eval_summaries("t", parent_run_id="nope")


def test_load_histories_has_the_rl_history_shape(store):
    _chain("one", "aaa111", "world", {"vspo_prs": 0.5})
    run_id = tracking.load_eval_summaries("t")["run_id"].iloc[0]
    hist = tracking.load_histories({run_id: "vspo_prs"}, "rl", ["reward/mean", "val/exact_match"])
    hist = hist.sort_values("step")
    # the val/ figure logged at updates done (1, 2) sits on the step before, as in history.csv
    assert hist["step"].tolist() == [-1, 0, 1]
    assert hist["reward/mean"].tolist()[1:] == [0.5, 1.5] and pd.isna(hist["reward/mean"].iloc[0])
    assert hist["val/exact_match"].tolist()[:2] == [0.5, 0.5]
    assert set(hist["variant"]) == {"vspo_prs"} and set(hist["seed"]) == {0}


def test_newest_parent_run_needs_an_evaluated_run(store):
    with mlflow.start_run():
        tracking.log_metrics({"sft/loss": 1.0})
    with pytest.raises(ValueError, match="no run with evaluation results"):
        tracking.newest_parent_run("t")


def test_log_outputs_writes_text_and_tables(store, tmp_path):
    import pandas as pd
    with mlflow.start_run() as run:
        tracking.log_outputs({"eval_sample": "# hi", "eval_summary": pd.DataFrame({"a": [1]}),
                              "rl_model": object()})
    names = sorted(a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id))
    assert names == ["eval_sample.md", "eval_summary.csv"]


# --- resumed runs are linked (issue 15, item 8) ---------------------------------------------


def _toy_run(ckdir, steps: int, resume: bool) -> str:
    from toy_rl import run_toy, toy_config

    with mlflow.start_run() as run:
        run_toy(toy_config(steps=steps, checkpoint_every=2), resume=resume, checkpoint_dir=ckdir,
                on_metrics=tracking.make_metrics_logger("rl", resumable=str(ckdir)))
    return run.info.run_id


def _steps(run_id: str) -> list[int]:
    return [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "rl/reward/mean")]


def test_a_resumed_run_is_linked_to_the_run_it_continues(store, tmp_path):
    ckdir = tmp_path / "checkpoints" / "rl"
    killed = _toy_run(ckdir, steps=2, resume=True)  # "killed" after step 2's checkpoint
    mlflow.MlflowClient().update_run(killed, status="RUNNING")  # by SIGKILL: no handler ran
    resumed = _toy_run(ckdir, steps=4, resume=True)
    assert (_steps(killed), _steps(resumed)) == ([0, 1], [2, 3])  # one curve in two runs...
    tags = mlflow.get_run(resumed).data.tags
    assert tags["resumed_from"] == killed and tags["resumed_at_step"] == "2"  # ... linked
    assert mlflow.get_run(killed).data.tags["resumed_by"] == resumed
    assert mlflow.get_run(killed).info.status == "KILLED"
    assert tags["resume_key"] == mlflow.get_run(killed).data.tags["resume_key"]
    # A run that starts at step 0 over the same folder continues nothing: no link.
    fresh = _toy_run(ckdir, steps=2, resume=False)
    assert _steps(fresh) == [0, 1] and "resumed_from" not in mlflow.get_run(fresh).data.tags
    # Another checkpoint folder is another run.
    assert "resumed_from" not in mlflow.get_run(_toy_run(tmp_path / "other", 2, True)).data.tags


def test_params_tags_and_texts_are_redacted(store):
    from tirl.core.secrets import Secret

    key = "sk-tracking-LEAK-4b5c6d7e8f"
    Secret(key)
    with mlflow.start_run() as run:
        tracking.set_tags({"note": f"key {key}"})
        tracking._log_params({"judge": {"url": f"http://h/?k={key}"}})
        tracking.log_outputs({"sample": f"# {key}"})
    data = mlflow.get_run(run.info.run_id).data
    assert data.tags["note"] == "key ***" and data.params["judge.url"] == "http://h/?k=***"
    text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/sample.md")
    assert text == "# ***"


def test_a_run_is_labelled_by_its_data_source_tag_and_its_params_give_the_same_label():
    tagged = {"data_source": "flashrag(nq.jsonl) corpus=wiki", "kedro_env": "smol"}
    assert tracking.data_source({"data_prep.source": "world"}, tagged) == \
        "flashrag(nq.jsonl) corpus=wiki @ smol"
    # A run without the tag: its flat MLflow params give the label the hooks would have tagged.
    flat = {"data_prep.source": "flashrag", "data_prep.corpus": "wiki",
            "data_prep.flashrag.questions_path": "/x/nq.jsonl"}
    nested = {"source": "flashrag", "corpus": "wiki", "flashrag": {"questions_path": "/x/nq.jsonl"}}
    assert tracking.data_source(flat, {}) == tracking.subject_tags({}, nested)["data_source"] + " @ local"
