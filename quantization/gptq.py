"""GPTQ (Frantar et al., 2022) for the int4 group-wise format.

Each linear layer is quantized one input column at a time; the rounding error of a column is
spread over the columns not yet quantized, weighted by the inverse Hessian H⁻¹ of the layer's
inputs (H = 2 XᵀX over calibration tokens). Blocks are processed in order, and each block sees the
outputs of the blocks before it *after* their quantization, so errors do not compound unseen.

The group grid (scale, zero) is chosen from the already-updated weights when the first column
of a group is reached (static order, no act-order), and rounded to bf16 as in rtn.py.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from codeassist.model.gpt import GPT
from codeassist.quantization.rtn import INT4_MAX, int4_dequantize_values, int4_grid, int4_values

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPTQConfig:
    group_size: int = 64
    damp: float = 0.01  # added to H's diagonal, as a fraction of its mean: keeps the Cholesky stable
    block_size: int = 128  # columns updated lazily together (speed only, same result)
    batch_size: int = 8  # calibration sequences per forward pass


@dataclass(frozen=True)
class Int4Weight:
    qvalues: torch.Tensor  # (N, K) uint8 0..15, unpacked
    scales: torch.Tensor  # (N, G) bf16
    zeros: torch.Tensor  # (N, G) bf16

    def dequantize(self) -> torch.Tensor:
        N, K = self.qvalues.shape
        G = self.scales.size(1)
        q = self.qvalues.float().view(N * G, K // G)
        return int4_dequantize_values(q, self.scales.reshape(-1), self.zeros.reshape(-1)).view(N, K)


def gptq_layer(weight: torch.Tensor, H: torch.Tensor, cfg: GPTQConfig) -> Int4Weight:
    """Quantize one (N, K) weight given the (K, K) Hessian of its inputs."""
    W = weight.detach().float().clone()
    N, K = W.shape
    gs = cfg.group_size
    if K % gs:
        raise ValueError(f"{K} input columns are not a multiple of the group size {gs}")
    H = H.double().clone()  # float64: the Cholesky of a 1024-wide H is fragile in float32
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += cfg.damp * torch.mean(torch.diag(H)) * torch.eye(K, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()

    Q = torch.zeros(N, K, dtype=torch.uint8)
    G = K // gs
    scales = torch.zeros(N, G, dtype=torch.bfloat16)
    zeros = torch.zeros(N, G, dtype=torch.bfloat16)
    bs = max(cfg.block_size, gs)  # a group never straddles two blocks
    for i1 in range(0, K, bs):
        i2 = min(i1 + bs, K)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % gs == 0:
                s, z = int4_grid(W1[:, i:i + gs])
                scales[:, col // gs], zeros[:, col // gs] = s, z
            s, z = scales[:, col // gs], zeros[:, col // gs]
            w = W1[:, i:i + 1]  # (N, 1)
            q = int4_values(w, s, z)
            Q[:, col] = q[:, 0].to(torch.uint8)
            err = (w - int4_dequantize_values(q, s, z)) / Hinv1[i, i]  # (N, 1)
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]
            Err1[:, i:i + 1] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    assert int(Q.max()) <= INT4_MAX
    return Int4Weight(qvalues=Q, scales=scales, zeros=zeros)


class _Hessian:
    """Accumulates H = 2/n Σ xxᵀ over the rows of every input a hooked layer sees."""

    def __init__(self, k: int) -> None:
        self.H = torch.zeros(k, k)
        self.n = 0

    def hook(self, _module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        x = args[0].detach().float().reshape(-1, args[0].size(-1))  # (rows, K)
        m = x.size(0)
        self.H *= self.n / (self.n + m)
        self.n += m
        x = x * (2 / self.n) ** 0.5
        self.H += x.t() @ x


def _hessians(layers: dict[str, nn.Linear], run: Callable[[], None]) -> dict[str, torch.Tensor]:
    accs = {name: _Hessian(layer.in_features) for name, layer in layers.items()}
    handles = [layer.register_forward_hook(accs[name].hook) for name, layer in layers.items()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return {name: acc.H for name, acc in accs.items()}


def _run_block(block: nn.Module, xs: list[torch.Tensor]) -> None:
    for x in xs:
        block(x)


@torch.no_grad()
def gptq_quantize(model: GPT, samples: torch.Tensor, cfg: GPTQConfig, include_head: bool = False,
                  progress: Callable[[str], None] | None = None) -> dict[str, Int4Weight]:
    """GPTQ int4 weights for every block linear (and the tied head), keyed by module name.

    samples: (n, T) token ids. `model` is not changed.
    """
    work = copy.deepcopy(model).float().eval()
    for p in work.parameters():
        p.requires_grad_(False)
    T = samples.size(1)
    pos = torch.arange(T)
    batches = list(torch.split(samples, cfg.batch_size))
    xs = [work.transformer.wte(b) + work.transformer.wpe(pos) for b in batches]  # (b, T, C) each
    out: dict[str, Int4Weight] = {}
    for i, block in enumerate(work.transformer.blocks()):
        layers = {f"transformer.h.{i}.attn.c_attn": block.attn.c_attn,
                  f"transformer.h.{i}.attn.c_proj": block.attn.c_proj,
                  f"transformer.h.{i}.mlp.c_fc": block.mlp.c_fc,
                  f"transformer.h.{i}.mlp.c_proj": block.mlp.c_proj}
        hessians = _hessians(layers, functools.partial(_run_block, block, xs))
        for name, layer in layers.items():
            q = gptq_layer(layer.weight, hessians[name], cfg)
            out[name] = q
            layer.weight.copy_(q.dequantize())  # later blocks see this block quantized
        xs = [block(x) for x in xs]
        if progress:
            progress(f"GPTQ block {i + 1}/{work.config.n_layer}")
    if include_head:
        acc = _Hessian(work.config.n_embd)  # the head's inputs, without materialising its logits
        for x in xs:
            acc.hook(work.lm_head, (work.transformer.ln_f(x),), x)
        out["transformer.wte"] = gptq_layer(work.lm_head.weight, acc.H, cfg)
    return out
