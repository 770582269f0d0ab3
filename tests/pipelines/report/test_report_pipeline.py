"""The report pipeline's wiring over (variant, seed) runs, and the stacking of their frames."""

from __future__ import annotations

import pandas as pd

from tirl.pipelines.report.nodes import _stack
from tirl.pipelines.report.pipeline import report_pipeline
from tirl.variants import SFT_ONLY, RunKey


def test_reads_every_runs_datasets():
    pipe = report_pipeline({"vspo_prs": {}, "grpo_prs": {}}, [0, 1], with_sft=True, prefix="cmp")
    [node] = pipe.nodes
    assert node.name == "cmp.build_report"
    runs = [RunKey(SFT_ONLY, 0)] + [RunKey(v, s) for v in ("vspo_prs", "grpo_prs") for s in (0, 1)]
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
