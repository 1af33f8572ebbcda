"""Model shape: one frozen dataclass and the named presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from codeassist.model.tokenizer import VOCAB_SIZE


@dataclass(frozen=True)
class ModelConfig:
    block_size: int = 1024  # the context: learned positions, so also the longest prompt + completion
    vocab_size: int = VOCAB_SIZE  # GPT-2's 50257 + space runs + FIM specials, padded to 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # 0 for fine-tuning and inference; small models on little data may want 0.1
    bias: bool = True  # GPT-2 has biases in Linear and LayerNorm
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


PRESETS: dict[str, ModelConfig] = {
    # for tests: builds in milliseconds
    "tiny": ModelConfig(block_size=256, n_layer=2, n_head=4, n_embd=64),
    # the embedded default model (shape chosen by measured training throughput on 2 CPU cores)
    "default": ModelConfig(block_size=1024, n_layer=6, n_head=8, n_embd=256),
    # GPT-2 small, 124M
    "gpt2": ModelConfig(block_size=1024, n_layer=12, n_head=12, n_embd=768),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}") from None
