"""SFT warm start + VSPO+PRS on the built-in world; held-out exact match before and after RL.

Runs the stages' own node functions in order, in memory, with conf/base parameters (budgets
overridable from the command line), and writes a JSON summary:

    .venv/bin/python scripts/train_demo.py --rl-steps 40 --out data/08_reporting/demo.json

Not a test: it takes minutes to tens of minutes on a 2-core CPU at the default budgets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("train_demo")


def params(stage: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "base" / f"parameters_{stage}.yml").read_text())[stage]


def held_out_em(model, tokenizer, questions: pd.DataFrame, corpus: pd.DataFrame, n: int,
                search: dict) -> dict[str, float]:
    from tirl.core.config import build_config
    from tirl.core.eval.run import EvalConfig, run_evaluation

    cfg = build_config(EvalConfig, {"splits": ["test_in_domain"], "max_per_benchmark": n,
                                    "search": search, "progress": False}, "evaluation")
    _, _, summary = run_evaluation(model=model, tokenizer=tokenizer, questions=questions,
                                   corpus=corpus, config=cfg)
    row = summary.set_index("benchmark").loc["all"]
    return {"exact_match": float(row["exact_match"]), "f1": float(row["f1"]), "n": float(row["n"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft-pretrain-steps", type=int, default=None, help="default: conf/base")
    ap.add_argument("--sft-max-steps", type=int, default=None, help="default: conf/base (epochs)")
    ap.add_argument("--rl-steps", type=int, default=None, help="default: conf/base")
    ap.add_argument("--algorithm", default="vspo")
    ap.add_argument("--reward", default="prs")
    ap.add_argument("--eval-n", type=int, default=60, help="held-out questions per benchmark")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "08_reporting" / "train_demo.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    from tirl.pipelines.data_prep import nodes as dp
    from tirl.pipelines.model_init.nodes import init_model
    from tirl.pipelines.sft.nodes import run_sft
    from tirl.pipelines.rl.nodes import run_rl

    t0 = time.perf_counter()
    dp_params = params("data_prep")
    questions, corpus, kb = dp.load_sources(dp_params)
    report = dp.validate_sources(questions, corpus, dp_params)
    agent = params("agent")
    gold = dp.build_gold(questions, corpus, kb, report, dp_params, agent["search"])
    practice = dp.build_practice(kb, dp_params, agent["search"])
    base = init_model(corpus, questions, gold, params("model_init"))
    sft_params = params("sft")
    if args.sft_pretrain_steps is not None:
        sft_params["pretrain_steps"] = args.sft_pretrain_steps
    if args.sft_max_steps is not None:
        sft_params["max_steps"] = args.sft_max_steps
    sft_params["progress_bar"] = False
    sft_model, sft_metrics = run_sft(base, gold, practice, corpus, questions, sft_params)
    t_sft = time.perf_counter() - t0

    rl_params = params("rl")
    rl_params["run_name"] = f"train_demo_{args.algorithm}_{args.reward}"
    rl_params["resume"] = False
    rl_params["train"] = {**rl_params["train"], "algorithm": args.algorithm, "reward": args.reward}
    if args.rl_steps is not None:
        rl_params["train"]["steps"] = args.rl_steps
    search = agent["search"]
    before = held_out_em(sft_model["model"], sft_model["tokenizer"], questions, corpus,
                         args.eval_n, search)
    log.info("held-out before RL: %s", before)
    t1 = time.perf_counter()
    rl_model, history = run_rl(sft_model, questions, corpus, rl_params, agent)
    t_rl = time.perf_counter() - t1
    after = held_out_em(rl_model["model"], rl_model["tokenizer"], questions, corpus,
                        args.eval_n, search)
    log.info("held-out after RL: %s", after)

    first, last = history[:5], history[-5:]

    def mean(rows, key):
        return sum(r[key] for r in rows) / max(len(rows), 1)

    summary = {
        "algorithm": args.algorithm, "reward": args.reward,
        "rl_steps": len(history), "sft_final_loss": sft_metrics.get("sft/final_loss"),
        "held_out_before_rl": before, "held_out_after_rl": after,
        "train_reward_first5": mean(first, "reward/mean"),
        "train_reward_last5": mean(last, "reward/mean"),
        "train_em_first5": mean(first, "reward/exact_match"),
        "train_em_last5": mean(last, "reward/exact_match"),
        "sft_seconds": t_sft, "rl_seconds": t_rl, "threads": args.threads,
        "machine": f"{os.cpu_count()}-core CPU" if not torch.cuda.is_available()
        else torch.cuda.get_device_name(0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "history": history}, indent=2))
    log.info("summary: %s", json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
