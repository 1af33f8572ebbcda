"""GPTBigCode (`gpt_bigcode`: StarCoder-1B, tiny_starcoder, SantaCoder): GPT-2 with multi-query attention.

Pre-LayerNorm blocks, learned positions and a GELU MLP as in GPT-2 (model/gpt.py), but the
linear layers are nn.Linear (not Conv1D), the MLP width is `n_inner`, and with `multi_query`
c_attn produces the n_head query heads plus ONE key and one value head that every query head
shares (a cache 1/n_head the size of GPT-2's). Without multi_query, c_attn's output is laid
out per head, [q k v] for head 0, then head 1, ... (transformers' layout, not GPT-2's).

Module names are Hugging Face's (`transformer.h.N.attn.c_attn`, ...), so checkpoints map one
to one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from codeassist.model.causal_lm import CausalLM, KVCache, attend
from codeassist.model.gpt import gelu_tanh

# transformers' names for the activations it accepts here; all but "gelu" are the tanh form
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu")


@dataclass(frozen=True)
class BigCodeConfig:
    family: str = "gpt_bigcode"
    block_size: int = 1024  # n_positions: learned positions, so the longest prompt + completion
    vocab_size: int = 49152
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    n_inner: int = 256  # the MLP width (transformers: None means 4 * n_embd)
    multi_query: bool = True  # one key/value head shared by all query heads
    activation: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-5
    scale_attn_weights: bool = True  # scores divided by sqrt(head_dim)
    tie_word_embeddings: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.family != "gpt_bigcode":
            raise ValueError(f"BigCodeConfig is for gpt_bigcode, not {self.family!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "n_inner"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_kv_head(self) -> int:
        return 1 if self.multi_query else self.n_head

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> BigCodeConfig:
        """From a Hugging Face config.json; ValueError says what is unsupported."""
        if hf.get("model_type") != "gpt_bigcode":
            raise ValueError(f"model_type {hf.get('model_type')!r} is not gpt_bigcode")
        if hf.get("add_cross_attention"):
            raise ValueError("it has cross-attention, which a code completion model does not use")
        act = hf.get("activation_function", "gelu_pytorch_tanh")
        if act not in ACTIVATIONS:
            raise ValueError(f"its activation_function is {act!r}; codeassist supports {', '.join(ACTIVATIONS)}")
        n_embd = int(hf.get("n_embd", hf.get("hidden_size", 768)))
        return cls(
            block_size=int(hf.get("n_positions", hf.get("max_position_embeddings", 1024))),
            vocab_size=int(hf["vocab_size"]), n_layer=int(hf.get("n_layer", hf.get("num_hidden_layers", 12))),
            n_head=int(hf.get("n_head", hf.get("num_attention_heads", 12))), n_embd=n_embd,
            n_inner=int(hf.get("n_inner") or 4 * n_embd), multi_query=bool(hf.get("multi_query", True)),
            activation=act, layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            scale_attn_weights=bool(hf.get("scale_attn_weights", True)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        )

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face config.json of this shape (what an export writes)."""
        return {
            "model_type": "gpt_bigcode", "architectures": ["GPTBigCodeForCausalLM"],
            "n_positions": self.block_size, "vocab_size": self.vocab_size, "n_layer": self.n_layer,
            "n_head": self.n_head, "n_embd": self.n_embd, "n_inner": self.n_inner,
            "multi_query": self.multi_query, "activation_function": self.activation,
            "layer_norm_epsilon": self.layer_norm_eps, "scale_attn_weights": self.scale_attn_weights,
            "tie_word_embeddings": self.tie_word_embeddings, "torch_dtype": "float32",
        }

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BigCodeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


class BigCodeAttention(nn.Module):
    def __init__(self, config: BigCodeConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.n_embd = config.n_embd
        self.multi_query = config.multi_query
        self.scale = None if config.scale_attn_weights else 1.0
        self.dropout = config.dropout
        kv_dim = self.n_kv_head * self.head_dim
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv_dim)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, input_pos: torch.Tensor | None, kv_len: int) -> torch.Tensor:
        B, T, C = x.size()
        hs = self.head_dim
        qkv = self.c_attn(x)
        if self.multi_query:
            q, k, v = qkv.split((C, hs, hs), dim=2)
            q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
            k, v = k.unsqueeze(1), v.unsqueeze(1)  # (B, 1, T, hs)
        else:
            q, k, v = qkv.view(B, T, self.n_head, 3 * hs).transpose(1, 2).split(hs, dim=3)
        y = attend(q, k, v, self.kv_cache, input_pos, kv_len, self.dropout if self.training else 0.0,
                   scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class BigCodeMLP(nn.Module):
    def __init__(self, config: BigCodeConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.n_inner)
        self.c_proj = nn.Linear(config.n_inner, config.n_embd)
        self.exact_gelu = config.activation == "gelu"
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        h = F.gelu(h) if self.exact_gelu else gelu_tanh(h)
        return self.dropout(self.c_proj(h))


class BigCodeBlock(nn.Module):
    def __init__(self, config: BigCodeConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.attn = BigCodeAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.mlp = BigCodeMLP(config)

    def forward(self, x: torch.Tensor, input_pos: torch.Tensor | None, kv_len: int) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), input_pos, kv_len)
        return x + self.mlp(self.ln_2(x))


class BigCodeTrunk(nn.Module):
    def __init__(self, config: BigCodeConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([BigCodeBlock(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)

    def blocks(self) -> list[BigCodeBlock]:
        return [b for b in self.h if isinstance(b, BigCodeBlock)]


class BigCode(CausalLM):
    config: BigCodeConfig
    transformer: BigCodeTrunk
    LAYERS = "transformer.h"
    BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    EMBEDDING = "transformer.wte"

    def __init__(self, config: BigCodeConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = BigCodeTrunk(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.kv_batch_size = 0

    @property
    def tied_embeddings(self) -> bool:
        return self.config.tie_word_embeddings

    def attention_layers(self) -> list[BigCodeAttention]:
        return [block.attn for block in self.transformer.blocks()]

    @property
    def kv_heads(self) -> int:
        return self.config.n_kv_head

    @property
    def anchor(self) -> torch.Tensor:
        return self.transformer.wpe.weight

    def hidden_states(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None,
                      kv_len: int = 0) -> torch.Tensor:
        T = idx.size(1)
        if input_pos is None:
            if self.config.block_size < T:
                raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
            pos = torch.arange(T, device=idx.device)
        else:
            pos = input_pos
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.blocks():
            x = block(x, input_pos, kv_len)
        out: torch.Tensor = self.transformer.ln_f(x)
        return out
