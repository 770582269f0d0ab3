"""Peak memory of one RL micro-batch forward + backward, chunked logits vs full logits.

A random Llama with SmolLM2-135M's head and width (vocab 49,152, d=576, tied embeddings)
but ``--layers`` decoder blocks (2 by default: the logits, not the blocks, are what the knob
changes), ``--rows`` x ``--width`` tokens (4 x 1024 = 4096), every attended target read
(the worst case for the chunked path: an agent episode's prompt and tool turns would skip
the head altogether). Each setting runs in its own subprocess; the figure is the growth of
the peak RSS (``ru_maxrss``) over the RSS just before the forward, so the model and the
optimizer-free setup are not counted. CPU only; the number depends on the allocator.

    .venv/bin/python scripts/bench_logits_chunk.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(chunk: int | None, layers: int, rows: int, width: int, threads: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tirl.core.rl.batch import model_token_logprobs

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=2048, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).train()
    ids = torch.randint(0, config.vocab_size, (rows, width))
    mask = torch.ones_like(ids)
    before = _rss_mb()
    t0 = time.perf_counter()
    lp, ent = model_token_logprobs(model, input_ids=ids, attention_mask=mask, with_entropy=True,
                                   logits_chunk=chunk)
    lp.sum().backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"logits_chunk": chunk, "tokens": rows * width, "layers": layers,
            "rss_before_mb": round(before), "peak_rss_mb": round(peak),
            "growth_mb": round(peak - before), "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", default="none,1024,256", help="comma list; none = full logits")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        chunk = None if args.child == "none" else int(args.child)
        print(json.dumps(child(chunk, args.layers, args.rows, args.width, args.threads)))
        return
    for c in args.chunks.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", c, "--layers", str(args.layers),
                              "--rows", str(args.rows), "--width", str(args.width),
                              "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
