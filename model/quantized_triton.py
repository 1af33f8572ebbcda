"""Weight-only int8 matmul for CUDA with the dequantization fused into the tiles (Triton).

y = (x @ qweightᵀ) * scales + bias, reading the int8 weights once: at batch 1 decoding is bound by
memory traffic, and int8 halves it against bf16. torch's own CUDA `_weight_int8pack_mm` computes
the same but with one thread per output reading a whole row (uncoalesced), so this kernel is
preferred when Triton is there (it ships with CUDA builds of torch).

Checked for correctness with Triton's CPU interpreter (TRITON_INTERPRET=1); not yet timed on a GPU.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the callers fall back
    triton = None


def is_available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit  # type: ignore[untyped-decorator]
    def _int8_mm_kernel(x_ptr: Any, w_ptr: Any, s_ptr: Any, b_ptr: Any, y_ptr: Any, M: Any, N: Any, K: Any,
                        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr) -> None:
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows of x
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) output channels
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + rk
            x = tl.load(x_ptr + rm[:, None] * K + k[None, :], mask=(rm[:, None] < M) & (k[None, :] < K), other=0.0)
            w = tl.load(w_ptr + rn[:, None] * K + k[None, :], mask=(rn[:, None] < N) & (k[None, :] < K), other=0)
            # int8 → float inside the tile; the dot in fp32 (tf32 on tensor cores): decoding is bound by
            # reading the weights, not by this arithmetic, and Triton's CPU interpreter (which the
            # tests use) computes bf16 dots wrongly, so the checked code is the code that runs
            acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)))
        acc *= tl.load(s_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rm[:, None] * N + rn[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))


def int8_mm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, K) float, qweight (N, K) int8, scales (N,), bias (N,) → (M, N) in x's dtype."""
    assert triton is not None
    x = x.contiguous()
    M, K = x.shape
    N = qweight.size(0)
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    block_m = 16 if M <= 16 else 64
    block_n, block_k = 64, 64
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    _int8_mm_kernel[grid](x, qweight.contiguous(), scales, bias if bias is not None else scales, y, M, N, K,
                          HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    return y
