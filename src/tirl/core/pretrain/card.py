"""The built-in base's model card (README.md) and machine-readable pretraining record.

The record (``pretraining.json``) is what the reading probe reads to refuse seen seeds; the
card says the same for people, with the probe figures, in the Hugging Face model-card layout
(YAML front matter, then Markdown).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

#: What the model directory of a pretrained built-in base records about its pretraining.
PRETRAINING_FILE = "pretraining.json"

#: Probe figures the card tabulates, in this order.
CARD_METRICS = ("query_match", "em_given_gold_search", "em_given_gold_search/single_hop",
                "em/single_hop", "em/bridge", "em/comparison", "em")


def mean_probe(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per-metric mean over the probed worlds (metrics every world reports)."""
    keys = [k for k, v in per_seed[0].items() if isinstance(v, float)]
    keys = [k for k in keys if all(k in p for p in per_seed)]
    return {k: sum(float(p[k]) for p in per_seed) / len(per_seed) for k in keys}


def pretraining_record(summary: Mapping[str, Any], probe: Mapping[str, Any]) -> dict[str, Any]:
    """What the model directory records about its pretraining (no per-step history)."""
    keep = ("steps", "tokens", "computed_tokens", "seconds", "parameters", "vocab", "world_seeds",
            "tokenizer_seeds", "val_seed", "reserved_seeds", "tokens_per_s", "mfu",
            "matmul_peak_gflops", "machine", "config")
    record = {k: summary[k] for k in keep if k in summary}
    record["val"] = list(summary.get("val", []))[-1:]  # the final validation figures
    record["probe"] = dict(probe)
    return record


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def model_card(record: Mapping[str, Any]) -> str:
    """README.md of the built-in base."""
    probe = record.get("probe", {})
    per_seed = probe.get("per_seed", [])
    lo, hi = record["world_seeds"]
    hours = record["seconds"] / 3600
    lines = [
        "---",
        "library_name: transformers",
        "license: apache-2.0",
        "pipeline_tag: text-generation",
        "tags: [tirl, tool-use, agent, synthetic]",
        "---",
        "",
        "# tirl built-in base",
        "",
        "A small Llama-architecture causal LM pretrained by `kedro run --pipelines=pretrain` "
        "(`dvc repro pretrain`) on gold agent chats of freshly generated fictional worlds: "
        "question, `search` tool calls, the search results, the answer, in the project's chat "
        "template. No world is seen twice, so the base learns to read (copy the question's "
        "entity into a query, pick the asked fact out of the passages, search again for a second "
        "hop), not facts. SFT and RL then run on the benchmark world (see docs/pretraining.md).",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {record['parameters'] / 1e6:.2f}M (vocabulary {record['vocab']}) |",
        f"| world seeds | {lo}..{hi} ({hi - lo + 1} worlds) |",
        f"| tokenizer trained on | world seeds {record['tokenizer_seeds'][0]}..{record['tokenizer_seeds'][1]} |",
        f"| validation world | seed {record['val_seed']} (never trained on) |",
        f"| never used (benchmark and probe worlds) | seeds {record['reserved_seeds']} |",
        f"| optimiser steps | {record['steps']} |",
        f"| tokens | {record['tokens'] / 1e6:.1f}M in chats ({record.get('computed_tokens', 0) / 1e6:.1f}M "
        "computed: the shared system turn runs once per batch) |",
        f"| wall clock | {hours:.2f} h |",
        f"| throughput | {record['tokens_per_s']:.0f} chat tokens/s, {100 * record['mfu']:.0f} % of the "
        f"matrix-multiply peak ({record['matmul_peak_gflops']:.0f} GFLOP/s measured in the same run) |",
        f"| machine | {record.get('machine', 'unknown')} |",
        "",
    ]
    if per_seed:
        seeds = [p["world_seed"] for p in per_seed]
        lines += [
            f"## Reading probe ({per_seed[0]['n']} short-form questions per world, worlds never seen)",
            "",
            "`python scripts/reading_probe.py --model models/builtin --world-seed S --n N`; "
            "greedy decoding, BM25 search, top 3 passages.",
            "",
            "| metric | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
            "|---|" + "---|" * (len(seeds) + 1),
        ]
        mean = probe.get("mean", {})
        for key in CARD_METRICS:
            if all(key in p for p in per_seed):
                lines.append(f"| {key} | " + " | ".join(_fmt(p[key]) for p in per_seed)
                             + f" | {_fmt(mean.get(key, float('nan')))} |")
        lines.append("")
    lines += ["## Files", "", "`pretraining.json` holds these figures and the seed ranges; the "
              "probe refuses a seen seed.", ""]
    return "\n".join(lines)


def card_files(record: Mapping[str, Any]) -> dict[str, str]:
    """``{"README.md": card, "pretraining.json": record}``: the files beside the weights."""
    return {"README.md": model_card(record), "pretraining.json": json.dumps(record, indent=2) + "\n"}
