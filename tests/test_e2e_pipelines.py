"""Every registered pipeline, end to end on the tiny ``conf/test`` sizes, as a user runs it.

The project is copied to a scratch folder (config, pyproject, a link to ``src``) and driven
with the real ``kedro run`` command, so the registry, the catalog, kedro-mlflow and the hooks
are all exercised. ``compare`` covers data prep, SFT, every variant and the report in one run;
the stage pipelines then run on its outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from scratch_project import scratch_project

from tirl.variants import ABLATION, AS_IS, DIRECT_INFERENCE, SFT_ONLY, VARIANTS

ROOT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))


def _kedro(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    proc = subprocess.run([KEDRO, "run", "--env=test", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"kedro run {args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return scratch_project(tmp_path_factory.mktemp("project"), git=True)


@pytest.fixture(scope="module")
def compared(project: Path) -> Path:
    proc = _kedro(project, "--pipelines=compare")
    (project / "compare.log").write_text(proc.stdout + proc.stderr)
    return project


def test_a_run_logged_to_a_file_reads_line_by_line_and_names_its_results(compared: Path):
    # The output is captured, so neither stream is a terminal: no bar redraws, no wrapped
    # records, and a last word that names the report and the MLflow run.
    log = (compared / "compare.log").read_text()
    assert "\r" not in log
    tail = log[log.index("Run finished. Results:"):]
    assert "data/08_reporting/compare/comparison.md" in tail.splitlines()[1]
    run_id = next(line for line in tail.splitlines() if "MLflow run" in line).split("MLflow run ")[1][:32]
    assert any(r.info.run_id == run_id for r in _runs(compared))
    assert "tirl.progress: rl:" in log  # RL progress as log lines


def _runs(project: Path):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["tirl"], output_format="list")


def test_registry_lists_every_pipeline():
    from kedro.framework.project import configure_project

    configure_project("tirl")
    from tirl.pipeline_registry import STAGES, register_pipelines

    pipelines = register_pipelines()
    expected = {*STAGES, *VARIANTS, *AS_IS, "compare", "vspo_ablation", "__default__"}
    assert set(pipelines) == expected
    assert pipelines["__default__"] is pipelines["vspo_prs"]
    # the default chain is the whole method: data prep -> SFT -> RL -> evaluation
    names = {n.name for n in pipelines["vspo_prs"].nodes}
    assert {"publish", "init_model", "run_sft", "vspo_prs.seed0.rl",
            "vspo_prs.seed0.evaluate"} <= names
    # compare shares data prep and SFT: each shared node appears once
    compare = [n.name for n in pipelines["compare"].nodes]
    assert compare.count("run_sft") == 1 and len(compare) == len(set(compare))
    assert {f"{v}.seed0.rl" for v in VARIANTS} <= set(compare)
    # the as-is rows: direct inference reads model_init's model, sft_only the SFT one
    by_name = {n.name: n for n in pipelines["compare"].nodes}
    assert by_name[f"{DIRECT_INFERENCE}.seed0.evaluate"].inputs[0] == "base_model"
    assert by_name[f"{SFT_ONLY}.seed0.evaluate"].inputs[0] == "sft_model"
    # the direct_inference chain alone never trains
    assert {n.name for n in pipelines[DIRECT_INFERENCE].nodes} >= {"init_model",
                                                                 "direct_inference.seed0.evaluate"}
    assert "run_sft" not in {n.name for n in pipelines[DIRECT_INFERENCE].nodes}
    # a single variant's report fills no ablation cell (no ablation.md); every report reads
    # the SFT loss curve that run_sft writes
    single = {n.name: n for n in pipelines["vspo_prs"].nodes}["vspo_prs.build_report"]
    assert "vspo_prs.ablation_md" not in single.outputs and "sft_metrics" in single.inputs
    assert "compare.ablation_md" in by_name["compare.build_report"].outputs
    assert {f"{v}.seed0.rl" for v in ABLATION} <= \
        {n.name for n in pipelines["vspo_ablation"].nodes}


def test_seed_lists_come_from_the_chosen_environment(tmp_path: Path, monkeypatch):
    """The registry reads experiments.seeds / ablation_seeds from base + $KEDRO_ENV (else
    local), e.g. the study's 3 seeds with a 1-seed ablation; the graph follows."""
    from tirl.experiments import experiment_pipelines
    from tirl.pipeline_registry import stage_pipelines
    from tirl.variants import configured_seeds

    for env, text in {"base": "experiments:\n  seeds: [0]\n  ablation_seeds: null\n",
                      "local": "", "study": "experiments:\n  seeds: [0, 1, 2]\n  ablation_seeds: [5]\n"
                      }.items():
        (tmp_path / env).mkdir()
        (tmp_path / env / "parameters_experiments.yml").write_text(text)
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    assert configured_seeds(tmp_path) == configured_seeds(tmp_path, key="ablation_seeds") == [0]
    monkeypatch.setenv("KEDRO_ENV", "study")
    seeds, ablation = configured_seeds(tmp_path), configured_seeds(tmp_path, key="ablation_seeds")
    assert (seeds, ablation) == ([0, 1, 2], [5])
    chains = experiment_pipelines(stage_pipelines(), seeds, ablation)
    compare = {n.name for n in chains["compare"].nodes}
    assert {f"vspo_prs.seed{k}.rl" for k in (0, 1, 2)} <= compare
    assert {n.name for n in chains["vspo_ablation"].nodes if n.name.endswith(".rl")} == \
        {f"{v}.seed5.rl" for v in ABLATION}
    (tmp_path / "study" / "parameters_experiments.yml").write_text("experiments:\n  seeds: []\n")
    with pytest.raises(ValueError, match="experiments.seeds"):
        configured_seeds(tmp_path)


