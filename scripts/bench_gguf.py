"""A GGUF checkpoint through model_init's path: conversion time, cached size, reload, an answer.

Converts ``MODEL`` (a ``.gguf`` path or an alias of tirl.core.modeling.gguf, default the
SmolLM2 alias of the ``smol`` extra) into ``--cache`` (a fresh folder, so the conversion is
timed; default a temporary one), then times the cached reload through ``make_base_model`` and
asks one question with greedy decoding. Prints JSON.

    .venv/bin/python scripts/bench_gguf.py [MODEL] [--cache DIR] [--question TEXT] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tirl.core.agent import protocol as P  # noqa: E402
from tirl.core.modeling import gguf as G  # noqa: E402
from tirl.core.modeling.factory import ModelInitConfig, make_base_model  # noqa: E402


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    ap.add_argument("--cache", default=None, help="cache root (default: a fresh temporary folder)")
    ap.add_argument("--question", default="What is the capital of France?")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cache = Path(args.cache or tempfile.mkdtemp(prefix="tirl-gguf-"))
    src = G.resolve_gguf(args.model)
    t = time.perf_counter()
    target = G.gguf_to_hf(src, cache)
    convert_s = time.perf_counter() - t
    t = time.perf_counter()
    model, tok = make_base_model(ModelInitConfig(model=args.model, gguf_cache_dir=str(cache)))
    reload_s = time.perf_counter() - t
    ids = P.render(tok, [{"role": "user", "content": args.question}], add_generation_prompt=True)
    t = time.perf_counter()
    with torch.no_grad():
        out = model.eval().generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
    answer = tok.decode(out[0, len(ids):], skip_special_tokens=True)
    result = {
        "model": args.model, "gguf": str(src), "gguf_mb": round(src.stat().st_size / 2**20, 1),
        "cached_dir": str(target), "cached_mb": round(_size(target) / 2**20, 1),
        "convert_s": round(convert_s, 1), "reload_s": round(reload_s, 2),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "vocab": len(tok), "question": args.question, "greedy_answer": answer,
        "generate_s": round(time.perf_counter() - t, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
