"""tirl.variants: the experiment tables as data, a leaf that imports no pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

from tirl.variants import ABLATION, AS_IS, DIRECT_INFERENCE, SFT_ONLY, VARIANTS, RunKey


def test_run_key_names_its_namespace_datasets_and_folder():
    run = RunKey("vspo_prs", 2)
    assert run.namespace == "vspo_prs.seed2"
    assert run.dataset("eval_summary") == "vspo_prs.seed2.eval_summary"
    assert run.folder == "vspo_prs/seed2"
    assert run.trained and not RunKey(SFT_ONLY, 0).trained
    assert not RunKey(DIRECT_INFERENCE, 0).trained  # evaluated as is: no RL history
    assert run.run_name([0]) == "vspo_prs" and run.run_name([0, 1, 2]) == "vspo_prs/seed2"
    assert {RunKey("a", 0), RunKey("a", 0)} == {RunKey("a", 0)}  # hashable data, not a string


def test_tables():
    assert list(VARIANTS)[0] == "vspo_prs" and SFT_ONLY not in VARIANTS
    # the paper's Table 2 order: the untrained base first, then SFT, each on its own model
    assert AS_IS == {DIRECT_INFERENCE: "base_model", SFT_ONLY: "sft_model"}
    assert not set(AS_IS) & set(VARIANTS)
    assert len(ABLATION) == 6 and all(o["algorithm"] == "vspo" for o in ABLATION.values())


def test_no_import_cycle_between_report_and_experiments():
    # Each import in a fresh interpreter: the variant tables pull in no pipeline, and the
    # report stage does not need the experiment chains.
    code = "import json, sys, {mod}; print(json.dumps(sorted(sys.modules)))"
    for mod, forbidden in (("tirl.variants", ("tirl.pipelines", "tirl.experiments")),
                           ("tirl.pipelines.report", ("tirl.experiments",))):
        out = subprocess.run([sys.executable, "-c", code.format(mod=mod)], check=True,
                             capture_output=True, text=True).stdout
        assert not [m for m in json.loads(out) if m.startswith(forbidden)], mod