def test_compare_writes_the_report(compared: Path):
    report = compared / "data" / "08_reporting" / "compare"
    for name in ("comparison.md", "comparison.csv", "ablation.md", "reward_curves.png",
                 "training_curves.png", "zero_advantage.png", "eval_bars.png", "gains.csv"):
        assert (report / name).stat().st_size > 0, name
    # compare runs none of the ablation grid: the file names the command that does
    assert "kedro run --pipelines=vspo_ablation" in (report / "ablation.md").read_text()
    table = pd.read_csv(report / "comparison.csv")
    assert set(table["variant"]) == {*AS_IS, *VARIANTS}
    # the paper's Table 2 order: direct inference, SFT, then the RL variants
    assert list(dict.fromkeys(table["variant"]))[:3] == [DIRECT_INFERENCE, SFT_ONLY, "vspo_prs"]
    assert {"single_hop", "multi_hop", "out_of_domain", "long_description",
            "long_multi_question", "all"} <= set(table.columns)
    md = (report / "comparison.md").read_text()
    assert "| vspo_prs |" in md and "| direct_inference |" in md and "± " in md
    assert "**Gain over `sft_only`**" in md
    gains = pd.read_csv(report / "gains.csv")  # every other run, paired against sft_only
    assert set(gains["variant"]) == {DIRECT_INFERENCE, *VARIANTS}
    assert "all" in set(gains["benchmark"])
    assert (gains["ci_low"] <= gains["gain"] + 1e-12).all()
    for variant in VARIANTS:
        hist = pd.read_csv(compared / f"data/07_model_output/rl/{variant}/seed0/history.csv")
        assert {"step", "reward/mean", "vspo/zero_adv_frac"} <= set(hist.columns)


