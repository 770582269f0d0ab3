"""SFT warm start: optional LM pretraining on passages, then assistant-only SFT on gold chats.

A from-scratch model knows no language, so :func:`train_sft` can first run
``pretrain_steps`` of plain next-token prediction on packed corpus passages (the text the
search tool will show it), then trains on gold trajectories with the loss on assistant
tokens only (METHOD.md section 5): the model learns to write tool calls and answers, never to
predict the system prompt, the question or a tool's output.

Assistant spans are found by rendering the chat prefix by prefix through the tokenizer's
chat template (:func:`assistant_spans`), so the same code serves the built-in tokenizer and a
real Qwen one. Per-step metrics go to ``on_metrics(dict, step)`` (``sft/loss``, ``sft/lr``,
``sft/tokens_per_s``, ``sft/grad_norm``; ``sft/pretrain/...`` for the LM phase).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tirl.core.agent.protocol import (
    ANSWER_CLOSE, ANSWER_OPEN, ENDOFTEXT, IM_END, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, render, render_text,
)
from tirl.core.config import field_
from tirl.core.modeling.prefix import lm_loss

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # torch cross-entropy's ignore_index: these positions carry no loss
MetricsCallback = Callable[[Mapping[str, float], int], None]

SCHEDULES = ("cosine", "linear", "constant")
PRACTICE_PHASES = ("pretrain", "sft")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class SFTConfig:
    """``sft`` parameters."""

    pretrain_steps: int = field_(0, doc="LM steps on packed corpus passages before SFT (0 = none)", ge=0)
    pretrain_seq_len: int = field_(256, doc="tokens per packed pretraining sequence", ge=8)
    pretrain_batch_size: int = field_(16, doc="sequences per pretraining step", ge=1)
    pretrain_lr: float = field_(1e-3, doc="peak learning rate of the LM phase", gt=0)
    pretrain_chats: bool = field_(False, doc="LM phase also reads the rendered training chats with "
                                             "loss on every token (teaches copying names from context)")
    epochs: float = field_(3.0, doc="passes over the gold trajectories (ignored if max_steps)", gt=0)
    max_steps: int | None = field_(None, doc="SFT optimiser steps; null = from epochs")
    batch_size: int = field_(8, doc="chats per micro-batch", ge=1)
    grad_accum: int = field_(1, doc="micro-batches per optimiser step", ge=1)
    lr: float = field_(1e-3, doc="peak SFT learning rate", gt=0)
    min_lr_ratio: float = field_(0.1, doc="final lr as a fraction of the peak (cosine/linear)", ge=0, le=1)
    warmup_steps: int = field_(10, doc="linear warmup steps of each phase", ge=0)
    schedule: str = field_("cosine", doc="lr decay after warmup", choices=SCHEDULES)
    weight_decay: float = field_(0.01, doc="AdamW decoupled weight decay", ge=0)
    beta1: float = field_(0.9, doc="AdamW beta1", ge=0, le=1)
    beta2: float = field_(0.98, doc="AdamW beta2", ge=0, le=1)
    max_grad_norm: float = field_(1.0, doc="gradient clipping norm (0 = off)", ge=0)
    max_len: int = field_(1024, doc="chats longer than this many tokens are dropped", ge=8)
    precision: str = field_("fp32", doc="fp32, or bf16 autocast (CPU and GPU)", choices=PRECISIONS)
    seed: int = field_(0, doc="seed for batching order and torch")
    log_every: int = field_(10, doc="log a progress line every this many steps", ge=1)
    train_splits: tuple[str, ...] = field_(("train",), doc="question splits whose gold chats are trained on")
    probe_splits: tuple[str, ...] = field_(("train", "val"), doc="splits whose gold chats are probed")
    probe_size: int = field_(8, doc="gold chats per probe split greedily decoded after training (0 = none)", ge=0)
    probe_max_new_tokens: int = field_(64, doc="token budget per probed turn", ge=1)
    progress_bar: bool = field_(True, doc="show a tqdm progress bar")
    practice_phases: tuple[str, ...] = field_(
        ("pretrain", "sft"), doc="phases that also train on the practice chats, if any were given "
                                 "(subset of pretrain, sft)")

    def __post_init__(self) -> None:
        bad = [p for p in self.practice_phases if p not in PRACTICE_PHASES]
        if bad:
            raise ValueError(f"practice_phases: {bad} not in {list(PRACTICE_PHASES)}")


# --- examples ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SFTExample:
    """One tokenised chat. ``labels[t] == input_ids[t]`` on assistant tokens, else -100."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def assistant_spans(tokenizer: Any, messages: Sequence[Mapping[str, str]],
                    tools: Sequence[Mapping[str, Any]] | None = None) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the whole chat and the ``[start, end)`` span of each assistant turn.

    A span starts after the ``<|im_start|>assistant\\n`` header (the generation prompt, which
    the rollout writes, not the model) and ends just after the turn's ``<|im_end|>``, which
    the model must learn to emit to stop. The newline the template puts after ``<|im_end|>``
    is outside: generation stops before it.

    Raises ValueError if the template is not prefix-stable (a rendered prefix is not a token
    prefix of the whole chat), since then no token-exact mask exists.
    """
    full = render(tokenizer, messages, tools)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start_ids = render(tokenizer, messages[:i], tools, add_generation_prompt=True)
        end_ids = render(tokenizer, messages[: i + 1], tools)
        if full[: len(end_ids)] != end_ids or end_ids[: len(start_ids)] != start_ids:
            raise ValueError(f"chat template is not prefix-stable at message {i}; cannot mask tokens")
        start, end = len(start_ids), len(end_ids)
        # Trim the template's trailing text after the turn's last <|im_end|>.
        while end > start and end_ids[end - 1] != im_end:
            end -= 1
        if end == start:
            raise ValueError(f"assistant message {i} rendered without a closing {IM_END}")
        spans.append((start, end))
    return full, spans


def build_sft_examples(tokenizer: Any, chats: Sequence[Sequence[Mapping[str, str]]],
                       tools: Sequence[Mapping[str, Any]] | None = None, *,
                       max_len: int | None = None) -> list[SFTExample]:
    """Tokenise gold chats with labels on assistant tokens only (see :func:`assistant_spans`).

    Chats longer than ``max_len`` tokens are dropped (truncating would cut off the answer
    and teach the model to stop mid-trajectory); the count is logged.
    """
    examples, dropped = [], 0
    for chat in chats:
        ids, spans = assistant_spans(tokenizer, chat, tools)
        if max_len is not None and len(ids) > max_len:
            dropped += 1
            continue
        labels = [IGNORE_INDEX] * len(ids)
        for start, end in spans:
            labels[start:end] = ids[start:end]
        examples.append(SFTExample(input_ids=ids, labels=labels))
    if dropped:
        log.warning("dropped %d of %d chats longer than max_len=%s tokens", dropped, len(chats), max_len)
    if not examples:
        raise ValueError(f"no SFT examples: all {len(chats)} chats were empty or longer than max_len={max_len}")
    return examples


def pack_texts(tokenizer: Any, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """Concatenate ``texts`` separated by ``<|endoftext|>`` and cut into rows.

    Returns a LongTensor of shape ``(n_rows, seq_len)``; the ragged tail is dropped.
    """
    sep = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    if sep is None or sep == tokenizer.unk_token_id:
        sep = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(sep)
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"pretraining text is {len(stream)} tokens, shorter than one row of {seq_len}")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def collate(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch. Returns ``input_ids``, ``labels``, ``attention_mask``, each ``(B, T)``."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One pass of index batches: shuffled, sorted by length in windows of 32 batches and cut
    into batches (so little compute goes to padding), then the batch order shuffled again (so
    a step's batch size in tokens varies, not its order)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w: w + window], key=lambda i: lengths[i])
        batches += [chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sft_batches(examples: Sequence[SFTExample], batch_size: int, rng: random.Random) -> Iterator[list[SFTExample]]:
    """Endless shuffled batches, grouped by length (:func:`length_grouped_batches`, a new
    pass each time the previous one is used up)."""
    lengths = [len(e.input_ids) for e in examples]
    while True:
        for b in length_grouped_batches(lengths, batch_size, rng):
            yield [examples[i] for i in b]


# --- the optimisation loop ----------------------------------------------------------------


def lr_at(step: int, *, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier at optimiser step ``step`` (0-based): linear warmup then decay to
    ``min_ratio``.

    >>> lr_at(0, total=10, warmup=2, schedule="cosine", min_ratio=0.0)
    0.5
    >>> lr_at(2, total=10, warmup=2, schedule="linear", min_ratio=0.0)
    1.0
    >>> round(lr_at(9, total=10, warmup=0, schedule="linear", min_ratio=0.1), 3)
    0.19
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: {schedule!r} is not one of {list(SCHEDULES)}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    frac = (step - warmup) / max(1, total - warmup)
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1 - frac
    return min_ratio + (1 - min_ratio) * decay


def _make_optimizer(model: torch.nn.Module, lr: float, config: SFTConfig) -> torch.optim.Optimizer:
    # No weight decay on norms and biases (1-D tensors), as usual for transformers.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(config.beta1, config.beta2))


def _autocast(device: torch.device, precision: str):
    # Own autocast rather than Accelerator(mixed_precision=...): accelerate's state is a
    # process-wide singleton, and a later stage in the same process may want another setting.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _run_phase(*, model: torch.nn.Module, accelerator: Any, batches: Iterator[dict[str, torch.Tensor]],
               steps: int, lr: float, config: SFTConfig, prefix: str, first_step: int,
               on_metrics: MetricsCallback | None, desc: str) -> list[dict[str, float]]:
    """``steps`` optimiser steps of masked next-token loss; returns per-step metrics."""
    from tqdm.auto import tqdm

    optimizer = _make_optimizer(accelerator.unwrap_model(model), lr, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    history = []
    bar = tqdm(total=steps, desc=desc, disable=not config.progress_bar or not accelerator.is_main_process)
    for step in range(steps):
        t0 = time.perf_counter()
        scale = lr_at(step, total=steps, warmup=config.warmup_steps, schedule=config.schedule,
                      min_ratio=config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        loss_sum, n_tokens, n_trainable = 0.0, 0, 0
        for _ in range(config.grad_accum):
            # Under `accelerate launch` every process draws the same seeded stream and keeps
            # its own share of it, so processes see different data without a sampler.
            for _rank in range(accelerator.num_processes):
                drawn = next(batches)
                if _rank == accelerator.process_index:
                    mine = drawn
            batch = {k: v.to(accelerator.device) for k, v in mine.items()}
            mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
            with _autocast(accelerator.device, config.precision):
                # Gold chats all open with the same system turn: lm_loss runs it once per
                # batch (same loss and gradients as the masked loss of the full batch).
                loss = lm_loss(model, batch["input_ids"], mask,
                               (batch["labels"] != IGNORE_INDEX).float())
            accelerator.backward(loss / config.grad_accum)
            loss_sum += loss.item()
            n_tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            n_trainable += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        grad_norm = (accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                     if config.max_grad_norm > 0 else
                     torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        metrics = {f"{prefix}loss": loss_sum / config.grad_accum, f"{prefix}lr": lr * scale,
                   f"{prefix}grad_norm": float(grad_norm), f"{prefix}tokens_per_s": n_tokens / dt,
                   f"{prefix}trainable_tokens": float(n_trainable), f"{prefix}tokens": float(n_tokens)}
        history.append(metrics)
        if on_metrics is not None and accelerator.is_main_process:
            on_metrics(metrics, first_step + step)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics[f'{prefix}loss']:.3f}")
        if (step + 1) % config.log_every == 0 or step + 1 == steps:
            log.info("%s step %d/%d loss %.4f lr %.2e tok/s %.0f", desc, step + 1, steps,
                     metrics[f"{prefix}loss"], lr * scale, metrics[f"{prefix}tokens_per_s"])
    bar.close()
    return history


def masked_lm_loss(*, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100.

    ``logits``: (B, T, V); ``labels``: (B, T) aligned with the inputs (shifted here).
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX)


def train_sft(model: Any, tokenizer: Any, chats: Sequence[Sequence[Mapping[str, str]]],
              config: SFTConfig, *, tools: Sequence[Mapping[str, Any]] | None = None,
              pretrain_texts: Sequence[str] = (), on_metrics: MetricsCallback | None = None,
              probe_chats: Mapping[str, Sequence[Sequence[Mapping[str, str]]]] | None = None,
              practice_chats: Sequence[Sequence[Mapping[str, str]]] = (),
              accelerator: Any = None) -> tuple[Any, dict[str, float]]:
    """Train ``model`` in place (pretraining phase, then SFT) and return it with a summary.

    Steps are numbered globally: pretraining ``0..P-1``, SFT ``P..P+S-1``. The summary holds
    final/initial losses, step counts, wall time and, if ``probe_size``, greedy-decoding probes
    (see :func:`probe_generation`) on the first ``probe_size`` chats of each entry of
    ``probe_chats`` (name -> chats, keys ``probe/<name>/...``), by default ``{"train": chats}``.
    ``practice_chats`` (other worlds' gold chats) join ``chats`` in the phases named by
    ``config.practice_phases``; probes default to ``chats`` alone.
    """
    from accelerate import Accelerator

    def chats_for(phase: str) -> list[Sequence[Mapping[str, str]]]:
        return list(chats) + (list(practice_chats) if phase in config.practice_phases else [])

    accelerator = accelerator or Accelerator()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    summary: dict[str, float] = {}
    t_start = time.perf_counter()

    if config.pretrain_steps > 0:
        texts = list(pretrain_texts)
        if config.pretrain_chats:
            # Whole chats, template and tool responses included: predicting a passage title
            # right after the query that fetched it, or a name seen earlier in the same
            # context, is the in-context copying the agent needs, with far more examples of
            # it than the assistant turns alone give.
            # The system turn (tool schemas) is left out: it is the same in every chat, so
            # after a few steps it teaches nothing and would take half of every row.
            texts += [render_text(tokenizer, [m for m in chat if m["role"] != "system"])
                      for chat in chats_for("pretrain")]
        if not texts:
            raise ValueError("sft.pretrain_steps > 0 but no pretraining texts were given")
        rows = pack_texts(tokenizer, texts, config.pretrain_seq_len)

        def lm_batches() -> Iterator[dict[str, torch.Tensor]]:
            gen = torch.Generator().manual_seed(config.seed)
            while True:
                for idx in torch.randperm(len(rows), generator=gen).split(config.pretrain_batch_size):
                    yield {"input_ids": rows[idx], "labels": rows[idx]}

        hist = _run_phase(model=model, accelerator=accelerator, batches=lm_batches(),
                          steps=config.pretrain_steps, lr=config.pretrain_lr, config=config,
                          prefix="sft/pretrain/", first_step=0, on_metrics=on_metrics, desc="pretrain")
        summary.update({"pretrain/first_loss": hist[0]["sft/pretrain/loss"],
                        "pretrain/final_loss": _tail_mean(hist, "sft/pretrain/loss"),
                        "pretrain/rows": float(len(rows))})

    sft_chats = chats_for("sft")
    examples = build_sft_examples(tokenizer, sft_chats, tools, max_len=config.max_len)
    per_step = config.batch_size * config.grad_accum
    steps = config.max_steps or max(1, math.ceil(config.epochs * len(examples) / per_step))
    batches = (collate(b, pad_id) for b in sft_batches(examples, config.batch_size, rng))
    hist = _run_phase(model=model, accelerator=accelerator, batches=batches, steps=steps, lr=config.lr,
                      config=config, prefix="sft/", first_step=config.pretrain_steps,
                      on_metrics=on_metrics, desc="sft")
    model = accelerator.unwrap_model(model)
    model.eval()
    summary.update({"first_loss": hist[0]["sft/loss"], "final_loss": _tail_mean(hist, "sft/loss"),
                    "examples": float(len(examples)), "dropped": float(len(sft_chats) - len(examples)),
                    "steps": float(steps), "pretrain_steps": float(config.pretrain_steps),
                    "train_seconds": time.perf_counter() - t_start})
    if config.probe_size:
        for name, probe in (probe_chats if probe_chats is not None else {"train": chats}).items():
            if not probe:
                continue
            found = probe_generation(model, tokenizer, list(probe)[: config.probe_size], tools=tools,
                                     max_new_tokens=config.probe_max_new_tokens)
            summary.update({k.replace("probe/", f"probe/{name}/", 1): v for k, v in found.items()})
        summary["probe_seconds"] = time.perf_counter() - t_start - summary["train_seconds"]
    return model, {f"sft/{k}": float(v) for k, v in summary.items()}


def _tail_mean(history: list[dict[str, float]], key: str, n: int = 10) -> float:
    tail = [h[key] for h in history[-n:]]
    return sum(tail) / len(tail)


# --- a cheap behavioural check ------------------------------------------------------------


def _wellformed_search_call(text: str) -> str | None:
    """The query of a lone, well-formed search call in ``text`` (think allowed before), else None."""
    body = text.split(TOOL_CALL_OPEN, 1)
    if len(body) != 2 or TOOL_CALL_CLOSE not in body[1]:
        return None
    inner, after = body[1].split(TOOL_CALL_CLOSE, 1)
    if after.strip():
        return None
    try:
        call = json.loads(inner)
    except json.JSONDecodeError:
        return None
    args = call.get("arguments") if isinstance(call, dict) else None
    if call.get("name") != "search" or not isinstance(args, dict) or not isinstance(args.get("query"), str):
        return None
    return args["query"]


def _answer_of(text: str) -> str | None:
    if ANSWER_OPEN not in text or ANSWER_CLOSE not in text.split(ANSWER_OPEN, 1)[1]:
        return None
    return text.split(ANSWER_OPEN, 1)[1].split(ANSWER_CLOSE, 1)[0].strip()


@torch.no_grad()
def probe_generation(model: Any, tokenizer: Any, chats: Sequence[Sequence[Mapping[str, str]]], *,
                     tools: Sequence[Mapping[str, Any]] | None = None,
                     max_new_tokens: int = 64) -> dict[str, float]:
    """Greedy-decode every assistant turn of some gold chats, each given the gold history.

    Teacher-forced history isolates per-turn skill from compounding errors. Returns fractions:
    ``probe/toolcall_wellformed`` (tool-call turns that produced a well-formed search call),
    ``probe/query_match`` (its query equals the gold query), ``probe/answer_em`` (final
    answers matching gold, case- and space-insensitive), ``probe/answer_wellformed``.
    """
    model.eval()
    device = next(model.parameters()).device
    stops = [tokenizer.convert_tokens_to_ids(IM_END)]
    counts = {"toolcall_turns": 0, "toolcall_wellformed": 0, "query_match": 0,
              "answer_turns": 0, "answer_wellformed": 0, "answer_em": 0}
    for chat in chats:
        for i, msg in enumerate(chat):
            if msg["role"] != "assistant":
                continue
            prompt = render(tokenizer, chat[:i], tools, add_generation_prompt=True)
            out = model.generate(torch.tensor([prompt], device=device), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                                 attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=device))
            text = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)
            gold_answer = _answer_of(msg["content"])
            if gold_answer is None:
                counts["toolcall_turns"] += 1
                query = _wellformed_search_call(text)
                counts["toolcall_wellformed"] += query is not None
                counts["query_match"] += query is not None and query == _wellformed_search_call(msg["content"])
            else:
                counts["answer_turns"] += 1
                answer = _answer_of(text)
                counts["answer_wellformed"] += answer is not None
                counts["answer_em"] += answer is not None and " ".join(answer.lower().split()) == \
                    " ".join(gold_answer.lower().split())
    tc, an = max(1, counts["toolcall_turns"]), max(1, counts["answer_turns"])
    return {"probe/toolcall_wellformed": counts["toolcall_wellformed"] / tc,
            "probe/query_match": counts["query_match"] / tc,
            "probe/answer_wellformed": counts["answer_wellformed"] / an,
            "probe/answer_em": counts["answer_em"] / an,
            "probe/turns": float(counts["toolcall_turns"] + counts["answer_turns"])}
