"""Round-to-nearest quantizers: the number formats of model/quantized.py, made from float weights.

int8: symmetric, one scale per output channel (row), values in -127..127.
int4: asymmetric, one (scale, zero) per group of `group_size` input columns, values 0..15, with
      w ≈ (q - 8) * scale + zero. Scales and zeros are rounded to bfloat16 *before* the values are
      chosen, because that is what the kernels multiply by; the grid is then exact.
"""

from __future__ import annotations

import torch

from codeassist.model.quantized import pack_int4

INT8_MAX = 127
INT4_MAX = 15


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float → (qweight int8 (N, K), scales float32 (N,))."""
    w = w.detach().float()
    scales = (w.abs().amax(dim=1) / INT8_MAX).clamp(min=1e-10)
    q = torch.round(w / scales.unsqueeze(1)).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scales


def int4_grid(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero (bf16, (N,)) that span each row of w (N, group) with 16 levels."""
    lo, hi = w.amin(dim=1), w.amax(dim=1)
    scales = ((hi - lo) / INT4_MAX).clamp(min=1e-8).to(torch.bfloat16)
    zeros = (lo + 8 * scales.float()).to(torch.bfloat16)
    return scales, zeros


def int4_values(w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The nearest grid values 0..15 of w (N, n) for per-row scales and zeros (N,)."""
    s, z = scales.float().unsqueeze(1), zeros.float().unsqueeze(1)
    return torch.round((w - z) / s + 8).clamp(0, INT4_MAX)


def int4_dequantize_values(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    return (q - 8) * scales.float().unsqueeze(1) + zeros.float().unsqueeze(1)


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, K) float → (qweight uint8 (N, K/2), scales bf16 (N, G), zeros bf16 (N, G))."""
    w = w.detach().float()
    N, K = w.shape
    if K % group_size:
        raise ValueError(f"{K} input columns are not a multiple of the group size {group_size}")
    groups = w.view(N * (K // group_size), group_size)
    scales, zeros = int4_grid(groups)
    q = int4_values(groups, scales, zeros).view(N, K)
    G = K // group_size
    return pack_int4(q), scales.view(N, G), zeros.view(N, G)
