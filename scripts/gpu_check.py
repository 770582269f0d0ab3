"""One-shot GPU check of tirl: environment, bf16 matmul, SFT + VSPO/PRS on CUDA, rollout
throughput, and (if one is on disk) a real pretrained LM running the agent protocol.

Meant to be run ONCE on a borrowed GPU machine through ``scripts/gpu_check.sh`` (which installs
the carried wheels and tees a log); see docs/gpu.md. Runs on CPU too, for a dry run:

    PYTHONPATH=src .venv/bin/python scripts/gpu_check.py --device cpu --tiny --budget-s 120

Every section is wrapped: a failure is recorded in the JSON (with its traceback tail) and the
next section runs. A global time guard (``--budget-s``) skips sections that would not fit and
stops long loops early. Results go to ``$OUT/gpu_check.json`` (``./gpu_check_out`` when OUT is
unset), rewritten after every section so that a run killed by its time limit still leaves what
it measured.

Sections, in order (cheapest and most informative first):
  env          versions, GPU name/memory/bf16, bf16 NxNxN matmul TFLOP/s, vLLM presence
  models_found pretrained causal LMs available offline (HF caches, /models, /data)
  world        built-in world, gold chats, BPE tokenizer, from-scratch Llama model, made by
               the core functions that the data_prep and model_init stages call
  sft          SFT warm start (LM phase + assistant-only SFT) in bf16
  rl           a few VSPO + PRS steps (tirl.core.rl.loop.train) in bf16
  throughput   rollout engine at B x G prompts vs a plain model.generate of as many tokens
  pretrained   multi-turn tool-calling rollouts of a real pretrained LM (if one was found)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import json
import logging
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

# Nothing may reach a hub from the GPU machine (there is no network; a hub lookup would only
# hang until its timeout). Set before transformers is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_MININTERVAL", "10")  # the trainer's bar: few lines in the log

REPO = Path(__file__).resolve().parents[1]
try:  # PYTHONPATH=src is the documented way; fall back so `python scripts/gpu_check.py` works
    import tirl  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from tirl.core.config import to_dict  # noqa: E402

T0 = time.perf_counter()
log = logging.getLogger("gpu_check")


def say(msg: str) -> None:
    """A progress line with the elapsed time (unbuffered: PYTHONUNBUFFERED or flush)."""
    print(f"[gpu_check {time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


class TimeUp(Exception):
    """Raised from a metrics callback to stop a training loop when its time is spent."""


# --- report and time guard ---------------------------------------------------------------


class Report:
    """The JSON report, rewritten atomically after every section."""

    def __init__(self, out_dir: Path, args: argparse.Namespace) -> None:
        self.path = out_dir / "gpu_check.json"
        self.data: dict[str, Any] = {"args": vars(args), "started_unix": time.time(),
                                     "sections": {}, "summary": {}}

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - T0, 2)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=_jsonable))
        tmp.replace(self.path)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item"):
        with contextlib.suppress(Exception):
            return x.item()
    if hasattr(x, "tolist"):
        with contextlib.suppress(Exception):
            return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    return repr(x)


class Budget:
    def __init__(self, total_s: float) -> None:
        self.total_s = total_s

    def left(self) -> float:
        return self.total_s - (time.perf_counter() - T0)


def run_section(name: str, fn, ctx: dict[str, Any], report: Report, budget: Budget, *,
                min_s: float, share: float, reserve_s: float = 0.0) -> None:
    """Run ``fn(ctx, deadline)`` unless fewer than ``min_s`` seconds are left.

    ``deadline`` (a perf_counter time) is the section's soft end: ``share`` of what is left,
    and never later than the global end minus ``reserve_s`` kept for the sections after it.
    """
    left = budget.left()
    entry: dict[str, Any] = {}
    report.data["sections"][name] = entry
    if name in ctx["args"].skip:
        entry.update(status="skipped", reason="--skip")
        say(f"{name}: skipped (--skip)")
        report.write()
        return
    if left < min_s:
        entry.update(status="skipped", reason=f"time guard: {left:.0f}s left < {min_s:.0f}s needed")
        say(f"{name}: skipped, {left:.0f}s left")
        report.write()
        return
    now = time.perf_counter()
    deadline = now + max(min_s, min(left * share, left - reserve_s))
    say(f"{name}: start ({left:.0f}s left, section soft limit {deadline - now:.0f}s)")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    try:
        result = fn(ctx, deadline)
        entry.update(status="ok", result=result)
        say(f"{name}: ok in {time.perf_counter() - t:.1f}s")
    except Exception as exc:  # noqa: BLE001 - one broken section must not stop the check
        tb = traceback.format_exc()
        entry.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000],
                     traceback_tail=tb[-4000:])
        say(f"{name}: ERROR {type(exc).__name__}: {str(exc)[:300]}")
        print(tb[-4000:], flush=True)
    entry["seconds"] = round(time.perf_counter() - t, 2)
    if torch.cuda.is_available():
        entry["peak_cuda_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    report.write()


def need(ctx: dict[str, Any], key: str, section: str) -> Any:
    if key not in ctx:
        raise RuntimeError(f"needs {key!r} from section {section!r}, which did not complete")
    return ctx[key]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --- 1. environment ----------------------------------------------------------------------


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def section_env(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    args, device = ctx["args"], ctx["device"]
    out: dict[str, Any] = {
        "python": sys.version.split()[0], "executable": sys.executable,
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "device": device,
        "packages": {d: _version(d) for d in (
            "transformers", "tokenizers", "accelerate", "numpy", "pandas", "pyarrow", "scipy",
            "bm25s", "jsonschema", "referencing", "rpds-py", "attrs", "sacrebleu", "tqdm",
            "safetensors", "huggingface-hub", "vllm", "kedro", "mlflow", "great-expectations")},
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": p.name, "count": torch.cuda.device_count(),
                      "total_mem_gib": round(p.total_memory / 2**30, 2),
                      "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
                      "bf16_supported": torch.cuda.is_bf16_supported()}
        say(f"GPU {p.name}, {p.total_memory / 2**30:.1f} GiB, bf16 "
            f"{torch.cuda.is_bf16_supported()}")
    # bf16 matmul: 3 warm-ups, 10 timed (the figure KINDS.md reports for these machines).
    n = args.matmul_n or (8192 if device.startswith("cuda") else 512)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    times = []
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    mean = sum(times) / len(times)
    out["matmul_bf16"] = {"n": n, "mean_ms": round(mean * 1e3, 3),
                          "tflops": round(2 * n**3 / mean / 1e12, 2),
                          "best_tflops": round(2 * n**3 / min(times) / 1e12, 2)}
    say(f"bf16 matmul {n}^3: {out['matmul_bf16']['tflops']} TFLOP/s")
    del a, b
    # vLLM: an optional extra. When absent, the backend's lazy import must say what to do.
    out["vllm"] = _vllm_check()
    say(f"vLLM: {out['vllm']['status']}")
    return out


def _vllm_check() -> dict[str, Any]:
    from tirl.core.agent.backends import make_backend

    if importlib.util.find_spec("vllm") is not None:
        # Present: building an engine would take minutes and most of the GPU; report only.
        return {"status": "present (engine not started by this check)",
                "version": _version("vllm")}
    try:
        make_backend("vllm", "no-model")
    except ImportError as exc:
        return {"status": "absent; backend skipped", "import_error": str(exc),
                "clear_message": "pip install" in str(exc) and "vllm" in str(exc).lower()}
    return {"status": "absent but make_backend('vllm') did not raise ImportError (unexpected)"}


# --- 2a. pretrained models on disk ---------------------------------------------------------


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
#: Folders that hold no model directories but can hold many files (caches of other tools).
SKIP_DIRS = {"blobs", "pip", "triton", "torch_extensions", "pypoetry", "uv", "node_modules",
             "__pycache__", "datasets", "xet"}


def _search_roots(extra: list[str]) -> list[Path]:
    roots = [*extra]
    for var in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        if os.environ.get(var):
            roots += [os.environ[var], os.path.join(os.environ[var], "hub")]
    roots += [os.path.expanduser("~/.cache/huggingface"), "/root/.cache/huggingface",
              os.path.expanduser("~/.cache"), "/root/.cache", "/models", "/data", "/opt/models",
              "/workspace", "/mnt/models"]
    seen, out = set(), []
    for r in roots:
        p = Path(r)
        if p.is_dir() and p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def find_causal_lms(roots: list[Path], *, max_depth: int = 7, max_seconds: float = 20.0) -> list[dict[str, Any]]:
    """Directories under ``roots`` holding a causal-LM ``config.json`` and weight files."""
    found, t_end, seen = [], time.perf_counter() + max_seconds, set()
    for root in roots:
        base_depth = len(root.parts)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            if time.perf_counter() > t_end:
                return found
            if len(Path(dirpath).parts) - base_depth >= max_depth:
                dirnames[:] = []
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS]
            if "config.json" not in filenames or os.path.realpath(dirpath) in seen:
                continue
            seen.add(os.path.realpath(dirpath))
            try:
                cfg = json.loads((Path(dirpath) / "config.json").read_text())
            except (OSError, ValueError):
                continue
            archs = cfg.get("architectures") or []
            if not any(str(a).endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))
                       for a in archs):
                continue
            weights = [f for f in filenames if f.endswith(WEIGHT_SUFFIXES)]
            if not weights:
                continue
            size = 0
            for f in weights:
                with contextlib.suppress(OSError):
                    size += (Path(dirpath) / f).stat().st_size  # follows hub snapshot symlinks
            found.append({"path": dirpath, "model_type": cfg.get("model_type"),
                          "architectures": archs, "weights_gib": round(size / 2**30, 3),
                          "has_tokenizer": any(f.startswith("tokenizer") for f in filenames)})
    return found


def _rank_model(m: dict[str, Any]) -> tuple:
    # Prefer Qwen instruct models (the protocol mimics Qwen2.5), then the smallest.
    name = m["path"].lower()
    return (0 if "qwen" in name else 1, 0 if "instruct" in name or "chat" in name else 1,
            0 if m["has_tokenizer"] else 1, m["weights_gib"])


def section_models_found(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    args = ctx["args"]
    roots = _search_roots(args.search_dir)
    found = find_causal_lms(roots, max_seconds=max(5.0, min(10.0, deadline - time.perf_counter())))
    if args.model:
        found.insert(0, {"path": args.model, "model_type": None, "architectures": [],
                         "weights_gib": 0.0, "has_tokenizer": True, "given": True})
    usable = [m for m in found if m["weights_gib"] <= args.max_model_gib and m["has_tokenizer"]]
    usable.sort(key=lambda m: (not m.get("given", False), *_rank_model(m)))
    ctx["pretrained_candidates"] = usable
    say(f"searched {[str(r) for r in roots]}: {len(found)} causal LM dirs"
        + (f", best {usable[0]['path']}" if usable else ", none usable"))
    return {"roots": [str(r) for r in roots], "found": found,
            "chosen": usable[0]["path"] if usable else None,
            "note": None if found else "no pretrained causal LM is available offline here"}


# --- 2b. the built-in world, tokenizer and model ---------------------------------------------


TINY_QUESTIONS = {
    "train": {"single_hop": 40, "bridge": 20, "comparison": 20, "description": 6, "multi_question": 6},
    "val": {"single_hop": 4, "bridge": 4, "comparison": 4, "description": 2, "multi_question": 2},
    "test_in_domain": {"single_hop": 4, "bridge": 4, "comparison": 4, "description": 2,
                       "multi_question": 2},
    "test_ood": {"composition": 8, "description": 2, "multi_question": 2},
}


def section_world(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    """The built-in world, its gold chats, tokenizer and model, made by the core functions
    that the data_prep and model_init nodes call (the nodes import Kedro, absent here)."""
    from tirl.core.agent.env import AgentConfig
    from tirl.core.data.chats import chats_by_split, passage_texts, tokenizer_texts
    from tirl.core.data.gold import answer_coverage, searched_gold_trajectories
    from tirl.core.modeling.factory import SCRATCH, ModelConfig, ModelInitConfig, make_base_model
    from tirl.core.records import records
    from tirl.core.world.config import WorldConfig
    from tirl.core.world.generator import generate_world

    args, timings = ctx["args"], {}
    t = time.perf_counter()
    if args.tiny:
        wcfg = WorldConfig(n_persons=30, n_companies=10, n_universities=4, n_cities=8,
                           n_countries=3, heldout_fraction=0.2, questions=TINY_QUESTIONS)
    else:
        wcfg = WorldConfig()  # the default sizes
    world = generate_world(wcfg)
    timings["world_s"] = time.perf_counter() - t

    # Gold chats as data_prep builds them with the default agent environment (BM25 top-3,
    # whole passages).
    t = time.perf_counter()
    splits = ("train", "val")
    gold = searched_gold_trajectories(world.questions, world.plans,
                                      AgentConfig().search_tool(world.corpus), splits=splits)
    timings["gold_s"] = time.perf_counter() - t

    # Tokenizer and model as model_init builds them for model_init.model = scratch.
    t = time.perf_counter()
    mcfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, max_len=2048) if args.tiny else ModelConfig()
    init = ModelInitConfig(model=SCRATCH, vocab_size=600 if args.tiny else 8000, architecture=mcfg)
    model, tokenizer = make_base_model(init, tokenizer_texts(world.corpus, world.questions, gold))
    timings["base_model_s"] = time.perf_counter() - t

    by_split = chats_by_split(gold, world.questions)
    # The rollouts search as every stage does: the default agent environment.
    search = AgentConfig().search_tool(world.corpus, tokenizer=tokenizer)
    ctx.update(world=world, chats={s: by_split.get(s, []) for s in splits},
               passages=passage_texts(world.corpus), tokenizer=tokenizer, model=model,
               search=search, records=records(world.questions))
    n_params = sum(p.numel() for p in model.parameters())
    say(f"world: {len(world.corpus)} passages, {len(world.questions)} questions, {len(gold)} gold "
        f"chats; tokenizer {len(tokenizer)}; model {n_params / 1e6:.2f}M params")
    return {"world_config": "tiny" if args.tiny else "default",
            "passages": len(world.corpus), "questions": len(world.questions),
            "questions_by_split": world.questions["split"].value_counts().to_dict(),
            "gold_chats": len(gold), "gold_answer_coverage": answer_coverage(gold, world.questions),
            "vocab": len(tokenizer), "model_params_m": round(n_params / 1e6, 3),
            "model_config": to_dict(mcfg),
            "timings_s": {k: round(v, 3) for k, v in timings.items()}}


# --- 3a. SFT ---------------------------------------------------------------------------------


def _accelerator(ctx: dict[str, Any]) -> Any:
    # One Accelerator for SFT and RL: accelerate's state is process-wide, and the trainer's
    # default (cpu = no CUDA) would ignore --device cpu on a GPU machine.
    if "accelerator" not in ctx:
        from accelerate import Accelerator

        ctx["accelerator"] = Accelerator(cpu=not ctx["device"].startswith("cuda"))
    return ctx["accelerator"]


def _time_guard(deadline: float, history: list[dict[str, Any]]):
    """A metrics callback that records each step and stops the loop past ``deadline``."""
    last = [time.perf_counter()]

    def on_metrics(metrics: dict[str, float], step: int) -> None:
        now = time.perf_counter()
        history.append({"step": step, "wall_s": round(now - last[0], 4),
                        **{k: float(v) for k, v in metrics.items()}})
        # Stop when another step of the same length would pass the deadline.
        step_s = now - last[0]
        last[0] = now
        if now + step_s > deadline:
            raise TimeUp(f"stopped by the time guard after step {step}")

    return on_metrics


def _median(history: list[dict[str, Any]], key: str) -> float | None:
    vals = [h[key] for h in history if key in h and math.isfinite(h[key])]
    return round(statistics.median(vals), 5) if vals else None


def phase_summary(history: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """Steps, median step seconds and tokens/s, first and last loss of the SFT phase whose
    metric keys start with ``prefix`` (``pretrain/``: the LM phase; ``""``: SFT)."""
    rows = [h for h in history if f"{prefix}loss" in h]
    return {"steps": len(rows), "step_s_median": _median(rows, "wall_s"),
            "tokens_per_s_median": _median(rows, f"{prefix}tokens_per_s"),
            "loss_first": rows[0][f"{prefix}loss"] if rows else None,
            "loss_last": rows[-1][f"{prefix}loss"] if rows else None}


def _bf16(ctx: dict[str, Any]) -> bool:
    return ctx["device"].startswith("cuda") and torch.cuda.is_bf16_supported() or ctx["args"].bf16_cpu


def _free_cuda(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def section_sft(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    from tirl.core.agent.protocol import default_tools
    from tirl.core.sft.config import SFTConfig
    from tirl.core.sft.loop import train_sft

    args, device = ctx["args"], ctx["device"]
    model, tokenizer = need(ctx, "model", "world"), ctx["tokenizer"]
    acc = _accelerator(ctx)
    bf16 = _bf16(ctx)
    if args.tiny:
        cfg = SFTConfig(pretrain_steps=2, pretrain_seq_len=32, pretrain_batch_size=2, max_steps=4,
                        batch_size=2, warmup_steps=1, probe_size=1, probe_max_new_tokens=4,
                        progress_bar=False, max_len=2048, precision="bf16" if bf16 else "fp32")
        chats = ctx["chats"]["train"][:16]
    else:
        cfg = SFTConfig(pretrain_steps=args.pretrain_steps, pretrain_seq_len=256,
                        pretrain_batch_size=32, max_steps=args.sft_steps, batch_size=16,
                        warmup_steps=20, lr=1e-3, probe_size=4, probe_max_new_tokens=64,
                        progress_bar=False, log_every=50, precision="bf16" if bf16 else "fp32")
        # A seeded sample: the table is sorted by qtype, and a prefix would miss whole types.
        train = ctx["chats"]["train"]
        chats = random.Random(0).sample(train, min(args.sft_chats, len(train)))
    history: list[dict[str, Any]] = []
    t = time.perf_counter()
    stopped: dict[str, str] = {}
    model.to(device)
    summary: dict[str, float] = {}
    # Two calls so that the time guard can end the LM phase without losing SFT: the LM phase
    # (with one throw-away SFT step on 4 chats) gets at most 35% of the section's time.
    if cfg.pretrain_steps:
        pre_end = t + 0.35 * (deadline - t)
        try:
            train_sft(model, tokenizer, chats[:4], replace(cfg, max_steps=1, probe_size=0),
                      tools=default_tools(), pretrain_texts=ctx["passages"], accelerator=acc,
                      on_metrics=_time_guard(pre_end, history))
        except TimeUp as exc:
            stopped["pretrain"] = str(exc)
        history = [h for h in history if "pretrain/loss" in h]
    try:
        model, summary = train_sft(model, tokenizer, chats, replace(cfg, pretrain_steps=0),
                                   tools=default_tools(), accelerator=acc,
                                   on_metrics=_time_guard(deadline, history),
                                   probe_chats={"train": chats, "val": ctx["chats"]["val"]})
    except TimeUp as exc:
        # The model is trained in place: keep what was done and go on to RL.
        stopped["sft"] = str(exc)
    model = acc.unwrap_model(model)
    model.eval()
    wall = time.perf_counter() - t
    ctx["model"] = model
    res = {"precision": cfg.precision, "chats": len(chats), "config": to_dict(cfg),
           "wall_s": round(wall, 2), "stopped_early": stopped or None, "summary": summary,
           "pretrain": phase_summary(history, "pretrain/"), "sft": phase_summary(history, "")}
    say(f"sft: {res['pretrain']['steps']} LM + {res['sft']['steps']} SFT steps, loss "
        f"{res['sft']['loss_first']} -> {res['sft']['loss_last']}, "
        f"{res['sft']['tokens_per_s_median']} tok/s")
    return res


# --- 3b. RL: VSPO + PRS ----------------------------------------------------------------------


def _rollout_config(args: argparse.Namespace, **over: Any) -> Any:
    from tirl.core.agent.rollout import RolloutConfig

    base = dict(max_turns=4, max_new_tokens_per_turn=64, max_total_tokens=2048 if args.tiny else 1024,
                max_tool_response_tokens=256, temperature=1.0, top_p=1.0, max_batch=256,
                backend="hf")
    base.update(over)
    return RolloutConfig(**base)


def section_rl(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    from tirl.core.rl.config import TrainConfig, make_reward
    from tirl.core.rl.loop import train

    args, device = ctx["args"], ctx["device"]
    model, tokenizer = need(ctx, "model", "world"), ctx["tokenizer"]
    if "sft" in args.skip or ctx["report"].data["sections"].get("sft", {}).get("status") != "ok":
        log.warning("rl runs on a model without a completed SFT warm start")
    bf16 = _bf16(ctx)
    b, g = (4, 2) if args.tiny else (args.batch_prompts, args.group_size)
    cfg = TrainConfig(algorithm="vspo", reward="prs", steps=2 if args.tiny else args.rl_steps,
                      batch_prompts=b, group_size=g, lr=5e-5, precision="bf16" if bf16 else "fp32",
                      seed=0, rollout=_rollout_config(args))
    train_q = [r for r in ctx["records"] if r["split"] == "train"]
    history: list[dict[str, Any]] = []
    model.to(device)
    t = time.perf_counter()
    stopped = None
    try:
        model, _ = train(policy=model, tokenizer=tokenizer, questions=train_q, tools=[ctx["search"]],
                         config=cfg, reward_fn=make_reward(cfg), accelerator=_accelerator(ctx),
                         on_metrics=_time_guard(deadline, history))
    except TimeUp as exc:
        stopped = str(exc)
        model = _accelerator(ctx).unwrap_model(model)
    model.eval()
    ctx["model"] = model
    updated = [h for h in history if h.get("batch/empty", 0.0) == 0.0]
    fallback = None
    if not updated and time.perf_counter() < deadline:
        # Every group had zero advantage (e.g. all rewards 0), so VSPO dropped them all and
        # no update ran. One GRPO step (selection none keeps the groups) still exercises the
        # bf16 forward/backward/optimizer path on this device.
        say("rl: no VSPO step reached an update (all groups zero-advantage); one grpo step")
        fcfg = replace(cfg, algorithm="grpo", steps=1)
        fhist: list[dict[str, Any]] = []
        t1 = time.perf_counter()
        try:
            model, _ = train(policy=model, tokenizer=tokenizer, questions=train_q,
                             tools=[ctx["search"]], config=fcfg, reward_fn=make_reward(fcfg),
                             accelerator=_accelerator(ctx),
                             on_metrics=lambda m, s: fhist.append({k: float(v) for k, v in m.items()}))
            fallback = {"algorithm": "grpo", "wall_s": round(time.perf_counter() - t1, 2),
                        "updated": bool(fhist) and fhist[-1].get("batch/empty", 0.0) == 0.0,
                        "metrics": {k: round(v, 5) for k, v in (fhist[-1] if fhist else {}).items()
                                    if k.startswith(("time/", "perf/", "actor/", "loss",
                                                     "reward/mean"))}}
        except Exception as exc:  # noqa: BLE001 - keep the VSPO figures; record the failure
            fallback = {"algorithm": "grpo", "error": f"{type(exc).__name__}: {exc}"[:2000],
                        "traceback_tail": traceback.format_exc()[-3000:]}
            say(f"rl: grpo fallback step failed: {type(exc).__name__}: {str(exc)[:200]}")
            model = _accelerator(ctx).unwrap_model(model)
        model.eval()
        ctx["model"] = model
    keys = ("time/step_s", "time/rollout_s", "time/reward_s", "time/refill_s", "time/update_s",
            "perf/tokens_per_s", "perf/update_tokens_per_s", "reward/mean",
            "rollout/generated_tokens_per_s", "rollout/answered_rate", "rollout/tool_calls_mean",
            "rollout/turns_mean", "vspo/zero_adv_frac", "vspo/replaced", "actor/kl",
            "actor/entropy", "actor/grad_norm", "actor/clip_frac", "loss/total", "step/skipped")
    steps = [{"step": h["step"], **{k: round(h[k], 5) for k in keys if k in h}} for h in history]
    res = {"precision": cfg.precision, "B": b, "G": g, "steps_done": len(history),
           "stopped_early": stopped, "wall_s": round(time.perf_counter() - t, 2),
           "steps_with_update": len(updated), "grpo_update_fallback": fallback,
           "per_step": steps, "medians": {k: _median(history, k) for k in keys},
           "all_metric_keys": sorted({k for h in history for k in h})}
    say(f"rl: {len(history)} steps, step {res['medians']['time/step_s']}s, "
        f"{res['medians']['perf/tokens_per_s']} tok/s, reward {res['medians']['reward/mean']}")
    return res


# --- 3c. rollout engine vs plain generate ------------------------------------------------------


def _bench_helpers() -> Any:
    """scripts/bench_rollout.py (helper H4's) if it is importable, else None."""
    path = REPO / "scripts" / "bench_rollout.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_rollout", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # noqa: BLE001 - fall back to the local timing below
        log.warning("scripts/bench_rollout.py did not import (%s); using the built-in timing", exc)
        return None
    return mod


def _initial_prompts(tokenizer: Any, questions: list[dict[str, Any]], tools: dict[str, Any]) -> list[list[int]]:
    from tirl.core.agent import protocol as P
    from tirl.core.tools.base import tool_schemas

    schemas = tool_schemas(tools)
    return [P.render(tokenizer, P.initial_messages(str(q["question"])), schemas,
                     add_generation_prompt=True) for q in questions]


def time_plain_generate(model: Any, tokenizer: Any, prompts: list[list[int]], new_tokens: int, *,
                        device: str, max_batch: int = 256) -> dict[str, Any]:
    """Sample exactly ``new_tokens`` per prompt with ``model.generate`` (no stops, KV cache)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total_new, t = 0, time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(prompts), max_batch):
            chunk = prompts[lo:lo + max_batch]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for r, p in enumerate(chunk):  # left padding, as the engine does
                ids[r, width - len(p):] = torch.tensor(p)
                attn[r, width - len(p):] = 1
            out = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device),
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 pad_token_id=pad)
            total_new += (out.shape[1] - width) * len(chunk)
    sync(device)
    dt = time.perf_counter() - t
    return {"seconds": round(dt, 3), "new_tokens": total_new, "tokens_per_s": round(total_new / dt, 1)}


def section_throughput(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    from tirl.core.agent.hf_backend import HFBackend
    from tirl.core.agent.rollout import rollout_stats, run_rollouts

    args, device = ctx["args"], ctx["device"]
    model, tokenizer = need(ctx, "model", "world"), ctx["tokenizer"]
    b, g = (4, 2) if args.tiny else (args.bench_b, args.bench_g)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    # A bf16 inference copy, as a rollout worker would hold (the trainer keeps fp32 masters).
    policy = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    tools = {"search": ctx["search"]}
    questions = [r for r in ctx["records"] if r["split"] == "train"][:b]
    cfg = _rollout_config(args)
    helpers = _bench_helpers()
    res: dict[str, Any] = {"B": b, "G": g, "dtype": str(dtype), "rollout_config": to_dict(cfg),
                           "bench_rollout_py": helpers is not None}
    backend = HFBackend(policy, tokenizer, max_batch=cfg.max_batch)
    run_rollouts(backend=backend, tokenizer=tokenizer, tools=tools, questions=questions[:2],
                 group_size=1, config=cfg)  # warm-up: CUDA kernels, allocator, BM25 paths
    sync(device)
    t = time.perf_counter()
    trajs = run_rollouts(backend=backend, tokenizer=tokenizer, tools=tools, questions=questions,
                         group_size=g, config=cfg, seed=1)
    sync(device)
    dt = time.perf_counter() - t
    stats = rollout_stats(trajs, elapsed_s=dt)
    gen = int(stats["rollout/generated_tokens"])
    res["engine"] = {"seconds": round(dt, 3), "generated_tokens": gen,
                     "tokens_per_s": round(gen / dt, 1),
                     "trajectories_per_s": round(len(trajs) / dt, 2),
                     "stats": {k: v for k, v in stats.items() if not k.startswith("rollout/parse_error")}}
    say(f"engine: {len(trajs)} trajectories, {gen} tokens in {dt:.2f}s = {gen / dt:.0f} tok/s")
    if time.perf_counter() < deadline:
        prompts = _initial_prompts(tokenizer, questions, tools)
        prompts = [p for p in prompts for _ in range(g)]
        per_row = max(1, math.ceil(gen / len(prompts)))
        cap = getattr(policy.config, "max_position_embeddings", None)
        if cap:
            per_row = min(per_row, cap - max(len(p) for p in prompts))
        time_plain_generate(policy, tokenizer, prompts[:2], 4, device=device)  # warm-up
        res["plain_generate"] = {"new_tokens_per_row": per_row,
                                 **time_plain_generate(policy, tokenizer, prompts, per_row,
                                                       device=device, max_batch=cfg.max_batch)}
        res["engine_vs_generate"] = round(res["engine"]["tokens_per_s"] /
                                          res["plain_generate"]["tokens_per_s"], 3)
        say(f"plain generate: {res['plain_generate']['tokens_per_s']} tok/s; engine/generate = "
            f"{res['engine_vs_generate']}")
    else:
        res["plain_generate"] = "skipped: section time spent"
    del backend
    _free_cuda(device)
    if helpers is None:
        res["bench_rollout_main"] = "scripts/bench_rollout.py not importable; skipped"
    elif time.perf_counter() >= deadline:
        res["bench_rollout_main"] = "skipped: section time spent"
    else:
        # The project's own benchmark (helper H4's scripts/bench_rollout.py) on this model:
        # it loads the saved directory in fp32 and times engine vs one plain generate.
        d = Path(tempfile.mkdtemp(prefix="gpu_check_bench_"))
        ctx.setdefault("tmpdirs", []).append(d)
        model.save_pretrained(d)
        tokenizer.save_pretrained(d)
        bench_out = d / "bench_rollout.json"
        argv = [str(d), "--device", device, "--questions", str(b), "--group-size", str(g),
                "--max-total-tokens", str(cfg.max_total_tokens), "--out", str(bench_out)]
        say(f"bench_rollout.main({argv[1:]})")
        try:
            r = res["bench_rollout_main"] = helpers.main(argv)
            say(f"bench_rollout (fp32): engine {r['engine']['tokens_per_s']:.0f} tok/s, plain "
                f"{r['plain_generate']['tokens_per_s']:.0f} tok/s, ratio "
                f"{r['ratio_engine_over_plain']:.3f}")
        except Exception as exc:  # noqa: BLE001 - the in-process figures above still stand
            res["bench_rollout_main"] = {"error": f"{type(exc).__name__}: {exc}"[:2000],
                                         "traceback_tail": traceback.format_exc()[-3000:]}
            say(f"bench_rollout.main failed: {type(exc).__name__}: {str(exc)[:200]}")
    del policy
    _free_cuda(device)
    return res


# --- 2c. a real pretrained LM through the agent protocol ---------------------------------------


def _selftest_model_dir(ctx: dict[str, Any]) -> str:
    """Save the built-in model + tokenizer as an HF directory (exercises load_model on CPU)."""
    d = Path(tempfile.mkdtemp(prefix="gpu_check_model_"))
    ctx.setdefault("tmpdirs", []).append(d)
    need(ctx, "model", "world").save_pretrained(d)
    ctx["tokenizer"].save_pretrained(d)
    return str(d)


def _short(text: str, n: int = 1200) -> str:
    return text if len(text) <= n else text[:n] + f" ...[{len(text) - n} chars cut]"


def section_pretrained(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    from tirl.core.agent.hf_backend import HFBackend
    from tirl.core.agent.rollout import rollout_stats, run_rollouts
    from tirl.core.modeling.factory import ensure_protocol_tokens, load_model
    from tirl.core.agent.env import AgentConfig
    from tirl.core.rewards.prs import RewardConfig, build_reward_fn

    args, device = ctx["args"], ctx["device"]
    world = need(ctx, "world", "world")
    cands = list(ctx.get("pretrained_candidates", []))
    source = "found"
    if not cands:
        if not (args.tiny or args.selftest_pretrained):
            return {"status": "no pretrained causal LM found offline; section not run",
                    "searched": ctx["report"].data["sections"].get("models_found", {})
                    .get("result", {}).get("roots")}
        cands, source = [{"path": _selftest_model_dir(ctx)}], "selftest: built-in model saved to a temp dir"
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    load_errors: dict[str, str] = {}
    for cand in cands[:3]:  # the best few: a broken or partial download should not end the check
        path = cand["path"]
        t = time.perf_counter()
        try:
            model, tokenizer = load_model(path, dtype=dtype, device=device)
            break
        except Exception as exc:  # noqa: BLE001 - recorded; the next candidate is tried
            load_errors[path] = f"{type(exc).__name__}: {exc}"[:1000]
            say(f"pretrained: cannot load {path}: {load_errors[path][:200]}")
    else:
        raise RuntimeError(f"no candidate model loaded: {load_errors}")
    added = ensure_protocol_tokens(tokenizer, model)
    model.eval()
    load_s = time.perf_counter() - t
    n_params = sum(p.numel() for p in model.parameters())
    say(f"pretrained: loaded {path} ({n_params / 1e6:.0f}M params, {dtype}) in {load_s:.1f}s; "
        f"added tags {added}")
    tools = AgentConfig().tools(world.corpus, tokenizer)  # the default agent environment
    val = [r for r in ctx["records"] if r["split"] == "val" and r["task"] == "short"]
    b, g = (2, 2) if args.tiny else (args.pretrained_b, 2)
    questions = val[:b]
    cfg = _rollout_config(args, max_new_tokens_per_turn=16 if args.tiny else 256,
                          max_total_tokens=2048 if args.tiny else 4096, temperature=0.7)
    backend = HFBackend(model, tokenizer, max_batch=cfg.max_batch)
    t = time.perf_counter()
    trajs = run_rollouts(backend=backend, tokenizer=tokenizer, tools=tools, questions=questions,
                         group_size=g, config=cfg, seed=0)
    sync(device)
    dt = time.perf_counter() - t
    stats = rollout_stats(trajs, elapsed_s=dt)
    reward_fn = build_reward_fn(RewardConfig(reward="prs"))
    by_id = {str(q["id"]): q for q in questions}
    rewards = [reward_fn(tr, by_id[tr.question_id], step=10_000) for tr in trajs]
    best = max(range(len(trajs)), key=lambda i: (rewards[i].reward, trajs[i].num_tool_calls))
    sample = trajs[best]
    res = {"source": source, "path": path, "load_errors": load_errors, "params_m": round(n_params / 1e6, 1), "dtype": dtype,
           "load_s": round(load_s, 2), "protocol_tags_added": added, "B": len(questions), "G": g,
           "rollout_config": to_dict(cfg), "seconds": round(dt, 2),
           "generated_tokens": int(stats["rollout/generated_tokens"]),
           "tokens_per_s": round(stats["rollout/generated_tokens"] / dt, 1),
           "stats": {k: v for k, v in stats.items()},
           "reward_mean": round(sum(r.reward for r in rewards) / len(rewards), 4),
           "exact_match_mean": round(sum(r.exact_match for r in rewards) / len(rewards), 4),
           "sample": {"question": by_id[sample.question_id]["question"],
                      "gold": by_id[sample.question_id]["answers"], "answer": sample.answer,
                      "finish_reason": sample.finish_reason, "reward": rewards[best].reward,
                      "messages": [{"role": m["role"], "content": _short(m["content"])}
                                   for m in sample.messages if m["role"] != "system"]}}
    say(f"pretrained: {res['generated_tokens']} tokens in {dt:.1f}s = {res['tokens_per_s']} tok/s, "
        f"answered {stats['rollout/answered_rate']:.2f}, reward {res['reward_mean']}")
    del model, backend
    _free_cuda(device)
    return res


# --- main ----------------------------------------------------------------------------------


def key_figures(sections: dict[str, Any]) -> dict[str, Any]:
    """The handful of numbers worth reading first (None where a section did not produce them)."""
    def get(section: str, *path: str) -> Any:
        cur: Any = sections.get(section, {}).get("result")
        for p in path:
            cur = cur.get(p) if isinstance(cur, dict) else None
        return cur

    return {
        "gpu": get("env", "gpu", "name"), "torch": get("env", "torch"),
        "transformers": get("env", "packages", "transformers"),
        "matmul_bf16_tflops": get("env", "matmul_bf16", "tflops"),
        "vllm": get("env", "vllm", "status"),
        "pretrained_found": get("models_found", "chosen"),
        "sft_tokens_per_s": get("sft", "sft", "tokens_per_s_median"),
        "sft_loss": [get("sft", "sft", "loss_first"), get("sft", "sft", "loss_last")],
        "sft_probe_toolcall_wellformed": get("sft", "summary", "probe/val/toolcall_wellformed"),
        "rl_steps": get("rl", "steps_done"), "rl_steps_with_update": get("rl", "steps_with_update"),
        "rl_step_s": get("rl", "medians", "time/step_s"),
        "rl_tokens_per_s": get("rl", "medians", "perf/tokens_per_s"),
        "rl_reward_mean": get("rl", "medians", "reward/mean"),
        "engine_tokens_per_s": get("throughput", "engine", "tokens_per_s"),
        "plain_generate_tokens_per_s": get("throughput", "plain_generate", "tokens_per_s"),
        "engine_vs_generate": get("throughput", "engine_vs_generate"),
        "bench_rollout_ratio": get("throughput", "bench_rollout_main", "ratio_engine_over_plain"),
        "pretrained_tokens_per_s": get("pretrained", "tokens_per_s"),
        "pretrained_reward_mean": get("pretrained", "reward_mean"),
    }


SECTIONS = ("env", "models_found", "world", "sft", "rl", "throughput", "pretrained")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny world/model/steps (CPU dry run)")
    p.add_argument("--budget-s", type=float, default=420.0, help="global time guard (seconds)")
    p.add_argument("--out", default=None, help="output folder (default $OUT or ./gpu_check_out)")
    p.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to skip")
    p.add_argument("--matmul-n", type=int, default=0, help="matmul size (0: 8192 on GPU, 512 on CPU)")
    p.add_argument("--model", default=None, help="a pretrained model dir to try first")
    p.add_argument("--search-dir", nargs="*", default=[], help="extra dirs to search for models")
    p.add_argument("--max-model-gib", type=float, default=40.0, help="skip larger checkpoints")
    p.add_argument("--selftest-pretrained", action="store_true",
                   help="with no model found, run the pretrained section on the saved built-in model")
    p.add_argument("--pretrain-steps", type=int, default=400, help="SFT LM-phase steps")
    p.add_argument("--sft-steps", type=int, default=1000, help="SFT steps")
    p.add_argument("--sft-chats", type=int, default=800, help="train gold chats used by SFT")
    p.add_argument("--rl-steps", type=int, default=8, help="VSPO+PRS steps")
    p.add_argument("--batch-prompts", type=int, default=32, help="RL B")
    p.add_argument("--group-size", type=int, default=5, help="RL G")
    p.add_argument("--bench-b", type=int, default=32, help="throughput B")
    p.add_argument("--bench-g", type=int, default=5, help="throughput G")
    p.add_argument("--pretrained-b", type=int, default=8, help="questions for the pretrained LM")
    p.add_argument("--bf16-cpu", action="store_true", help="bf16 autocast on CPU too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out_dir = Path(args.out or os.environ.get("OUT") or "gpu_check_out")
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        say("CUDA asked for but not available: falling back to cpu")
        args.device = "cpu"
    torch.manual_seed(0)
    if args.device == "cpu" and args.tiny:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    report = Report(out_dir, args)
    budget = Budget(args.budget_s)
    ctx: dict[str, Any] = {"args": args, "device": args.device, "report": report}
    say(f"tirl gpu_check: device={args.device} tiny={args.tiny} budget={args.budget_s}s "
        f"out={out_dir}")
    tiny = args.tiny
    # (name, function, min seconds to start, share of what is left, seconds kept for later)
    plan = [
        ("env", section_env, 5, 0.2, 0),
        ("models_found", section_models_found, 3, 0.1, 0),
        ("world", section_world, 10 if tiny else 25, 0.5, 0),
        ("sft", section_sft, 10 if tiny else 30, 0.35, 0 if tiny else 200),
        ("rl", section_rl, 10 if tiny else 40, 0.5, 0 if tiny else 100),
        ("throughput", section_throughput, 5 if tiny else 25, 0.5, 0 if tiny else 60),
        ("pretrained", section_pretrained, 5 if tiny else 45, 1.0, 0),
    ]
    for name, fn, min_s, share, reserve in plan:
        run_section(name, fn, ctx, report, budget, min_s=min_s, share=share, reserve_s=reserve)
    for d in ctx.get("tmpdirs", []):
        shutil.rmtree(d, ignore_errors=True)
    sections = report.data["sections"]
    report.data["summary"] = {
        "status": {k: v.get("status") for k, v in sections.items()},
        "failed": [k for k, v in sections.items() if v.get("status") == "error"],
        "skipped": [k for k, v in sections.items() if v.get("status") == "skipped"],
    }
    report.data["summary"]["key_figures"] = key_figures(sections)
    report.write()
    print(json.dumps(report.data["summary"], indent=1, default=_jsonable), flush=True)
    say(f"done: {report.data['summary']['status']} -> {report.path}")
    return 1 if report.data["summary"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
