"""One RL step of ours vs one step of TRL's GRPOTrainer, same work; plus tokens/s vs peak.

Both sides: the built-in ~4M-parameter Llama and tokenizer (made from the built-in world),
the same ``B`` prompts rendered by the chat template (single turn, no tools), ``G``
completions each of at most ``T`` new tokens at temperature 1, the same reward (a cheap
length-shaping function: work comparable on both sides), beta 0.001 (both keep a frozen
reference), clip 0.2, one optimiser step per batch, token-mean loss, fp32 by default.
Each side runs ``--steps`` steps; the first is a warm-up and the median of the rest is
reported as seconds per step.

The second figure: training tokens/s of our update phase against the machine's measured
matrix-multiply peak for the dtype, by the 6N FLOPs-per-token rule (forward + backward).

    .venv/bin/python scripts/bench_trl.py --threads 2 --out data/08_reporting/bench_trl.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_trl")


def built_in_model_and_prompts(n_prompts: int):
    from tirl.pipelines.data_prep import nodes as dp
    from tirl.pipelines.model_init.nodes import init_model

    def params(stage):
        return yaml.safe_load((ROOT / "conf" / "base" / f"parameters_{stage}.yml").read_text())[stage]

    dp_params = params("data_prep")
    questions, corpus, kb = dp.load_sources(dp_params)
    report = dp.validate_sources(questions, corpus, dp_params)
    gold = dp.build_gold(questions, corpus, kb, report, dp_params, params("agent")["search"])
    base = init_model(corpus, questions, gold, params("model_init"))
    train = questions[questions["split"] == "train"].head(n_prompts)
    tok = base["tokenizer"]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True) for q in train["question"]]
    return base["model"], tok, list(train["id"]), prompts


def shaped_reward(n_tokens: int, budget: int) -> float:
    """Same cheap reward on both sides: prefers completions of about half the budget."""
    return 1.0 - abs(n_tokens / budget - 0.5) * 2.0


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n ** 3 / best


def run_ours(model, tok, ids, prompts, args) -> dict:
    from tirl.core.agent.backends import make_backend
    from tirl.core.config import build_config
    from tirl.core.rl.config import TrainConfig
    from tirl.core.rl.loop import train
    from tirl.core.types import RewardBreakdown, Trajectory

    backend = make_backend("hf", model, tok)
    ids_of = dict(zip(ids, [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]))
    stops = {tok.eos_token_id}

    def rollout(questions, group_size, seed):
        rows = [(q["id"], j) for q in questions for j in range(group_size)]
        outs = backend.generate([ids_of[q] for q, _ in rows], max_new_tokens=args.max_new_tokens,
                                stop_token_ids=stops, temperature=1.0, top_p=1.0, seed=seed)
        trajs = []
        for (qid, j), o in zip(rows, outs):
            p = ids_of[qid]
            trajs.append(Trajectory(
                question_id=qid, sample_idx=j, prompt_len=len(p), token_ids=p + o.token_ids,
                mask=[0] * len(p) + [1] * len(o.token_ids),
                logprobs=[0.0] * len(p) + list(o.logprobs), messages=[], turns=[],
                finish_reason="eos"))
        return trajs

    def reward(t, q, *, step=0):
        r = shaped_reward(sum(t.mask), args.max_new_tokens)
        return RewardBreakdown(reward=r, stage=2, format=0.0, quality=r, exact_match=0.0,
                               outcome=r)

    cfg = build_config(TrainConfig, {
        "algorithm": "grpo", "lr": args.lr, "steps": args.steps, "batch_prompts": len(ids),
        "group_size": args.group_size, "kl_beta": 0.001, "clip_eps": 0.2,
        "precision": args.precision, "seed": 0})
    questions = [{"id": i, "question": p, "answers": ["x"]} for i, p in zip(ids, prompts)]
    _, hist = train(policy=model, tokenizer=tok, questions=questions, tools=[], config=cfg,
                    reward_fn=reward, rollout_fn=rollout)
    rest = hist[1:] or hist
    return {"seconds_per_step": statistics.median(h["time/step_s"] for h in rest),
            "rollout_s": statistics.median(h["time/rollout_s"] for h in rest),
            "update_s": statistics.median(h["time/update_s"] for h in rest),
            "update_tokens_per_s": statistics.median(h["perf/update_tokens_per_s"] for h in rest),
            "completion_tokens": statistics.median(h["rollout/generated_tokens_mean"] for h in rest)}


def run_trl(model, tok, prompts, args) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    def reward(completions, completion_ids=None, **kw):
        return [shaped_reward(len(c), args.max_new_tokens) for c in completion_ids]

    n = len(prompts) * args.group_size
    cfg = GRPOConfig(
        output_dir=str(ROOT / "data" / "09_tmp" / "trl_bench"), use_cpu=not torch.cuda.is_available(),
        per_device_train_batch_size=n, gradient_accumulation_steps=1, steps_per_generation=1,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, learning_rate=args.lr, beta=0.001, epsilon=0.2,
        num_iterations=1, loss_type="dapo", max_steps=args.steps, logging_steps=1,
        report_to="none", save_strategy="no", bf16=args.precision == "bf16",
        disable_dropout=True, seed=0, shuffle_dataset=False, dataloader_num_workers=0,
        gradient_checkpointing=False)
    data = Dataset.from_list([{"prompt": p} for p in prompts])
    # TRL builds its reference model from the policy's path: hand it a saved copy.
    path = ROOT / "data" / "09_tmp" / "trl_bench_model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    trainer = GRPOTrainer(model=str(path), reward_funcs=reward, args=cfg, train_dataset=data,
                          processing_class=tok, callbacks=[Timer()])
    trainer.train()
    rest = times[1:] or times
    return {"seconds_per_step": statistics.median(rest)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "08_reporting" / "bench_trl.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    import copy

    model, tok, ids, prompts = built_in_model_and_prompts(args.prompts)
    n_params = sum(p.numel() for p in model.parameters())
    ours = run_ours(copy.deepcopy(model), tok, ids, prompts, args)
    trl = run_trl(copy.deepcopy(model), tok, prompts, args)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = matmul_peak(dtype)
    achieved = 6 * n_params * ours["update_tokens_per_s"]
    result = {
        "machine": (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                    else f"{os.cpu_count()}-core CPU, {args.threads} threads (shared)"),
        "params": n_params, "prompts": len(ids), "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens, "precision": args.precision,
        "ours": ours, "trl": trl,
        "ratio_ours_over_trl": ours["seconds_per_step"] / trl["seconds_per_step"],
        "matmul_peak_flops": peak, "update_flops_6N": achieved,
        "update_fraction_of_peak": achieved / peak,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    log.info("bench: %s", json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
