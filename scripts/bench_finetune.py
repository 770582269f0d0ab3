"""Training throughput of a pretrained model under each fine-tuning choice, side by side.

One training step (the trainer's log-prob pass with chunked logits, backward, AdamW step)
over a fixed batch of random tokens, for: every parameter, only the top ``--top-layers``
decoder layers (``train_top_layers``), and LoRA through peft when it is installed (rank 16 on
the attention and MLP projections), in fp32; with ``--bf16`` also the first two under bf16
autocast (off by default: on a CPU without AVX512-BF16 a bf16 step takes minutes). Reports
tokens/s, seconds per step (median of ``--reps`` after a warm-up), trainable parameters and
the 6N FLOP/s fraction of the matmul peak measured in the same run, as JSON.

    .venv/bin/python scripts/bench_finetune.py MODEL_DIR [--batch 4] [--length 256]
        [--top-layers 10] [--reps 3] [--threads 2] [--bf16] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trl import matmul_peak  # noqa: E402

from tirl.core.modeling.trainable import set_trainable  # noqa: E402
from tirl.core.rl.batch import model_token_logprobs  # noqa: E402
from tirl.datasets.hf_model import HFModelDataset  # noqa: E402


def _lora(model: torch.nn.Module) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))


def timed(model: torch.nn.Module, *, batch: int, length: int, reps: int, bf16: bool) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)

    def one() -> float:
        ids = torch.randint(3, vocab, (batch, length), generator=gen)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logp, _ = model_token_logprobs(model, input_ids=ids, attention_mask=torch.ones_like(ids),
                                           logits_chunk=1024)
        logp.float().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    one()  # warm-up: allocator, optimiser state
    times = [one() for _ in range(reps)]
    step = statistics.median(times)
    return {"median_step_s": step, "tokens_per_s": batch * length / step,
            "trainable_params": sum(p.numel() for p in params)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--top-layers", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = HFModelDataset(path=args.model).load()["model"].float().train()
    n_params = sum(p.numel() for p in base.parameters())
    kw = dict(batch=args.batch, length=args.length, reps=args.reps)
    runs: dict[str, dict] = {}
    top = f"top{args.top_layers}"
    for bf16 in (False, True) if args.bf16 else (False,):
        dtype = "bf16_autocast" if bf16 else "fp32"
        runs[f"full_{dtype}"] = timed(copy.deepcopy(base), bf16=bf16, **kw)
        model = copy.deepcopy(base)
        set_trainable(model, args.top_layers)
        runs[f"{top}_{dtype}"] = timed(model, bf16=bf16, **kw)
    if importlib.util.find_spec("peft") is not None:
        runs["lora_r16_fp32"] = timed(_lora(copy.deepcopy(base)), bf16=False, **kw)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    for name, r in runs.items():
        # 6N per token is the full fine-tune's count; a frozen model does less work for the
        # same tokens, so its "fraction" can pass what full training reaches.
        r["flops_6N"] = 6 * n_params * r["tokens_per_s"]
        r["fraction_of_peak_6N"] = r["flops_6N"] / peaks["bf16" if "bf16" in name else "fp32"]
    result = {"model": args.model, "params": n_params, "batch": args.batch, "length": args.length,
              "threads": args.threads, "matmul_peak_flops": peaks, "runs": runs,
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
