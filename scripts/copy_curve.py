"""How fast does the built-in model learn to copy names from its context? (a diagnostic)

The agent needs in-context copying twice per hop: the question's entity into the search
query, then the answer from the passages. This script runs the SFT stage's LM phase alone
(packed corpus passages + rendered train gold chats, loss on every token, the settings of
``conf/base/parameters_sft.yml``) on the base model and, every ``--every`` steps, measures on
the validation gold chats, teacher-forced:

- ``copy``: greedy next-token accuracy at entity-name tokens that already occur earlier in the
  same chat (what copying a name needs);
- ``answer``: accuracy at the token right after ``<answer>`` (picking the right name).

``--rename`` permutes the world's entity names among entities of the same type, separately
for every training chat, so that the facts in the chats cannot be memorised and only copying
lowers the loss (validation is measured on the original chats and on renamed ones).

    .venv/bin/python scripts/copy_curve.py [--rename] [--steps 1000] [--every 250]
        [--precision fp32|bf16] [--lr 2e-3] [--data data] [--out FILE]

Needs the outputs of ``kedro run --pipeline=data_prep`` and ``--pipeline=model_init``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from tirl.core.agent.protocol import ANSWER_OPEN, render_text  # noqa: E402
from tirl.core.rl.sft import pack_texts  # noqa: E402
from tirl.datasets.hf_model import HFModelDataset  # noqa: E402
from tirl.pipelines.sft.nodes import chats_by_split, passage_texts  # noqa: E402

Chat = Sequence[Mapping[str, str]]


def renamer(entities: Sequence[Mapping[str, str]], seed: int):
    """``rename(chat)``: the chat with every entity name replaced by a random other name of
    the same type (one permutation per call, the same throughout the chat)."""
    by_type: dict[str, list[str]] = {}
    for e in entities:
        by_type.setdefault(e["type"], []).append(e["name"])
    names = sorted((n for ns in by_type.values() for n in ns), key=len, reverse=True)
    # Longest names first, whole words only: "Kik" must not match inside "Kikford".
    pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, names)) + r")(?!\w)")
    rng = random.Random(seed)

    def rename(chat: Chat) -> list[dict[str, str]]:
        perm = {}
        for ns in by_type.values():
            shuffled = ns[:]
            rng.shuffle(shuffled)
            perm.update(zip(ns, shuffled))
        return [{**m, "content": pattern.sub(lambda x: perm[x.group(1)], m["content"])}
                for m in chat]
    return rename


@torch.no_grad()
def copy_accuracy(model, rows: Sequence[torch.Tensor], name_ids: set[int], answer_id: int
                  ) -> dict[str, float]:
    model.eval()
    hit = tot = a_hit = a_tot = 0
    for ids in rows:
        pred = model(input_ids=ids[None]).logits[0, :-1].argmax(-1).tolist()
        ids_l = ids.tolist()
        seen: set[int] = set()
        for i, target in enumerate(ids_l[1:]):
            seen.add(ids_l[i])
            if target in name_ids and target in seen:
                tot += 1
                hit += pred[i] == target
            if ids_l[i] == answer_id:
                a_tot += 1
                a_hit += pred[i] == target
    model.train()
    return {"copy": hit / max(tot, 1), "answer": a_hit / max(a_tot, 1)}


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rename", action="store_true")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--data", default="data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = Path(args.data)
    kb = json.loads((data / "03_primary/world_kb.json").read_text())
    questions = pd.read_parquet(data / "03_primary/questions.parquet")
    corpus = pd.read_parquet(data / "03_primary/corpus.parquet")
    by_split = chats_by_split(pd.read_parquet(data / "03_primary/gold_trajectories.parquet"),
                              questions)
    base = HFModelDataset(path=str(data / "06_models/base")).load()
    model, tok = base["model"], base["tokenizer"]

    def text(chat: Chat) -> str:  # as the LM phase renders chats: no system turn
        return render_text(tok, [m for m in chat if m["role"] != "system"])

    train = by_split["train"]
    if args.rename:
        train = [renamer(kb["entities"], seed=0)(c) for c in train]
    rows = pack_texts(tok, passage_texts(corpus) + [text(c) for c in train], args.seq_len)
    space = set(tok(" ", add_special_tokens=False)["input_ids"])
    name_ids = {i for e in kb["entities"] for i in tok(e["name"], add_special_tokens=False)["input_ids"]
                } - space
    rename_val = renamer(kb["entities"], seed=7)
    evals = {name: [torch.tensor(tok(text(c), add_special_tokens=False)["input_ids"]) for c in chats]
             for name, chats in {"val": by_split["val"],
                                 "val_renamed": [rename_val(c) for c in by_split["val"]]}.items()}
    answer_id = tok.convert_tokens_to_ids(ANSWER_OPEN)

    def measure(step: int, seconds: float, loss: float | None) -> dict:
        point = {"step": step, "train_seconds": round(seconds, 1), "loss": loss,
                 **{f"{k}/{m}": round(v, 3) for k, rs in evals.items()
                    for m, v in copy_accuracy(model, rs, name_ids, answer_id).items()}}
        print(json.dumps(point), flush=True)
        return point

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(rows), generator=gen).tolist()
    curve, trained = [measure(0, 0.0, None)], 0.0
    model.train()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order = torch.randperm(len(rows), generator=gen).tolist()
        batch, order = rows[order[: args.batch]], order[args.batch:]
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        sched.step()
        trained += time.perf_counter() - t0
        if step % args.every == 0 or step == args.steps:
            curve.append(measure(step, trained, round(float(loss.detach()), 3)))
    result = {"args": vars(args), "rows": len(rows), "curve": curve}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
