"""The reading probe: run a model greedily as an agent on a world it never saw.

    python scripts/reading_probe.py --model models/builtin --world-seed 1 --n 200

prints one JSON line: ``query_match`` (the first query names the question's entity),
``em_given_gold_search`` (exact match given the gold searches), ``em`` (free-running exact
match), each also per question type (``em/bridge``, ...). A seed that the model's
``pretraining.json`` lists as seen in pretraining is refused. See docs/pretraining.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from tirl.core.agent.env import AgentConfig, Sampling
from tirl.core.config import build_config
from tirl.core.eval.probe import check_unseen, reading_probe
from tirl.core.modeling.factory import load_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory (save_pretrained layout)")
    ap.add_argument("--world-seed", type=int, required=True, help="seed of the world to probe on")
    ap.add_argument("--n", type=int, default=200, help="short-form questions to probe")
    ap.add_argument("--sample-seed", type=int, default=0, help="seed of the question sample")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--agent", default="conf/base/parameters_agent.yml",
                    help="YAML file with the agent environment (top-level key 'agent')")
    args = ap.parse_args(argv)
    try:
        check_unseen(args.world_seed, args.model)
    except ValueError as exc:
        print(f"reading_probe: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    env = build_config(AgentConfig, yaml.safe_load(Path(args.agent).read_text())["agent"], "agent")
    model, tokenizer = load_model(args.model)
    found = reading_probe(model, tokenizer, world_seed=args.world_seed, n=args.n,
                          sample_seed=args.sample_seed,
                          rollout=env.rollout_overrides(Sampling(temperature=0.0)),
                          search=dict(env.search))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in found.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
