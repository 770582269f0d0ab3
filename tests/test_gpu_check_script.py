"""scripts/gpu_check.py without a GPU: it imports, its command line parses, its pure helpers
and its world section (the core functions data_prep and model_init call) work."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"

spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def test_help_lists_the_flags_and_exits_cleanly():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout
    for flag in ("--device", "--tiny", "--budget-s", "--skip", "--model", "--sft-steps",
                 "--rl-steps", "--bench-b", "--selftest-pretrained"):
        assert flag in out


def test_arguments_parse_and_skip_names_a_section():
    args = gpu_check.parse_args(["--tiny", "--skip", "rl", "pretrained", "--budget-s", "60"])
    assert args.tiny and args.skip == ["rl", "pretrained"] and args.budget_s == 60.0
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--skip", "nope"])


def test_phase_summary_reads_one_phase_of_the_history():
    history = [{"step": 0, "wall_s": 1.0, "pretrain/loss": 5.0, "pretrain/tokens_per_s": 10.0},
               {"step": 1, "wall_s": 3.0, "pretrain/loss": 4.0, "pretrain/tokens_per_s": 30.0},
               {"step": 2, "wall_s": 2.0, "loss": 2.0, "tokens_per_s": 7.0}]
    assert gpu_check.phase_summary(history, "pretrain/") == {
        "steps": 2, "step_s_median": 2.0, "tokens_per_s_median": 20.0,
        "loss_first": 5.0, "loss_last": 4.0}
    assert gpu_check.phase_summary(history, "")["loss_first"] == 2.0
    assert gpu_check.phase_summary([], "") == {
        "steps": 0, "step_s_median": None, "tokens_per_s_median": None,
        "loss_first": None, "loss_last": None}


def test_time_guard_records_steps_and_stops_before_the_deadline():
    history: list = []
    on_metrics = gpu_check._time_guard(time.perf_counter() + 3600, history)
    on_metrics({"loss": 1}, 0)
    assert history[0]["step"] == 0 and history[0]["loss"] == 1.0
    with pytest.raises(gpu_check.TimeUp, match="after step 1"):
        gpu_check._time_guard(time.perf_counter() - 1, history)({"loss": 2}, 1)


def test_run_section_records_errors_and_skips_and_goes_on(tmp_path):
    args = gpu_check.parse_args(["--skip", "rl", "--out", str(tmp_path)])
    report = gpu_check.Report(tmp_path, args)
    ctx = {"args": args, "device": "cpu", "report": report}

    def broken(ctx, deadline):
        raise RuntimeError("boom")

    budget = gpu_check.Budget(3600)
    gpu_check.run_section("world", broken, ctx, report, budget, min_s=1, share=0.5)
    gpu_check.run_section("rl", broken, ctx, report, budget, min_s=1, share=0.5)
    gpu_check.run_section("sft", lambda c, d: {"x": 1}, ctx, report, gpu_check.Budget(0),
                          min_s=1, share=0.5)
    gpu_check.run_section("env", lambda c, d: {"x": 1}, ctx, report, budget, min_s=1, share=0.5)
    sections = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert sections["world"]["status"] == "error" and "boom" in sections["world"]["error"]
    assert "RuntimeError" in sections["world"]["traceback_tail"]
    assert sections["rl"] == {"status": "skipped", "reason": "--skip"}
    assert sections["sft"]["status"] == "skipped" and "time guard" in sections["sft"]["reason"]
    assert sections["env"]["status"] == "ok" and sections["env"]["result"] == {"x": 1}


def test_key_figures_pick_the_numbers_and_none_where_a_section_failed():
    sections = {"env": {"result": {"gpu": {"name": "H200"}, "matmul_bf16": {"tflops": 700.0}}},
                "rl": {"status": "error"}}
    figures = gpu_check.key_figures(sections)
    assert figures["gpu"] == "H200" and figures["matmul_bf16_tflops"] == 700.0
    assert figures["rl_steps"] is None and figures["sft_loss"] == [None, None]


def test_find_causal_lms_needs_a_causal_config_and_weights(tmp_path):
    def model_dir(name, arch, weights=True, tokenizer=True):
        d = tmp_path / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"architectures": [arch], "model_type": "x"}))
        if weights:
            (d / "model.safetensors").write_bytes(b"0" * 1024)
        if tokenizer:
            (d / "tokenizer.json").write_text("{}")
        return str(d)

    small = model_dir("hub/llama-small", "LlamaForCausalLM")
    qwen = model_dir("hub/Qwen2.5-0.5B-Instruct", "Qwen2ForCausalLM")
    model_dir("hub/bert", "BertModel")
    model_dir("hub/empty", "LlamaForCausalLM", weights=False)
    found = gpu_check.find_causal_lms([tmp_path])
    assert sorted(m["path"] for m in found) == sorted([small, qwen])
    assert all(m["has_tokenizer"] and m["architectures"] for m in found)
    # Qwen instruct first: the protocol mimics Qwen2.5.
    assert min(found, key=gpu_check._rank_model)["path"] == qwen


def test_world_section_builds_gold_chats_tokenizer_and_model_as_the_stages_do():
    args = gpu_check.parse_args(["--tiny", "--device", "cpu"])
    ctx = {"args": args, "device": "cpu"}
    res = gpu_check.section_world(ctx, deadline=time.perf_counter() + 3600)
    assert res["gold_chats"] == len(ctx["chats"]["train"]) + len(ctx["chats"]["val"]) > 0
    assert all(c[0]["role"] == "system" for c in ctx["chats"]["train"])
    assert ctx["passages"][0].startswith("Doc 1 (Title: ")
    assert res["vocab"] == len(ctx["tokenizer"]) and res["model_config"]["d_model"] == 64
    assert ctx["model"].config.vocab_size == len(ctx["tokenizer"])
    assert {"train", "val"} <= {r["split"] for r in ctx["records"]}