def test_compare_mlflow_structure(compared: Path):
    runs = _runs(compared)
    parents = [r for r in runs if r.info.run_name == "compare"]
    assert len(parents) == 1
    parent = parents[0]
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=compared, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert parent.data.tags["pipeline"] == "compare" and parent.data.tags["git_commit"] == sha
    assert "dvc_lock_hash" in parent.data.tags
    # NodeResourcesHook: every node's seconds and memory, and the run's peak, on the parent run
    node_keys = {k for k in parent.data.metrics if k.startswith("node/")}
    assert any(k.endswith("/peak_rss_mb") for k in node_keys)
    assert any(k.endswith("/seconds") for k in node_keys)
    assert parent.data.metrics["process/peak_rss_mb"] >= max(
        parent.data.metrics[k] for k in node_keys if k.endswith("/peak_rss_mb"))
    client = mlflow.MlflowClient()
    report_files = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/comparison.md" in report_files and "report/reward_curves.png" in report_files
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.info.run_name for r in children} == {*AS_IS, *VARIANTS}
    metric_names = None
    for child in children:
        assert child.data.tags["variant"] == child.info.run_name
        assert child.data.tags["git_commit"] == parent.data.tags["git_commit"]
        evals = {k for k in child.data.metrics if k.startswith("eval/")}
        assert "eval/all/exact_match" in evals
        # the runs of a comparison line up: same evaluation metric names everywhere
        metric_names = metric_names or evals
        assert evals == metric_names
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"eval_summary.csv", "eval_sample.md"} <= artifacts
        # every child: its seed, what it trained and on which data, and headline columns
        assert child.data.tags["seed"] == "0"
        assert child.data.tags["model"] == "scratch"
        assert child.data.tags["data_source"] == "world(seed=0)"
        assert child.data.metrics["final/exact_match"] == child.data.metrics["eval/all/exact_match"]
        assert "evaluation.max_per_benchmark" in child.data.params
        if child.info.run_name not in AS_IS:
            assert "rl_history.csv" in artifacts
            assert client.get_metric_history(child.info.run_id, "rl/reward/mean")
            # the variant's own values under the stage's names, once
            algorithm = VARIANTS[child.info.run_name]["algorithm"]
            assert child.data.params["rl.train.algorithm"] == algorithm
            assert child.data.params["rl.train.seed"] == "0"
            assert not any(k.startswith("train.") for k in child.data.params)
            assert "rl/completions.json" in {
                a.path for a in client.list_artifacts(child.info.run_id, "rl")}
    # The parent holds the shared stages' parameters, and no rl defaults that no child used.
    assert "sft.lr" in parent.data.params and "data_prep.world.seed" in parent.data.params
    assert not any(k.startswith("rl.") for k in parent.data.params)
    assert "comparison.md" in parent.data.tags["mlflow.note.content"]


def test_a_variant_run_logs_its_own_rl_parameters(project: Path):
    # A standalone variant chain is one run: its rl.* are the variant's, not the defaults
    # (grpo_prs is VSPO with selection none; conf/base says vspo / value).
    _kedro(project, "--pipelines=grpo_prs")
    run = next(r for r in _runs(project) if r.info.run_name == "grpo_prs")
    params = run.data.params
    assert params["rl.train.algorithm"] == "grpo"
    assert not any(k.startswith("train.") for k in params)
    assert run.data.tags["variant"] == "grpo_prs" and run.data.tags["seed"] == "0"
    assert "final/exact_match" in run.data.metrics
    path = mlflow.MlflowClient().download_artifacts(run.info.run_id, "rl/completions.json",
                                                    str(project / "downloaded"))
    table = json.loads(Path(path).read_text())  # MLflow's table format: columns + data
    assert {"step", "question", "gold", "answer", "correct", "reward"} <= set(table["columns"])
    steps = {row[table["columns"].index("step")] for row in table["data"]}
    assert steps == set(range(int(params["rl.train.steps"])))


def test_direct_inference_evaluates_the_model_init_model(compared: Path, tmp_path: Path):
    """direct_inference evaluates what model_init wrote (data/06_models/base), not the SFT
    model. conf/test's tied tiny models, base and SFT alike, only repeat the newline they are
    prompted with, so the base is swapped for one with an output head of its own (it writes
    visible tokens) and the row is rerun with its DVC stage's command: its sample and rows are
    that model's, evaluated again here with the same parameters, and not the SFT model's."""
    import torch
    from kedro.config import OmegaConfigLoader

    from tirl.datasets.hf_model import HFModelDataset
    from tirl.pipelines.evaluation.nodes import evaluate_model

    data = compared / "data"
    evaluated, reported = data / "07_model_output/evaluation", data / "08_reporting/evaluation"
    assert set(pd.read_csv(evaluated / f"{DIRECT_INFERENCE}/seed0/rows.csv")["question_id"]) == \
        set(pd.read_csv(evaluated / f"{SFT_ONLY}/seed0/rows.csv")["question_id"])
    base_dir = data / "06_models/base"
    shutil.copytree(base_dir, tmp_path / "base")
    try:
        base = HFModelDataset(path=str(base_dir)).load()
        base["model"].config.tie_word_embeddings = False
        head = torch.randn(base["model"].lm_head.weight.shape,
                           generator=torch.Generator().manual_seed(1))
        base["model"].lm_head.weight = torch.nn.Parameter(head)
        HFModelDataset(path=str(base_dir)).save(base)
        _kedro(compared, f"--pipelines={DIRECT_INFERENCE}",
               f"--nodes={DIRECT_INFERENCE}.seed0.evaluate")
        params = OmegaConfigLoader(str(compared / "conf"), base_env="base",
                                   default_run_env="test",
                                   merge_strategy={"parameters": "soft"})["parameters"]
        rows, _, sample, _ = evaluate_model(
            HFModelDataset(path=str(base_dir)).load(),
            pd.read_parquet(data / "03_primary/questions.parquet"),
            pd.read_parquet(data / "03_primary/corpus.parquet"),
            params["evaluation"], params["agent"])
    finally:  # the later tests run on compare's own base
        shutil.rmtree(base_dir)
        shutil.copytree(tmp_path / "base", base_dir)
    direct = pd.read_csv(evaluated / f"{DIRECT_INFERENCE}/seed0/rows.csv")
    trace = ["question_id", "tokens", "turns", "tool_calls", "finish_reason", "exact_match"]
    pd.testing.assert_frame_equal(direct[trace], rows[trace], check_dtype=False)
    assert (reported / f"{DIRECT_INFERENCE}/seed0/sample.md").read_text() == sample
    assert (reported / f"{SFT_ONLY}/seed0/sample.md").read_text() != sample


