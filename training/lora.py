"""LoRA: fine-tune a large model through small low-rank adapters, then merge them into plain weights.

Each chosen linear layer W (out x in) becomes W x + (alpha / r) B A x, with A (r x in) drawn like
a linear layer's weights and B (out x r) zero, so training starts from the model as it was. Only
A and B train: the optimizer holds 2 r (in + out) numbers a layer instead of in x out, which is
what lets a 0.5B-1.5B model fine-tune in a laptop's memory. At the end `merge_lora` folds B A
into W, and the result is an ordinary model file that every part of codeassist loads.

Why our own ~100 lines and not peft: peft wraps Hugging Face `PreTrainedModel`s and brings
transformers and accelerate into every install; our models are plain torch modules with one
forward, and the few things LoRA needs (wrap, freeze, merge, save the adapters with the training
state) are these functions.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

# Above this many parameters `codeassist train` fine-tunes through LoRA by default.
LORA_DEFAULT_ABOVE = 100_000_000
# The linear layers inside the blocks, by the names of every family we load (GPT-2's c_attn,
# c_fc, c_proj; Llama's q/k/v/o_proj, gate/up/down_proj); never the embedding or the output head.
DEFAULT_TARGETS = r"\.(c_attn|c_proj|c_fc|q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, not {rank}")
        self.base = base
        base.requires_grad_(False)
        self.rank = rank
        self.scale = alpha / rank
        dev, dtype = base.weight.device, base.weight.dtype
        a = torch.empty(rank, base.in_features, dtype=torch.float32)
        bound = 1 / math.sqrt(base.in_features)  # nn.Linear's default (kaiming uniform, a=sqrt(5))
        a.uniform_(-bound, bound, generator=generator)
        self.lora_a = nn.Parameter(a.to(device=dev, dtype=dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dtype))
        self.dropout = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:  # the merged weight, for code that reads .weight
        return self.base.weight + self.delta()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta(self) -> torch.Tensor:
        return (self.lora_b @ self.lora_a) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)
        return self.base(x) + update * self.scale

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.delta().to(self.base.weight.dtype))
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale:g}"


def _set_child(model: nn.Module, name: str, child: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, child)


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets: str = DEFAULT_TARGETS, seed: int = 0) -> list[str]:
    """Freeze `model` and wrap every linear layer whose name matches `targets`; returns their names.

    Deterministic for a seed (the A matrices are drawn in module order from one generator)."""
    pattern = re.compile(targets)
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear) and pattern.search(n)]
    if not names:
        raise ValueError(f"no linear layer matches the LoRA targets {targets!r}")
    model.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    for name in names:
        base = model.get_submodule(name)
        assert isinstance(base, nn.Linear)
        _set_child(model, name, LoRALinear(base, rank, alpha, dropout, gen))
    return names


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer, in place; every parameter trains again afterwards."""
    for name, layer in lora_layers(model):
        _set_child(model, name, layer.merged())
    model.requires_grad_(True)
    return model


def merged_state_dict(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The state dict the merged model would have, without changing `model` (for saving mid-run).

    `state`: the model's whole state when its own tensors are shards (FSDP gathers it)."""
    state = dict(model.state_dict() if state is None else state)
    for name, layer in lora_layers(model):
        a, b = state.pop(f"{name}.lora_a"), state.pop(f"{name}.lora_b")
        weight = state.pop(f"{name}.base.weight")
        bias = state.pop(f"{name}.base.bias", None)
        with torch.no_grad():
            state[f"{name}.weight"] = (weight + ((b @ a) * layer.scale).to(weight.dtype)).detach()
        if bias is not None:
            state[f"{name}.bias"] = bias.detach()
    return state


def trainable_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    return (p for p in model.parameters() if p.requires_grad)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied head counts once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def wants_lora(model: nn.Module, method: str = "auto") -> bool:
    """`--method auto` (LoRA above LORA_DEFAULT_ABOVE parameters), `lora` or `full`."""
    if method not in ("auto", "lora", "full"):
        raise ValueError(f"unknown fine-tuning method {method!r}; use auto, lora or full")
    return method == "lora" or (method == "auto" and count_parameters(model) > LORA_DEFAULT_ABOVE)


def save_merged(model: nn.Module, path: str | os.PathLike[str], provenance: dict[str, Any] | None = None,
                tokenizer: dict[str, str] | None = None, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the model file of `model` with its adapters folded in (a plain save without adapters).

    `state`: the whole state when the model's own tensors are shards (FSDP)."""
    from codeassist.model.causal_lm import CausalLM
    from codeassist.model.checkpoint import model_metadata, save_model, save_tensors_atomic

    assert isinstance(model, CausalLM)
    if not has_lora(model) and state is None:
        save_model(model, path, provenance=provenance, tokenizer=tokenizer)
        return
    state = merged_state_dict(model, state)
    if model.tied_embeddings:
        state.pop("lm_head.weight", None)
    save_tensors_atomic(path, state, model_metadata(model.config, provenance, tokenizer=tokenizer))
