"""GPT-2: pre-LayerNorm blocks, learned positions, GELU, tied embeddings.

Module names follow nanoGPT (and so Hugging Face GPT-2, but for Conv1D), so checkpoints map
one to one. Training calls `model(idx)`. Inference first calls `setup_kv_cache`, then passes
`input_pos` (B, T), the absolute position of each token, and `kv_len`, how many cache slots
the longest row uses after this call; rows of a batch may sit at different positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from codeassist.model.causal_lm import CausalLM, KVCache, attend, gelu_tanh
from codeassist.model.config import ModelConfig
from codeassist.model.scripted_decode import gpt2_step

__all__ = ["GPT", "KVCache", "ModelConfig", "gelu_tanh"]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, input_pos: torch.Tensor | None = None,
                kv_len: int = 0) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        y = attend(q, k, v, self.kv_cache, input_pos, kv_len, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(gelu_tanh(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, input_pos: torch.Tensor | None = None,
                kv_len: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), input_pos, kv_len)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The trunk; a typed stand-in for nanoGPT's ModuleDict, with the same state-dict names."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)

    def blocks(self) -> list[Block]:
        return [b for b in self.h if isinstance(b, Block)]


class GPT(CausalLM):
    config: ModelConfig
    transformer: Transformer
    lm_head: nn.Linear
    LAYERS = "transformer.h"
    BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    EMBEDDING = "transformer.wte"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        self.kv_batch_size = 0

    def init_weights(self, seed: int | None = None) -> None:
        """GPT-2 initialisation; residual projections scaled by 1/sqrt(2 * n_layer)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
                p.data.copy_(torch.randn(p.shape, generator=gen) * std)
            elif name.endswith("weight") and p.dim() == 2:
                p.data.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            elif name.endswith("bias"):
                p.data.zero_()
            elif "ln" in name and name.endswith("weight"):
                p.data.fill_(1.0)

    def attention_layers(self) -> list[CausalSelfAttention]:
        return [block.attn for block in self.transformer.blocks()]

    @property
    def kv_heads(self) -> int:
        return self.config.n_head

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
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        else:
            x = self.transformer.wte(idx) + self.transformer.wpe(input_pos)
        x = self.transformer.drop(x)
        step = None if input_pos is None or T != 1 else gpt2_step(self, x, input_pos, kv_len)
        if step is not None:
            x = step  # a token a row of an int8 model on a CPU: one scripted function (model/scripted_decode.py)
        else:
            for block in self.transformer.blocks():
                x = block(x, input_pos, kv_len)
        return self.transformer.ln_f(x)
