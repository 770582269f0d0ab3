"""The report pipeline's wiring over (variant, seed) runs, and the stacking of their frames."""

from __future__ import annotations

import pandas as pd
import pytest

from tirl.pipelines.report.nodes import _stack
from tirl.pipelines.report.pipeline import create_pipeline, report_pipeline
from tirl.variants import AS_IS, DIRECT_INFERENCE, SFT_ONLY, RunKey


def test_reads_every_runs_datasets():
    pipe = report_pipeline({"vspo_prs": {}, "grpo_prs": {}}, [0, 1], as_is=AS_IS, prefix="cmp")
    [node] = pipe.nodes
    assert node.name == "cmp.build_report"
    runs = [RunKey(DIRECT_INFERENCE, 0), RunKey(SFT_ONLY, 0)] + [
        RunKey(v, s) for v in ("vspo_prs", "grpo_prs") for s in (0, 1)]
    assert node.inputs == (["params:report"] + [r.dataset("eval_summary") for r in runs]
                           + [r.dataset("rl_history") for r in runs if r.trained]
                           + [r.dataset("eval_rows") for r in runs])
    assert "cmp.comparison_md" in node.outputs


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
