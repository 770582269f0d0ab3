"""One bare training step (forward + backward of the token log-likelihood) vs the matmul peak.

Where the RL update's 6N-FLOPs figure of ``scripts/bench_trl.py`` falls short of the peak,
this isolates the part the 6N rule counts: one forward and backward pass of the model over a
fixed (batch, length) of random tokens, eager and under ``torch.compile`` (``dynamic=True``,
as variable rollout lengths need). Reports seconds per step (median of ``--reps`` steps at a
few lengths after a warm-up), 6N FLOP/s, the measured matmul peak for the dtype and the
fraction, and the one-off compile time, as JSON.

    .venv/bin/python scripts/bench_step.py [MODEL_DIR] [--batch 16] [--length 256] [--reps 5]
        [--no-compile] [--threads 2] [--out FILE]

MODEL_DIR defaults to data/06_models/sft (the main command's SFT model, 3.8M parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trl import matmul_peak  # noqa: E402

from tirl.core.rl.batch import model_token_logprobs  # noqa: E402
from tirl.datasets.hf_model import HFModelDataset  # noqa: E402


def step(model: torch.nn.Module, ids: torch.Tensor) -> None:
    # The trainer's own log-prob function: the pass the RL update runs, minus its losses.
    logp, _ = model_token_logprobs(model, input_ids=ids, attention_mask=torch.ones_like(ids))
    logp.sum().backward()
    model.zero_grad(set_to_none=True)


def timed(model: torch.nn.Module, batch: int, length: int, reps: int, vocab: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    step(model, torch.randint(3, vocab, (batch, length), generator=gen))
    first = time.perf_counter() - t
    # Lengths vary as rollout lengths do; the FLOPs count uses each step's own tokens.
    times, tokens = [], []
    for i in range(reps):
        n = length - (i % 3) * length // 8
        ids = torch.randint(3, vocab, (batch, n), generator=gen)
        t = time.perf_counter()
        step(model, ids)
        times.append(time.perf_counter() - t)
        tokens.append(batch * n)
    return {"first_step_s": first, "median_step_s": statistics.median(times),
            "tokens_per_s": sum(tokens) / sum(times)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="data/06_models/sft")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = HFModelDataset(path=args.model).load()["model"].float().train()
    n_params = sum(p.numel() for p in model.parameters())
    vocab = model.config.vocab_size
    peak = matmul_peak(torch.float32)
    runs = {"eager": timed(model, args.batch, args.length, args.reps, vocab)}
    if not args.no_compile:
        runs["compiled"] = timed(torch.compile(model, dynamic=True), args.batch, args.length,
                                 args.reps, vocab)
    for r in runs.values():
        r["flops_6N"] = 6 * n_params * r["tokens_per_s"]
        r["fraction_of_peak"] = r["flops_6N"] / peak
    result = {"params": n_params, "batch": args.batch, "length": args.length,
              "threads": args.threads, "matmul_peak_flops": peak, "runs": runs}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
