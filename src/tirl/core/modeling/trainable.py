"""Which parameters a training stage updates: all of them, or only the top decoder layers.

On a CPU the cheapest parameter-efficient fine-tune of a pretrained model is to train only its
top ``n`` decoder layers and the final norm (``train_top_layers``, in ``sft`` and
``rl.train``): autograd then stops at the lowest trainable layer, so the backward pass (two
thirds of a training step) runs through ``n`` of the layers only, and the optimiser keeps
moments for those alone. LoRA (peft) saves optimiser memory too, but its backward still runs
through every layer for the activations' gradients, so on this hardware it is slower
(docs/performance.md has the figures). The input embeddings, and so a tied output head,
stay frozen: that is why a model trained this way should keep the protocol tags as text
(``model_init.add_protocol_tokens: false``), since tags added as new tokens would start at
one shared mean embedding and could never be told apart.
"""

from __future__ import annotations

from typing import Any

import torch

#: Attribute names of the decoder-layer list and of the final norm in Hugging Face models
#: (Llama, Qwen, Mistral, Gemma: ``layers`` / ``norm``; GPT-2 style: ``h`` / ``ln_f``).
_LAYER_LISTS = ("layers", "h", "blocks")
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_norm")


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The model's list of decoder layers, bottom first; ValueError when none is found."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    for owner in (decoder, getattr(decoder, "transformer", None), model):
        for name in _LAYER_LISTS:
            layers = getattr(owner, name, None) if owner is not None else None
            if isinstance(layers, torch.nn.ModuleList) and len(layers):
                return layers
    raise ValueError(f"train_top_layers: no decoder layer list ({', '.join(_LAYER_LISTS)}) "
                     f"found in {type(model).__name__}; use null to train every parameter")


def set_trainable(model: Any, top_layers: int | None) -> dict[str, int]:
    """Train only the top ``top_layers`` decoder layers and the final norm, or leave
    ``requires_grad`` as it is (``top_layers`` None: a freshly loaded model trains every
    parameter). In place; optimisers built afterwards take the trainable parameters only.
    Returns ``{"trainable": n, "total": n}`` parameter counts.
    """
    params = list(model.parameters())
    if top_layers is not None:
        layers = decoder_layers(model)
        if not 1 <= top_layers <= len(layers):
            raise ValueError(f"train_top_layers: {top_layers} is not between 1 and the model's "
                             f"{len(layers)} decoder layers")
        for p in params:
            p.requires_grad_(False)
        keep: list[torch.nn.Module] = list(layers[len(layers) - top_layers:])
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
        keep += [m for n in _FINAL_NORMS if isinstance(m := getattr(decoder, n, None), torch.nn.Module)]
        for module in keep:
            module.requires_grad_(True)
    # parameters() yields a tied tensor (embeddings and head) once, so nothing counts twice.
    return {"trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params)}
