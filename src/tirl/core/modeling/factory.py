"""Local models: a from-scratch tokenizer + Llama model, or a pretrained one from disk.

The built-in path needs no hub: :func:`train_tokenizer` fits a byte-level BPE on the
project's own texts (about a second for a few MB) and :func:`build_model` makes a small
Llama-architecture causal LM (d=256, 4 layers: 3.2M + 256 x vocab parameters, so 3.8M with
the built-in world's 2.3k-token vocabulary, 5.2M at 8k). :func:`load_model` opens any
transformers causal LM (a local directory, or a hub id already in the local cache); it only
downloads when the caller opts in with ``allow_download=True``.

Token choices (same as Qwen2.5-Instruct so one code path serves both):
``eos_token = <|im_end|>`` (generation stops at the end of a turn), ``pad_token =
<|endoftext|>``, no bos token; the model's ``generation_config.eos_token_id`` lists both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tirl.core.agent.protocol import CHAT_TEMPLATE, ENDOFTEXT, IM_END, PROTOCOL_TAGS, SPECIAL_TOKENS
from tirl.core.config import field_

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
                    model_max_length: int = 1024) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    Template tokens (:data:`SPECIAL_TOKENS`) are special added tokens; protocol tags
    (:data:`PROTOCOL_TAGS`) are non-special added tokens, so both are always a single token
    and the tags survive ``skip_special_tokens=True``. Byte-level means no text is ever
    unknown. Returns a ``PreTrainedTokenizerFast`` with :data:`CHAT_TEMPLATE` set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from tokenizers import AddedToken, Regex
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # GPT-2 style byte-level BPE, except that a space before a capital letter or a digit is
    # its own token. Otherwise "Paris" after a space and "Paris" after `"` or `<answer>` are
    # different tokens, and the two copies this agent must learn (question -> search query,
    # passage -> answer) become a lookup of token pairs instead of a plain copy. The cost is
    # one token per capitalised word or number (about +20% on the built-in corpus).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" (?=[\p{Lu}\p{N}])"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # Tags are added after training so BPE cannot learn them as merges of smaller pieces.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in PROTOCOL_TAGS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=None,
        bos_token=None, model_max_length=model_max_length, padding_side="left",
        clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    log.info("trained byte-level BPE tokenizer: %d tokens", len(fast))
    return fast


@dataclass(frozen=True)
class ModelConfig:
    """Size of the built-in from-scratch Llama model."""

    d_model: int = field_(256, doc="hidden size", gt=0)
    n_layers: int = field_(4, doc="transformer blocks", gt=0)
    n_heads: int = field_(4, doc="attention heads (d_model must divide by it)", gt=0)
    n_kv_heads: int | None = field_(None, doc="key/value heads for GQA; null = n_heads")
    d_ff: int | None = field_(None, doc="MLP hidden size; null = 8/3 * d_model rounded up to 64")
    max_len: int = field_(1024, doc="maximum positions", gt=0)
    rope_theta: float = field_(10000.0, doc="RoPE base", gt=0)
    tie_embeddings: bool = field_(True, doc="share input and output embeddings (saves vocab*d params)")
    init_std: float = field_(0.02, doc="weight init std", gt=0)
    seed: int = field_(0, doc="init seed")

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        kv = self.n_kv_heads or self.n_heads
        if self.n_heads % kv:
            raise ValueError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={kv}")

    @property
    def ff_size(self) -> int:
        return self.d_ff or 64 * -(-(8 * self.d_model // 3) // 64)


def _stop_ids(tokenizer: Any) -> list[int]:
    ids = []
    for t in (IM_END, ENDOFTEXT, tokenizer.eos_token):
        i = tokenizer.convert_tokens_to_ids(t) if t else None
        if i is not None and i != tokenizer.unk_token_id and i not in ids:
            ids.append(i)
    return ids


def build_model(tokenizer: Any, config: ModelConfig | None = None) -> Any:
    """A from-scratch ``LlamaForCausalLM`` sized by ``config`` with ``len(tokenizer)`` vocab."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = config or ModelConfig()
    stops = _stop_ids(tokenizer)
    hf_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.d_model, intermediate_size=config.ff_size,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads or config.n_heads,
        max_position_embeddings=config.max_len, rope_theta=config.rope_theta,
        tie_word_embeddings=config.tie_embeddings, initializer_range=config.init_std,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=stops[0], bos_token_id=None,
    )
    # Seed locally so that building a model does not disturb the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(hf_config)
    model.generation_config = GenerationConfig(
        eos_token_id=stops, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    n = sum(p.numel() for p in model.parameters())
    log.info("built Llama model: %.2fM parameters (%s)", n / 1e6, config)
    return model


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {list(DTYPES)}")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def load_model(spec: str, *, dtype: str = "auto", device: str | None = None,
               allow_download: bool = False, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local directory or a hub id.

    ``allow_download=False`` (default) sets ``local_files_only`` so a run never reaches the
    hub; a hub id then works only if it is already in the local cache. ``device`` is moved to
    after loading (``None`` leaves the model on CPU).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"local_files_only": not allow_download, "trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=_torch_dtype(dtype), **kwargs)
    except OSError as exc:
        hint = "" if allow_download else " (downloads are off: pass allow_download=True to fetch it)"
        raise OSError(f"cannot load model {spec!r}{hint}: {exc}") from exc
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; batching needs one, and eos is safe
        # because padded positions are masked out of attention and loss.
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model = model.to(device)
    return model, tokenizer


def ensure_protocol_tokens(tokenizer: Any, model: Any | None = None) -> list[str]:
    """Make every protocol tag a single token, for pretrained models that lack some.

    Missing tags are added as non-special tokens and the model's embeddings resized; new rows
    start at the mean of the existing embeddings (transformers' default for resize), which
    keeps the initial distribution close to the pretrained one. A missing chat template is
    set to :data:`CHAT_TEMPLATE`. Returns the tags that were added.
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [t for t in PROTOCOL_TAGS if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in missing])
        log.info("added protocol tokens: %s", missing)
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    return missing


# --- the model_init stage's core: config + one entry point --------------------------------


#: ``model_init.model`` values that are not a path or hub id.
BUILTIN, SCRATCH = "builtin", "scratch"


@dataclass(frozen=True)
class ModelInitConfig:
    """``model_init`` parameters: which base model the later stages start from."""

    model: str = field_(BUILTIN, doc="'builtin' (the committed base pretrained on fresh worlds, "
                                     "builtin_dir), 'scratch' (train a tokenizer on the benchmark "
                                     "world and build an untrained model: tests and CI), a GGUF "
                                     "checkpoint (a .gguf path, or an alias such as "
                                     "'smollm2-135m-instruct': tirl.core.modeling.gguf), or a "
                                     "local path / HF hub id of a pretrained causal LM")
    builtin_dir: str = field_("models/builtin", doc="builtin: the committed base's directory "
                                                    "(written by the pretrain stage)")
    vocab_size: int = field_(8000, doc="scratch: BPE vocabulary size", ge=300)
    min_frequency: int = field_(2, doc="scratch: minimum pair count for a BPE merge", ge=1)
    architecture: ModelConfig = field_(default_factory=ModelConfig, doc="scratch: model size")
    dtype: str = field_("auto", doc="pretrained: weights dtype", choices=DTYPES)
    allow_download: bool = field_(False, doc="pretrained: let transformers fetch from the hub")
    trust_remote_code: bool = field_(False, doc="pretrained: run code shipped with the model")
    add_protocol_tokens: bool = field_(True, doc="pretrained: add missing protocol tags as tokens")
    gguf_cache_dir: str = field_("data/06_models/hf_cache", doc="GGUF: where a GGUF checkpoint's "
                                                                "converted HF directory is cached")


def render_chats_as_text(chats: Iterable[list[dict[str, str]]],
                         tools: list[dict[str, Any]] | None = None) -> list[str]:
    """Chats rendered by :data:`CHAT_TEMPLATE` without a trained tokenizer (for BPE training,
    so that the template's fixed text compresses well)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from tirl.core.agent.protocol import render_text

    # A vocabulary-less tokenizer is enough: only its chat-template renderer is used.
    shell = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    shell.chat_template = CHAT_TEMPLATE
    return [render_text(shell, chat, tools) for chat in chats]


def make_base_model(config: ModelInitConfig, texts: Iterable[str] = ()) -> tuple[Any, Any]:
    """``(model, tokenizer)`` per ``config``: scratch trains on ``texts``; builtin loads the
    committed base; a GGUF checkpoint is converted once (cached) and then loaded as a path;
    anything else is loaded as a path or hub id."""
    from tirl.core.modeling import gguf

    if config.model == SCRATCH:
        texts = list(texts)
        if not texts:
            raise ValueError("model_init.model='scratch' needs training texts (corpus, questions)")
        tokenizer = train_tokenizer(texts, vocab_size=config.vocab_size,
                                    min_frequency=config.min_frequency,
                                    model_max_length=config.architecture.max_len)
        return build_model(tokenizer, config.architecture), tokenizer
    if config.model == BUILTIN:
        if not (Path(config.builtin_dir) / "config.json").is_file():
            raise FileNotFoundError(
                f"model_init.builtin_dir: no model at {config.builtin_dir!r} (expected config.json). "
                "The built-in base is committed there; rebuild it with `dvc repro pretrain`, or "
                "set model_init.model: scratch for an untrained model")
        return load_model(config.builtin_dir, dtype=config.dtype)
    if gguf.is_gguf_spec(config.model):
        local = gguf.gguf_to_hf(gguf.resolve_gguf(config.model), Path(config.gguf_cache_dir))
        model, tokenizer = load_model(str(local), dtype=config.dtype)
        # A GGUF's own template (SmolLM2's) knows no tools: the agent speaks the project's.
        tokenizer.chat_template = CHAT_TEMPLATE
    else:
        model, tokenizer = load_model(config.model, dtype=config.dtype,
                                      allow_download=config.allow_download,
                                      trust_remote_code=config.trust_remote_code)
    if config.add_protocol_tokens:
        ensure_protocol_tokens(tokenizer, model)
    return model, tokenizer
