"""Benchmark the multi-turn rollout engine against one plain ``model.generate`` call.

B x G = 32 x 5 trajectories with up to 4 turns (search tool over the built-in world), then one
``model.generate`` call on the same 160 prompts producing the same number of new tokens without
tools. The two alternate ``--repeats`` times (default 3). Reports the median generated
tokens/s of each, trajectories/s, peak memory and the ratio of the two medians (goal >= 0.7),
and writes them as JSON.

    .venv/bin/python scripts/bench_rollout.py [MODEL_DIR] [--out FILE] [--warmup-sft-steps N]

MODEL_DIR defaults to data/06_models/sft when it exists, else a fresh model of the built-in
size (d=256, 4 layers) with a tokenizer trained on the world's texts. An untrained model
rarely writes a well-formed tool call, so episodes end after one turn; ``--warmup-sft-steps``
trains it briefly on the world's gold chats first so that episodes really are multi-turn.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tirl.core.agent import protocol as P  # noqa: E402
from tirl.core.agent.backends import make_backend  # noqa: E402
from tirl.core.agent.rollout import RolloutConfig, rollout_stats, run_rollouts  # noqa: E402
from tirl.core.tools.search import build_search_tool  # noqa: E402
from tirl.hooks import peak_rss_mb  # noqa: E402

log = logging.getLogger("bench_rollout")
ROOT = Path(__file__).resolve().parents[1]


def load_world():
    q, c = ROOT / "data/03_primary/questions.parquet", ROOT / "data/03_primary/corpus.parquet"
    if q.exists() and c.exists():
        import pandas as pd

        return pd.read_parquet(q), pd.read_parquet(c), None
    from tirl.core.world.config import WorldConfig
    from tirl.core.world.generator import generate_world

    world = generate_world(WorldConfig())
    return world.questions, world.corpus, world.plans


def load_or_build_model(model_dir: str | None, corpus, questions, device: str):
    default = ROOT / "data/06_models/sft"
    path = model_dir or (str(default) if (default / "config.json").exists() else None)
    if path:
        from tirl.core.modeling.factory import load_model

        model, tok = load_model(path, dtype="float32")
        return model.to(device).eval(), tok, path
    from tirl.core.modeling.factory import ModelConfig, build_model, train_tokenizer

    texts = [P.SYSTEM_PROMPT, P.format_tool_call("search", {"query": "x"}),
             json.dumps(P.SEARCH_TOOL_SCHEMAS)] + list(corpus["text"]) + list(questions["question"])
    tok = train_tokenizer(texts, vocab_size=8000)
    model = build_model(tok, ModelConfig())
    return model.to(device).eval(), tok, "fresh built-in (d=256, 4 layers, untrained)"


def warmup_sft(model, tok, questions, corpus, plans, tool, steps: int) -> None:
    from tirl.core.config import build_config
    from tirl.core.data.chats import gold_chats
    from tirl.core.data.gold import build_gold_trajectories
    from tirl.core.sft.config import SFTConfig
    from tirl.core.sft.loop import train_sft

    gold_path = ROOT / "data/03_primary/gold_trajectories.parquet"
    if plans is None and gold_path.exists():
        import pandas as pd

        gold = pd.read_parquet(gold_path)
    elif plans is not None:
        gold = build_gold_trajectories(questions, plans, lambda q: tool(query=q), splits=("train",))
    else:
        raise SystemExit("--warmup-sft-steps needs gold chats: data/03_primary/gold_trajectories.parquet "
                         "or the generated world")
    chats = gold_chats(gold)
    cfg = build_config(SFTConfig, {"max_steps": steps, "batch_size": 8, "lr": 2e-3,
                                   "probe_size": 0, "progress_bar": False, "max_len": 1024})
    model.train()
    train_sft(model, tok, chats, cfg, tools=P.SEARCH_TOOL_SCHEMAS)
    model.eval()


def warmup_turns(model, tok, questions, corpus, plans, tool, steps: int, seed: int = 0) -> None:
    """Cheap format warm-up: a short LM fit on the gold chats' turn *texts* (each assistant turn
    with the tool response before it, about 100 tokens), so that an untrained model writes
    well-formed calls and answers and episodes run several turns. Not SFT: for benchmarking."""
    import random

    gold_path = ROOT / "data/03_primary/gold_trajectories.parquet"
    if plans is None and gold_path.exists():
        import pandas as pd

        chats = [json.loads(m) if isinstance(m, str) else list(m)
                 for m in pd.read_parquet(gold_path)["messages"]]
    else:
        from tirl.core.data.gold import build_gold_trajectories

        gold = build_gold_trajectories(questions, plans, lambda q: tool(query=q), splits=("train",))
        chats = [json.loads(m) if isinstance(m, str) else m for m in gold["messages"]]
    texts = []
    for chat in chats:
        for prev, msg in zip(chat, chat[1:]):
            if msg["role"] == "assistant":
                head = (f"{P.IM_START}user\n<tool_response>\n{prev['content']}\n</tool_response>{P.IM_END}\n"
                        if prev["role"] == "tool" else f"{P.IM_START}user\n{prev['content']}{P.IM_END}\n")
                texts.append(head + f"{P.IM_START}assistant\n{msg['content']}{P.IM_END}\n")
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    device = next(model.parameters()).device
    for step in range(steps):
        batch = [tok(t, add_special_tokens=False)["input_ids"][-128:] for t in rng.sample(texts, 32)]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        for i, b in enumerate(batch):
            ids[i, :len(b)] = torch.tensor(b)
            labels[i, :len(b)] = torch.tensor(b)
        loss = model(input_ids=ids.to(device), labels=labels.to(device)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log.info("warm-up step %d/%d loss %.3f", step + 1, steps, loss.item())
    model.eval()


class AlwaysSearch:
    """Bench-only parser: every turn is a search for its own text, so an untrained model's
    episodes run all ``max_turns`` turns and the engine's multi-turn path (tool calls,
    observations, KV reuse, rows leaving the batch) is timed. Not a protocol format."""

    name = "bench_always_search"
    stop_tags = ("</tool_call>", "</answer>")
    observation_tag = "tool_response"

    def parse(self, text, tools=None):
        from tirl.core.types import ParsedTurn, ToolCall

        return ParsedTurn(tool_calls=(ToolCall("search", {"query": text.strip()[:80] or "x"}),))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default=None)
    ap.add_argument("--questions", type=int, default=32, help="B")
    ap.add_argument("--group-size", type=int, default=5, help="G")
    ap.add_argument("--max-turns", type=int, default=4)
    ap.add_argument("--max-new-tokens-per-turn", type=int, default=64)
    ap.add_argument("--max-total-tokens", type=int, default=1024)
    ap.add_argument("--warmup-sft-steps", type=int, default=0, help="SFT steps on gold chats first")
    ap.add_argument("--warmup-turn-steps", type=int, default=0,
                    help="cheap format warm-up steps on short turn texts first (see warmup_turns)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternating runs of each; medians are reported")
    ap.add_argument("--no-kv-reuse", action="store_true", help="hf backend: re-prefill every turn")
    ap.add_argument("--force-turns", action="store_true",
                    help="treat every turn as a search call (untrained models; see AlwaysSearch)")
    ap.add_argument("--out", default=str(ROOT / "data/08_reporting/bench_rollout.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    questions, corpus, plans = load_world()
    model, tok, model_name = load_or_build_model(args.model_dir, corpus, questions, args.device)
    tool = build_search_tool(corpus, tokenizer=tok, top_k=3, max_passage_tokens=64)
    if args.warmup_sft_steps:
        warmup_sft(model, tok, questions, corpus, plans, tool, args.warmup_sft_steps)
        model_name += f" + {args.warmup_sft_steps} warm-up SFT steps"
    if args.warmup_turn_steps:
        warmup_turns(model, tok, questions, corpus, plans, tool, args.warmup_turn_steps, args.seed)
        model_name += f" + {args.warmup_turn_steps} turn-format warm-up steps"
    train = questions[questions["split"] == "train"].head(args.questions).to_dict("records")
    parser = "hermes"
    if args.force_turns:
        from tirl.core.agent.parsers import PARSERS

        PARSERS[AlwaysSearch.name] = AlwaysSearch()
        parser = AlwaysSearch.name
        model_name += ", --force-turns (every turn parsed as a search call)"
    config = RolloutConfig(max_turns=args.max_turns, max_new_tokens_per_turn=args.max_new_tokens_per_turn,
                           max_total_tokens=args.max_total_tokens, seed=args.seed, parser=parser)
    backend = make_backend("hf", model, tok, reuse_kv=not args.no_kv_reuse)
    if args.no_kv_reuse:
        model_name += ", no KV reuse across turns"
    rss_before = peak_rss_mb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def engine_run():
        """The multi-turn engine (same seed each time, so the same trajectories)."""
        t0 = time.perf_counter()
        trajs = run_rollouts(backend=backend, tokenizer=tok, tools={"search": tool},
                             questions=train, group_size=args.group_size, config=config)
        return trajs, time.perf_counter() - t0

    def plain_run(trajs, per_row):
        """One plain generate call: same prompts, same number of new tokens, no tools."""
        n = len(trajs)
        prompts = [t.token_ids[:t.prompt_len] for t in trajs]
        width = max(map(len, prompts))
        ids = torch.full((n, width), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids.to(args.device), attention_mask=attn.to(args.device),
                                 do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=per_row, min_new_tokens=per_row,
                                 pad_token_id=tok.pad_token_id)
        return int((out[:, width:] != -1).sum()), time.perf_counter() - t0

    # The two alternate, `repeats` times each; the medians are reported. One run of either
    # is noisy on a CPU (the plain call's speed swung by 1.5x between runs on a quiet
    # 2-core machine), and alternating spreads slow phases of the machine over both.
    trajs, engine_times, plain_times = None, [], []
    for _ in range(args.repeats):
        trajs, seconds = engine_run()
        engine_times.append(seconds)
        if len(engine_times) == 1:
            stats = rollout_stats(trajs, elapsed_s=seconds)
            gen_tokens = stats["rollout/generated_tokens"]
            per_row = max(1, math.ceil(gen_tokens / len(trajs)))
            rss_engine = peak_rss_mb()
            gpu_engine = (torch.cuda.max_memory_allocated() / 2**20
                          if args.device.startswith("cuda") else None)
        plain_tokens, seconds = plain_run(trajs, per_row)
        plain_times.append(seconds)
    rss_plain = peak_rss_mb()
    n = len(trajs)
    engine_s, plain_s = statistics.median(engine_times), statistics.median(plain_times)
    engine_tps, plain_tps = gen_tokens / engine_s, plain_tokens / plain_s
    result = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": args.device, "platform": platform.platform(),
                    "python": sys.version.split()[0], "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "model": model_name, "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "B": len(train), "G": args.group_size, "config": {k: getattr(config, k) for k in
                                                          ("max_turns", "max_new_tokens_per_turn",
                                                           "max_total_tokens", "temperature", "top_p")},
        "repeats": args.repeats,
        "engine": {"seconds": engine_s, "seconds_each": engine_times,
                   "generated_tokens": gen_tokens, "tokens_per_s": engine_tps,
                   "trajectories_per_s": n / engine_s, "turns_mean": stats["rollout/turns_mean"],
                   "tool_calls": stats["rollout/tool_calls"],
                   "finish": {k.split("/")[-1]: v for k, v in stats.items() if k.startswith("rollout/finish/")},
                   "peak_rss_mib": rss_engine, "peak_gpu_mib": gpu_engine},
        "plain_generate": {"seconds": plain_s, "seconds_each": plain_times,
                           "generated_tokens": plain_tokens, "tokens_per_s": plain_tps,
                           "new_tokens_per_row": per_row, "peak_rss_mib": rss_plain},
        "peak_rss_before_mib": rss_before,
        "ratio_engine_over_plain": engine_tps / plain_tps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(json.dumps(result, indent=2))  # a script: stdout is its interface
    return result


if __name__ == "__main__":
    main()
