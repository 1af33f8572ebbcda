"""What every model family shares: the KV cache, the attention over it, and the inference interface.

The engine, speculation and the team server's batcher drive a model only through `CausalLM`:
`setup_kv_cache` / `drop_kv_cache` / `kv_batch_size`, `hidden_states`, `forward`,
`last_token_logits`, `loss`, `lm_head`, `config` and `transformer.blocks()` (each block's
`attn.kv_cache`, which the batcher swaps for views of its rows). A family (GPT-2, Llama/Qwen2/
StarCoder2, GPTBigCode) writes its trunk (`hidden_states`) and calls `attend` in each layer; the rest lives
here once.

input_pos is (B, T), the absolute position of each token (or (1, T) when every row writes the
same slots), and kv_len is how many cache slots the longest row uses after the call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn as nn
from torch.nn import functional as F

from codeassist.model.fused_ce import linear_cross_entropy


class KVCache(nn.Module):
    """A static cache: (B, n_kv_head, S, head_dim) keys and values, written in place."""

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
        return write_kv(self.k, self.v, input_pos, k, v, kv_len)


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, input_pos: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor, kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Write k, v (B, nh, T, hs) into the caches' slots input_pos (B, T), or (1, T) when every row
    writes the same slots; returns the first kv_len slots of the B rows. (TorchScript compiles it
    too, inside model/scripted_decode.py.)"""
    B = k.size(0)
    if input_pos.size(0) == 1:
        k_cache[:B].index_copy_(2, input_pos[0], k)
        v_cache[:B].index_copy_(2, input_pos[0], v)
    else:
        rows = torch.arange(B, device=k.device).unsqueeze(1)  # (B, 1)
        k_cache[rows, :, input_pos] = k.transpose(1, 2)  # advanced indices first: (B, T, nh, hs)
        v_cache[rows, :, input_pos] = v.transpose(1, 2)
    return k_cache[:B, :, :kv_len], v_cache[:B, :, :kv_len]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache | None,
           input_pos: torch.Tensor | None, kv_len: int, dropout: float = 0.0,
           scale: float | None = None) -> torch.Tensor:
    """Causal attention of q (B, nh, T, hs) over k, v (B, n_kv, T, hs), through the cache if any.

    n_kv may divide nh (grouped-query and multi-query attention): SDPA's enable_gqa shares each
    key/value head among nh / n_kv query heads without copying it. Returns (B, nh, T, hs).
    """
    if cache is None or input_pos is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, scale=scale,
                                              enable_gqa=q.size(1) != k.size(1))
    k, v = cache.update(input_pos, k, v, kv_len)  # (B, n_kv, S, hs), S = kv_len
    return attend_cached(q, k, v, input_pos, kv_len, scale)