@pytest.mark.parametrize("stage", ["inspect_rollouts", "inspect_rewards", "evaluation", "report", "sft_only"])
def test_stage_pipelines_run_on_compare_outputs(compared: Path, stage: str):
    _kedro(compared, f"--pipelines={stage}")


def _documented_metrics() -> list[re.Pattern]:
    """The names in the first column of docs/metrics.md's tables; ``<x>`` matches one path part."""
    names = re.findall(r"^\| `([^`]+)` \|", (ROOT / "docs" / "metrics.md").read_text(), flags=re.M)
    return [re.compile("^" + re.sub(r"<[^>]+>", "[^/]+", re.escape(n)) + "$") for n in names]


def test_every_logged_metric_is_documented(compared: Path):
    # Runs after the stage pipelines above (one file runs in one worker, in order): the
    # compare run, its children and every stage's run.
    patterns = _documented_metrics()
    logged = {k for run in _runs(compared) for k in run.data.metrics}
    assert any(k.startswith("rl/") for k in logged) and any(k.startswith("inspect_rewards/") for k in logged)
    undocumented = sorted(k for k in logged if not any(p.match(k) for p in patterns))
    assert not undocumented, f"logged but not in docs/metrics.md: {undocumented}"


@pytest.mark.slow
def test_rl_and_ablation(compared: Path):
    _kedro(compared, "--pipelines=rl")
    assert (compared / "data/06_models/rl").exists()
    _kedro(compared, "--pipelines=vspo_ablation")
    assert (compared / "data/08_reporting/vspo_ablation/ablation.md").read_text().count("|") > 4


@pytest.mark.slow
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "vspo_prs"] + ["vspo_prs"])
def test_each_variant_chain_alone(tmp_path_factory, variant: str):
    project = scratch_project(tmp_path_factory.mktemp(variant))
    _kedro(project, f"--pipelines={variant}")
    assert (project / f"data/08_reporting/evaluation/{variant}/seed0/summary.csv").exists()
    table = pd.read_csv(project / f"data/08_reporting/{variant}/comparison.csv")
    assert set(table["variant"]) == {SFT_ONLY, variant}
    runs = _runs(project)
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_name for r in top] == [variant]
    assert {r.info.run_name for r in runs} == {variant, SFT_ONLY}


def test_pretrain_writes_a_base_that_transformers_loads_and_generates(project: Path):
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _kedro(project, "--pipelines=pretrain")
    out = project / "data" / "06_models" / "builtin-test"  # conf/test: never models/builtin
    assert not (project / "models" / "builtin").exists()
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "Where was Ada born?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    record = json.loads((out / "pretraining.json").read_text())
    assert record["steps"] == 4 and record["world_seeds"][0] == 1_000_000
    assert record["probe"]["per_seed"][0]["world_seed"] == 1 and "em" in record["probe"]["mean"]
    card = (out / "README.md").read_text()
    assert "world seeds" in card and "Reading probe" in card
    assert torch.isfinite(torch.tensor(record["probe"]["mean"]["query_match"]))
