"""How fast does the built-in model learn to copy names from its context? (a diagnostic)

The agent needs in-context copying twice per hop: the question's entity into the search
query, then the answer from the passages. This script runs the SFT stage's own LM phase
(``tirl.core.sft.loop.train_sft``: packed corpus passages + rendered train gold chats, loss on
every token, the settings of ``conf/base/parameters_sft.yml`` with ``pretrain_steps =
--steps``; then the one SFT step that ``train_sft`` always runs) on the base model and, every
``--every`` LM steps, measures on the validation gold chats, teacher-forced:

- ``copy``: greedy next-token accuracy at entity-name tokens that already occur earlier in the
  same chat (what copying a name needs);
- ``answer``: accuracy at the token right after ``<answer>`` (picking the right name).

``--rename`` permutes the world's entity names among entities of the same type, separately
for every training chat, so that the facts in the chats cannot be memorised and only copying
lowers the loss (validation is measured on the original chats and on renamed ones).

    .venv/bin/python scripts/copy_curve.py [--rename] [--steps 1000] [--every 250]
        [--precision fp32|bf16] [--data data] [--params conf/base/parameters_sft.yml] [--out FILE]

Needs the outputs of ``kedro run --pipelines=data_prep`` and ``--pipelines=model_init``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from tirl.core.agent.protocol import ANSWER_OPEN, default_tools, render_text  # noqa: E402
from tirl.core.config import build_config  # noqa: E402
from tirl.core.data.chats import chats_by_split, passage_texts  # noqa: E402
from tirl.core.sft.config import SFTConfig  # noqa: E402
from tirl.core.sft.loop import train_sft  # noqa: E402
from tirl.datasets.hf_model import HFModelDataset  # noqa: E402

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
    ap.add_argument("--steps", type=int, default=1000, help="LM steps (sft.pretrain_steps)")
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--data", default="data")
    ap.add_argument("--params", default="conf/base/parameters_sft.yml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    kb = json.loads((data / "03_primary/world_kb.json").read_text())
    questions = pd.read_parquet(data / "03_primary/questions.parquet")
    corpus = pd.read_parquet(data / "03_primary/corpus.parquet")
    by_split = chats_by_split(pd.read_parquet(data / "03_primary/gold_trajectories.parquet"),
                              questions)
    base = HFModelDataset(path=str(data / "06_models/base")).load()
    model, tok = base["model"], base["tokenizer"]
    params = yaml.safe_load(Path(args.params).read_text())["sft"]
    config = build_config(SFTConfig, {**params, "pretrain_steps": args.steps, "max_steps": 1,
                                      "precision": args.precision, "probe_size": 0,
                                      "progress_bar": False}, "sft")

    train = by_split["train"]
    if args.rename:
        rename_train = renamer(kb["entities"], seed=0)
        train = [rename_train(c) for c in train]
    space = set(tok(" ", add_special_tokens=False)["input_ids"])
    name_ids = {i for e in kb["entities"] for i in tok(e["name"], add_special_tokens=False)["input_ids"]
                } - space
    rename_val = renamer(kb["entities"], seed=7)
    # Rendered as the LM phase renders chats: without the system turn.
    evals = {name: [torch.tensor(tok(render_text(tok, [m for m in c if m["role"] != "system"]),
                                     add_special_tokens=False)["input_ids"]) for c in chats]
             for name, chats in {"val": by_split["val"],
                                 "val_renamed": [rename_val(c) for c in by_split["val"]]}.items()}
    answer_id = tok.convert_tokens_to_ids(ANSWER_OPEN)
    curve: list[dict] = []
    trained = [0.0]

    def measure(step: int, loss: float | None) -> None:
        point = {"step": step, "train_seconds": round(trained[0], 1), "loss": loss,
                 **{f"{k}/{m}": round(v, 3) for k, rs in evals.items()
                    for m, v in copy_accuracy(model, rs, name_ids, answer_id).items()}}
        print(json.dumps(point), flush=True)
        curve.append(point)

    def on_metrics(metrics: Mapping[str, float], step: int) -> None:
        # Called after each optimiser step (global numbering: LM steps come first).
        if "pretrain/loss" not in metrics:
            return
        trained[0] += metrics["pretrain/tokens"] / metrics["pretrain/tokens_per_s"]
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            measure(step + 1, round(metrics["pretrain/loss"], 3))

    measure(0, None)
    train_sft(model, tok, train, config, tools=default_tools(),
              pretrain_texts=passage_texts(corpus), on_metrics=on_metrics)
    result = {"args": vars(args), "sft": dict(params), "curve": curve}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
