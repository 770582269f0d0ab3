"""The report pipeline's wiring over (variant, seed) runs, and the stacking of their frames."""

from __future__ import annotations

import pandas as pd
import pytest

from tirl.pipelines.report.nodes import OUTPUTS, _stack, build_report, sft_history
from tirl.pipelines.report.pipeline import create_pipeline, report_pipeline
from tirl.variants import ABLATION, AS_IS, DIRECT_INFERENCE, SFT_ONLY, RunKey


def test_reads_every_runs_datasets():
    pipe = report_pipeline({"vspo_prs": {}, "grpo_prs": {}}, [0, 1], as_is=AS_IS, prefix="cmp")
    [node] = pipe.nodes
    assert node.name == "cmp.build_report"
    runs = [RunKey(DIRECT_INFERENCE, 0), RunKey(SFT_ONLY, 0)] + [
        RunKey(v, s) for v in ("vspo_prs", "grpo_prs") for s in (0, 1)]
    assert node.inputs == (["params:report", "sft_metrics"]
                           + [r.dataset("eval_summary") for r in runs]
                           + [r.dataset("rl_history") for r in runs if r.trained]
                           + [r.dataset("eval_rows") for r in runs])
    assert set(node.outputs) == {f"cmp.{name}" for name in OUTPUTS}


def test_a_single_variant_report_writes_no_ablation():
    [node] = report_pipeline({"vspo_prs": {}}, [0], as_is=[SFT_ONLY], prefix="vspo_prs",
                             ablation=False).nodes
    assert "vspo_prs.ablation_md" not in node.outputs
    assert "vspo_prs.training_curves" in node.outputs


def test_stack_labels_rows_with_variant_and_seed():
    frame = pd.DataFrame({"x": [1, 2]})
    stacked = _stack({RunKey("vspo_prs", 1): frame, RunKey(SFT_ONLY, 0): frame,
                      RunKey("grpo_prs", 0): pd.DataFrame()})
    assert stacked[["variant", "seed"]].values.tolist() == [
        ["vspo_prs", 1], ["vspo_prs", 1], [SFT_ONLY, 0], [SFT_ONLY, 0]]
    assert _stack({}).empty


def test_the_report_stage_reads_direct_inference_and_sft_only():
    """What DVC's report stage runs: the compare report, with both as-is rows."""
    [node] = create_pipeline().nodes
    assert {RunKey(v, 0).dataset("eval_rows") for v in AS_IS} <= set(node.inputs)
    assert RunKey(DIRECT_INFERENCE, 0).dataset("rl_history") not in node.inputs


def test_an_unknown_as_is_run_is_refused():
    with pytest.raises(ValueError, match="as_is.*'sft'.*known"):
        report_pipeline({"vspo_prs": {}}, [0], as_is=["sft"], prefix="cmp")


def _summary(em):
    return pd.DataFrame([{"benchmark": b, "exact_match": em} for b in ("single_hop", "all")])


def _eval_rows(ems):
    return pd.DataFrame([{"benchmark": "single_hop", "question_id": f"q{i}", "sample_idx": 0,
                          "exact_match": x} for i, x in enumerate(ems)])


def test_build_report_draws_the_sft_loss_and_explains_a_missing_ablation():
    runs = [RunKey(SFT_ONLY, 0), RunKey("vspo_prs", 0)]
    history = pd.DataFrame({"step": [0, 1], "reward/mean": [0.2, 0.4], "actor/kl": [0.0, 0.01]})
    sft = {"sft/final_loss": 0.5, "history": [{"step": 0, "sft/loss": 1.0},
                                              {"step": 1, "sft/loss": 0.6}]}
    out = build_report(runs, {"metrics": ["exact_match"]}, sft,
                       _summary(0.2), _summary(0.4), history,
                       _eval_rows([0.0, 1.0, 0.0]), _eval_rows([1.0, 1.0, 0.0]))
    assert set(out) == set(OUTPUTS)
    titles = [ax.get_title() for ax in out["training_curves"].axes if ax.axison]
    assert titles == ["KL to the reference", "SFT loss"]
    assert "± n/a" in out["comparison_md"]  # one seed: no spread
    # no run of the grid here: the file says which command fills it, and which run each cell is
    assert "kedro run --pipelines=vspo_ablation" in out["ablation_md"]
    assert all(f"not run (`{name}`)" in out["ablation_md"] for name in ABLATION)


def test_build_report_fills_the_ablation_grid():
    runs = [RunKey(name, 0) for name in ABLATION]
    frames = [_summary(0.1 * i) for i in range(len(runs))]
    out = build_report(runs, {}, {"history": []}, *frames,
                       *[pd.DataFrame() for _ in runs], *[pd.DataFrame() for _ in runs])
    assert "not run" not in out["ablation_md"]
    # vspo_value_clip_off, vspo_value_clip_on: the 5th and 6th runs
    assert "| value | 0.400 ± n/a (1 seed) | 0.500 ± n/a (1 seed) |" in out["ablation_md"]


def test_sft_history_refuses_a_malformed_history():
    assert sft_history({"history": []}).empty and sft_history(None).empty
    assert list(sft_history({"history": [{"step": 0, "sft/loss": 1.0}]})["variant"]) == ["sft"]
    with pytest.raises(ValueError, match="sft_metrics.*history"):
        sft_history({"history": [{"loss": 1.0}]})