def attend_cached(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor, kv_len: int,
                  scale: float | None) -> torch.Tensor:
    """attend's inference half: q (B, nh, T, hs) over the cache's first kv_len slots k, v
    (B, n_kv, kv_len, hs), after the write. (TorchScript compiles it too.)"""
    gqa = q.size(1) != k.size(1)
    T = q.size(2)
    if T == 1 and input_pos.numel() == 1:
        # one query at the last slot (batch-1 decoding): it sees every slot, so no mask
        if gqa and q.is_cpu:
            return _grouped_decode(q, k, v, scale)
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    if kv_len == T:
        # a fresh prefill: positions increase along a row, so T of them below kv_len = T are
        # 0..T-1 in every row, and the mask is the causal one (the kernel skips the upper
        # triangle instead of reading a mask)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    # a query at position p sees cache slots 0..p; slots past a row's length hold stale values
    # and are masked here, then overwritten before any query can reach them
    slots = torch.arange(kv_len, device=q.device)
    mask = slots.view(1, 1, 1, kv_len) <= input_pos.view(-1, 1, T, 1)  # (B|1, 1, T, S)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def _grouped_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> torch.Tensor:
    """One query row per head over a grouped cache, as two batched matmuls: the query heads that
    share a key/value head are the rows of one matmul against it. On a CPU this took 0.86x the CPU
    time of SDPA's grouped kernel at 548 cached tokens and 0.67x at 2,000 (Qwen2.5-Coder's 14 query
    heads over 2, one thread); without grouping (n_kv = nh) SDPA is faster, so it keeps that case.
    q: (B, nh, 1, hs); k, v: (B, n_kv, S, hs). Returns (B, nh, 1, hs)."""
    B, nh, hs = q.size(0), q.size(1), q.size(3)
    n_kv = k.size(1)
    qg = q.reshape(B, n_kv, nh // n_kv, hs)  # query heads grouped under their key/value head
    scores = torch.matmul(qg, k.transpose(-1, -2)).mul_(hs ** -0.5 if scale is None else scale)
    out = torch.matmul(scores.softmax(dim=-1), v)  # (B, n_kv, nh / n_kv, hs)
    return out.view(B, nh, 1, hs)


def gelu_tanh(x: torch.Tensor, fast_min: int = 1 << 16) -> torch.Tensor:
    """GPT-2's tanh approximation of GELU.

    Without autograd, on a CPU and for a prompt's worth of rows, it is computed as
    x * sigmoid(2c (x + 0.044715 x^3)), the same function (tanh z = 2 sigmoid(2z) - 1) in five
    vectorised passes, within 1e-6 of F.gelu's tanh form: 1.6x faster alone at a 300-token
    prefill's shape, 5.4 -> 4.4 ms of GELU inside the whole prefill. A decode step's few rows
    keep the single call (five dispatches cost more there): below fast_min elements. Its constants
    are locals so that TorchScript compiles it (model/scripted_decode.py).
    """
    if torch.is_grad_enabled() or not x.is_cpu or x.numel() < fast_min:
        return F.gelu(x, approximate="tanh")
    k = 2 * math.sqrt(2 / math.pi)
    y = x * x
    y.mul_(0.044715 * k).add_(k).mul_(x).sigmoid_()
    return y.mul_(x)


class Trunk(Protocol):
    """What the batcher reaches through `model.transformer`: the blocks, each with `attn.kv_cache`."""

    def blocks(self) -> Sequence[Any]: ...


class CausalLM(nn.Module):
    """The inference and training interface of every family; subclasses build the trunk.

    A subclass sets `config`, `transformer` (with `blocks()`), `lm_head`, the names below, and implements
    `hidden_states`, `attention_layers` (the modules holding `kv_cache`), `kv_heads` and
    `anchor` (a float tensor whose device and dtype the cache follows: never a quantized one).
    """

    config: Any
    transformer: Trunk
    lm_head: nn.Module
    kv_batch_size: int
    # the state-dict names of the layers that quantization swaps: LAYERS.i.NAME for NAME in
    # BLOCK_LINEARS, the input embedding, and the head (tied to the embedding or not)
    LAYERS: str = ""
    BLOCK_LINEARS: tuple[str, ...] = ()
    EMBEDDING: str = ""

    @property
    def tied_embeddings(self) -> bool:
        return True

    def tie_weights(self) -> None:
        """Point the head at the embedding again when they are tied (after a load with assign=True)."""
        embedding = self.get_submodule(self.EMBEDDING)
        if self.tied_embeddings and isinstance(self.lm_head, nn.Linear) and isinstance(embedding, nn.Embedding):
            self.lm_head.weight = embedding.weight

    def attention_layers(self) -> list[Any]:
        raise NotImplementedError

    @property
    def kv_heads(self) -> int:
        raise NotImplementedError

    @property
    def anchor(self) -> torch.Tensor:
        raise NotImplementedError

    def hidden_states(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None,
                      kv_len: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def setup_kv_cache(self, batch_size: int, max_seq: int | None = None,
                       dtype: torch.dtype | None = None) -> None:
        max_seq = max_seq or self.config.block_size
        if max_seq > self.config.block_size:
            raise ValueError(f"max_seq {max_seq} exceeds block_size {self.config.block_size}")
        ref = self.anchor
        for attn in self.attention_layers():
            attn.kv_cache = KVCache(batch_size, max_seq, self.kv_heads, self.config.head_dim,
                                    dtype or ref.dtype, ref.device)
        self.kv_batch_size = batch_size

    def drop_kv_cache(self) -> None:
        for attn in self.attention_layers():
            attn.kv_cache = None
        self.kv_batch_size = 0

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
        weight = getattr(self.lm_head, "weight", None)
        if (torch.is_autocast_enabled(x.device.type) or x.dtype != torch.float32
                or not isinstance(weight, torch.Tensor)):
            # reduced precision (or a quantized head): the plain head, with the softmax in fp32
            logits = self.lm_head(x)
            return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return linear_cross_entropy(x.reshape(-1, x.size(-1)), weight, targets.reshape(-1))
