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
from torch.nn import functional as F

from codeassist.model.config import ModelConfig
from codeassist.model.fused_ce import linear_cross_entropy


class KVCache(nn.Module):
    """A static cache: (B, n_head, S, head_dim) keys and values, written in place."""

    def __init__(self, batch_size: int, max_seq: int, n_head: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__()
        shape = (batch_size, n_head, max_seq, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.k: torch.Tensor
        self.v: torch.Tensor

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        # input_pos: (B, T), or (1, T) when every row writes the same slots; k, v: (B, nh, T, hs)
        B = k.size(0)
        if input_pos.size(0) == 1:
            self.k[:B].index_copy_(2, input_pos[0], k)
            self.v[:B].index_copy_(2, input_pos[0], v)
        else:
            rows = torch.arange(B, device=k.device).unsqueeze(1)  # (B, 1)
            self.k[rows, :, input_pos] = k.transpose(1, 2)  # advanced indices first: (B, T, nh, hs)
            self.v[rows, :, input_pos] = v.transpose(1, 2)
        return self.k[:B, :, :kv_len], self.v[:B, :, :kv_len]


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
        if self.kv_cache is None or input_pos is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            k, v = self.kv_cache.update(input_pos, k, v, kv_len)  # (B, nh, S, hs), S = kv_len
            if T == 1 and input_pos.numel() == 1:
                # one query at the last slot (batch-1 decoding): it sees every slot, so no mask
                y = F.scaled_dot_product_attention(q, k, v)
            elif kv_len == T:
                # a fresh prefill: positions increase along a row, so T of them below kv_len = T
                # are 0..T-1 in every row, and the mask is the causal one (the kernel skips the
                # upper triangle instead of reading a mask)
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                # a query at position p sees cache slots 0..p; slots past a row's length hold stale
                # values and are masked here, then overwritten before any query can reach them
                slots = torch.arange(kv_len, device=x.device)
                mask = slots.view(1, 1, 1, kv_len) <= input_pos.view(-1, 1, T, 1)  # (B|1, 1, T, S)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
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


_GELU_K = 2 * math.sqrt(2 / math.pi)
_GELU_FAST_MIN = 1 << 16  # elements


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh approximation of GELU.

    Without autograd, on a CPU and for a prompt's worth of rows, it is computed as
    x * sigmoid(2c (x + 0.044715 x^3)), the same function (tanh z = 2 sigmoid(2z) - 1) in five
    vectorised passes, within 1e-6 of F.gelu's tanh form: 1.6x faster alone at a 300-token
    prefill's shape, 5.4 -> 4.4 ms of GELU inside the whole prefill. A decode step's few rows
    keep the single call (five dispatches cost more there).
    """
    if torch.is_grad_enabled() or x.device.type != "cpu" or x.numel() < _GELU_FAST_MIN:
        return F.gelu(x, approximate="tanh")
    y = x * x
    y.mul_(0.044715 * _GELU_K).add_(_GELU_K).mul_(x).sigmoid_()
    return y.mul_(x)


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


class GPT(nn.Module):
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

    def setup_kv_cache(self, batch_size: int, max_seq: int | None = None,
                       dtype: torch.dtype | None = None) -> None:
        max_seq = max_seq or self.config.block_size
        if max_seq > self.config.block_size:
            raise ValueError(f"max_seq {max_seq} exceeds block_size {self.config.block_size}")
        ref = self.transformer.wpe.weight
        for block in self.transformer.blocks():
            block.attn.kv_cache = KVCache(batch_size, max_seq, self.config.n_head, self.config.head_dim,
                                          dtype or ref.dtype, ref.device)
        self.kv_batch_size = batch_size

    def drop_kv_cache(self) -> None:
        for block in self.transformer.blocks():
            block.attn.kv_cache = None
        self.kv_batch_size = 0

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
        for block in self.transformer.blocks():
            x = block(x, input_pos, kv_len)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, kv_len: int = 0,
                last_only: bool = False, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab); with last_only, (B, 1, vocab) for the last position only.

        With targets (B, T) it returns the mean cross-entropy instead (targets of -1 are
        skipped), without materialising the logits in fp32 training (see model/fused_ce.py).
        """
        x = self.hidden_states(idx, input_pos, kv_len)
        if targets is not None:
            return self._head_loss(x, targets)
        if last_only:
            x = x[:, -1:, :]
        logits: torch.Tensor = self.lm_head(x)
        return logits

    def last_token_logits(self, idx: torch.Tensor, input_pos: torch.Tensor, kv_len: int,
                          lengths: list[int]) -> torch.Tensor:
        """Logits (B, vocab) after each row's last real token, for right-padded rows of `lengths`
        tokens: the head runs on B positions, not B x T."""
        hidden = self.hidden_states(idx, input_pos, kv_len)  # (B, T, C)
        rows = torch.arange(idx.size(0), device=idx.device)
        last = torch.tensor(lengths, device=idx.device) - 1
        logits: torch.Tensor = self.lm_head(hidden[rows, last])
        return logits

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = self(idx, targets=targets)
        return loss

    def _head_loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type) or x.dtype != torch.float32:
            # reduced precision: the plain head, with the softmax in fp32
            logits = self.lm_head(x)
            return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return linear_cross_entropy(x.reshape(-1, x.size(-1)), self.lm_head.weight, targets.reshape(-1))
