"""The quantized layers and their kernels: int8 and int4 linears, the quantized embedding, the
tied head, and the fused call of several int8 linears that share an input.

The file format and the loaders are in model/quantized.py, whose docstring describes the tensors.
Kernels, chosen by the device the input is on:

    int8 on CPU   dynamic int8 (quantized::linear_dynamic): 5x fp32 at batch 1 on this machine.
                  Its packed weights are an opaque object, so they are made from the stored int8
                  weights on first use and cached per device.
    int8 on CUDA  weight-only int8 with the dequantization fused into the matmul tiles: a Triton
                  kernel (model/quantized_triton.py), else torch._weight_int8pack_mm.
    int4 on CPU   torch._weight_int4pack_mm_for_cpu with bfloat16 activations.
    int4 on CUDA  torch._weight_int4pack_mm (tinygemm), bfloat16.
    anything else the dequantized reference (slow, correct).

The CPU int8 kernel picks one activation scale for the whole (M, K) input, so a row's result
depends slightly on the rows beside it. A speculative verify step (several rows) can then flip
a near-tie that a one-row decode step resolves the other way: speculative greedy equals plain
greedy exactly only for float weights. A per-row variant (each row mapped onto [-1, 1], with an
anchor row pinning the scale) made rows independent, but cost 60-70% more decode time (3.4 ->
5.5 and 3.8 -> 6.4 ms/token in two runs, default model, one thread), so it was not kept.

The same property makes fusing exact: linears that read the same input (q, k and v; gate and
up) quantize it once with the same scale whichever way they are called, so one kernel call over
their concatenated weights gives each layer's result bit for bit (`fused_linear`), with one
activation quantization and one call instead of three.

The CUDA paths were not run on a GPU here: the Triton kernel was checked with Triton's CPU
interpreter, and the int4 one follows torch's tinygemm conventions (as torchao/gpt-fast call it).

A tied embedding is one table: the head runs the quantized matmul and the embedding looks up
and dequantizes only the rows it needs, so the table is stored once, quantized.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from codeassist.model import quantized_triton

log = logging.getLogger(__name__)

# -- the int4 format ---------------------------------------------------------------------------

def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(N, K) values 0..15 → (N, K/2) uint8, even column in the high nibble."""
    q = q.to(torch.uint8)
    return (q[:, ::2] << 4) | q[:, 1::2]


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(N, K/2) uint8 → (N, K) uint8 values 0..15."""
    return torch.stack([packed >> 4, packed & 0x0F], dim=-1).reshape(packed.size(0), -1)


def dequantize_int4(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    q = unpack_int4(qweight).float()  # (N, K)
    N, K = q.shape
    G = scales.size(1)
    w = (q.view(N, G, K // G) - 8) * scales.float().unsqueeze(-1) + zeros.float().unsqueeze(-1)
    return w.view(N, K)


# -- kernels -----------------------------------------------------------------------------------

def _int8_pack_cpu(qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> Any:
    N = qweight.size(0)
    with warnings.catch_warnings():
        # quantized tensors are deprecated in torch 2.13, but they are still the only way into
        # the dynamic int8 kernel, which is 5x faster than fp32 here (see the module docstring)
        warnings.simplefilter("ignore")
        qw = torch._make_per_channel_quantized_tensor(
            qweight.cpu(), scales.detach().cpu().double(), torch.zeros(N, dtype=torch.long), 0)
        b = None if bias is None else bias.detach().cpu().float()
        return torch.ops.quantized.linear_prepack(qw, b)


def _int8_cuda(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
    """Weight-only int8, dequantized inside the kernel; x: (M, K), qweight: (N, K), scales: (N,)."""
    if x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        x = x.float()
    if x.is_cuda and quantized_triton.is_available():
        return quantized_triton.int8_mm(x, qweight, scales, bias)
    # torch's own fused kernel (CPU and CUDA builds); correct, but its CUDA version is naive
    y = torch._weight_int8pack_mm(x.contiguous(), qweight, scales.to(x.dtype))
    return y if bias is None else y + bias.to(y.dtype)


def _inner_k_tiles(K: int) -> int:
    return next(t for t in (8, 4, 2) if K % (t * 16) == 0)


def _int4_scales_and_zeros(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    # the kernels take one (K/group_size, N, 2) bf16 tensor
    return torch.stack([scales, zeros], dim=-1).to(torch.bfloat16).transpose(0, 1).contiguous()


def _int4_pack(qweight: torch.Tensor, device: torch.device) -> torch.Tensor:
    tiles = _inner_k_tiles(qweight.size(1) * 2)
    if device.type == "cuda":
        return torch._convert_weight_to_int4pack(qweight.contiguous(), tiles)
    return torch._convert_weight_to_int4pack_for_cpu(unpack_int4(qweight).to(torch.int32), tiles)


def _int4_mm(x: torch.Tensor, packed: torch.Tensor, group_size: int, sz: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.bfloat16).contiguous()  # the kernels need bf16 activations (fp32 runs 25x slower)
    if x.device.type == "cuda":
        return torch._weight_int4pack_mm(x, packed, group_size, sz)
    return torch._weight_int4pack_mm_for_cpu(x, packed, group_size, sz)


def _int4_kernel_fits(N: int, K: int, device: torch.device) -> bool:
    if device.type == "cpu":
        return N % 16 == 0 and K % 32 == 0
    return device.type == "cuda" and N % 8 == 0 and K % 32 == 0


def _reference_linear(layer: Int8Linear | Int4Linear, x: torch.Tensor) -> torch.Tensor:
    """F.linear with the dequantized weight, kept between calls: the path when no kernel fits
    (another device, an odd shape, a quantized engine PyTorch lacks). Costs float memory."""
    key = (x.device, x.dtype, layer.qweight.data_ptr(), layer.scales.data_ptr())
    if layer._dequantized is None or layer._dequantized[0] != key:
        layer._dequantized = (key, layer.dequantize().to(x.device, x.dtype))
    return F.linear(x, layer._dequantized[1], None if layer.bias is None else layer.bias.to(x.dtype))


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


# -- modules -----------------------------------------------------------------------------------

class Int8Linear(nn.Module):
    """y = x Wᵀ + b with W stored as int8 with one scale per output channel (symmetric)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None
        self.qweight: torch.Tensor
        self.scales: torch.Tensor
        self._kernel: tuple[tuple[Any, ...], Any] | None = None  # (key, packed) for the current device
        self._dequantized: tuple[tuple[Any, ...], torch.Tensor] | None = None
        self._fused: tuple[tuple[Any, ...], Any] | None = None  # fused_linear's packed kernel, on the first layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            packed = self.cpu_kernel()
            if packed is not None:
                y = torch.ops.quantized.linear_dynamic(x.float(), packed, True)  # 7-bit activations: no overflow
                return y if x.dtype == torch.float32 else y.to(x.dtype)
        elif x.device.type == "cuda":
            try:
                y = _int8_cuda(x.reshape(-1, self.in_features), self.qweight, self.scales, self.bias)
                return y.view(*x.shape[:-1], self.out_features).to(x.dtype)
            except RuntimeError as exc:
                _warn_once("int8-cuda", f"the fused int8 CUDA kernel failed ({exc}); using dequantized weights")
        return _reference_linear(self, x)

    def cpu_kernel(self) -> Any | None:
        """The CPU kernel's packed weights (built on first use), or None when it is unavailable."""
        return self._cached("cpu", lambda: _int8_pack_cpu(self.qweight, self.scales, self.bias))

    def _cached(self, key: str, make: Any) -> Any:
        full_key = (key, self.qweight.device, self.qweight.data_ptr(), self.scales.data_ptr())
        if self._kernel is None or self._kernel[0] != full_key:
            try:
                self._kernel = (full_key, make())
            except (RuntimeError, AttributeError) as exc:
                _warn_once(f"int8-{key}", f"the int8 kernel is unavailable ({exc}); using dequantized weights")
                self._kernel = (full_key, None)
        return self._kernel[1]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._kernel = self._dequantized = self._fused = None
        _reloads[0] += 1  # a fused kernel held by another layer of the group is stale now too
        super()._load_from_state_dict(*args, **kwargs)

    def dequantize(self) -> torch.Tensor:
        """The float (N, K) weight this layer computes with."""
        return self.qweight.float() * self.scales.float().unsqueeze(1)

    def rows(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Dequantized rows of W (the embedding lookup of a tied table)."""
        return (self.qweight[idx].float() * self.scales[idx].float().unsqueeze(-1)).to(dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int4Linear(nn.Module):
    """y = x Wᵀ + b with W stored as asymmetric int4 in groups of `group_size` input columns."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 64,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if in_features % group_size:
            raise ValueError(f"in_features {in_features} is not a multiple of group_size {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        G = in_features // group_size
        self.register_buffer("qweight", torch.empty(out_features, in_features // 2, dtype=torch.uint8,
                                                    device=device))
        self.register_buffer("scales", torch.empty(out_features, G, dtype=torch.bfloat16, device=device))
        self.register_buffer("zeros", torch.empty(out_features, G, dtype=torch.bfloat16, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None
        self.qweight: torch.Tensor
        self.scales: torch.Tensor
        self.zeros: torch.Tensor
        self._kernel: tuple[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] | None = None
        self._dequantized: tuple[tuple[Any, ...], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device
        if _int4_kernel_fits(self.out_features, self.in_features, dev):
            kernel = self._packed(dev)
            if kernel is not None:
                packed, sz = kernel
                y = _int4_mm(x.reshape(-1, self.in_features), packed, self.group_size, sz)
                y = y.view(*x.shape[:-1], self.out_features).to(x.dtype)
                return y if self.bias is None else y + self.bias.to(x.dtype)
        return _reference_linear(self, x)

    def _packed(self, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        key = (dev, self.qweight.data_ptr(), self.scales.data_ptr(), self.zeros.data_ptr())
        if self._kernel is None or self._kernel[0] != key:
            try:
                with torch.inference_mode(False):
                    kernel = (_int4_pack(self.qweight, dev), _int4_scales_and_zeros(self.scales, self.zeros))
            except (RuntimeError, AttributeError) as exc:
                _warn_once(f"int4-{dev.type}", f"the int4 kernel is unavailable on {dev.type} ({exc}); "
                           "using dequantized weights")
                return None
            self._kernel = (key, kernel)
        return self._kernel[1]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._kernel = self._dequantized = None
        super()._load_from_state_dict(*args, **kwargs)

    def dequantize(self) -> torch.Tensor:
        return dequantize_int4(self.qweight, self.scales, self.zeros)

    def rows(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        flat = idx.reshape(-1)
        w = dequantize_int4(self.qweight[flat], self.scales[flat], self.zeros[flat])
        return w.view(*idx.shape, self.in_features).to(dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4, "
                f"group_size={self.group_size}")


class Int8Embedding(Int8Linear):
    """A quantized embedding table: looked up row by row; when tied, also the output head (TiedHead)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device: torch.device | str | None = None) -> None:
        super().__init__(embedding_dim, num_embeddings, bias=False, device=device)
        # follows the model's float dtype through .to(dtype), so lookups match the rest of the model
        self.register_buffer("dtype_anchor", torch.empty(0), persistent=False)
        self.dtype_anchor: torch.Tensor

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.rows(idx, self.dtype_anchor.dtype)


class Int4Embedding(Int4Linear):
    def __init__(self, num_embeddings: int, embedding_dim: int, group_size: int,
                 device: torch.device | str | None = None) -> None:
        super().__init__(embedding_dim, num_embeddings, bias=False, group_size=group_size, device=device)
        self.register_buffer("dtype_anchor", torch.empty(0), persistent=False)
        self.dtype_anchor: torch.Tensor

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.rows(idx, self.dtype_anchor.dtype)


class TiedHead(nn.Module):
    """The output head of a quantized tied table; the table belongs to transformer.wte."""

    def __init__(self, embedding: Int8Embedding | Int4Embedding) -> None:
        super().__init__()
        self._table = (embedding,)  # a tuple, so the table is not registered (and saved) twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._table[0].linear(x)


_reloads = [0]  # weights loaded in place (same storage, new values) since start-up, in any Int8Linear


def _fusable(layers: Sequence[nn.Module]) -> bool:
    first = layers[0]
    return (len(layers) > 1 and all(type(m) is Int8Linear for m in layers)
            and all((m.bias is None) == (first.bias is None) for m in layers))


def int8_kernel(layers: Sequence[nn.Module]) -> Any | None:
    """The CPU kernel's packed weights for one int8 linear, or for several that share an input
    (their weights concatenated, cached on the first layer); None when the layers are not int8
    linears or the kernel is unavailable (then each layer runs its own fallback)."""
    first = layers[0]
    if len(layers) == 1:
        return first.cpu_kernel() if type(first) is Int8Linear else None
    if not _fusable(layers):
        return None
    assert isinstance(first, Int8Linear)
    ints = [m for m in layers if isinstance(m, Int8Linear)]
    key = (_reloads[0], *((m.qweight.device, m.qweight.data_ptr(), m.scales.data_ptr()) for m in ints))
    if first._fused is None or first._fused[0] != key:
        bias = None if first.bias is None else torch.cat([m.bias for m in ints if m.bias is not None])
        try:
            packed = _int8_pack_cpu(torch.cat([m.qweight for m in ints]), torch.cat([m.scales for m in ints]), bias)
        except (RuntimeError, AttributeError) as exc:
            _warn_once("int8-fused", f"the int8 kernel is unavailable ({exc}); using dequantized weights")
            packed = None
        first._fused = (key, packed)
    return first._fused[1]


def fused_linear(x: torch.Tensor, layers: Sequence[nn.Module]) -> tuple[torch.Tensor, ...]:
    """Each layer applied to x: one kernel call when they are int8 linears on a CPU, else one call each.

    On a CPU the int8 kernel quantizes x once for the whole call, so the concatenated weights give
    each layer's output bit for bit (see the module docstring). The fused packed weights replace
    the layers' own (which are then never built), so memory does not grow; they live on the first
    layer and are rebuilt when any layer's weights change. Outputs are views of one tensor.
    """
    if x.device.type == "cpu" and _fusable(layers):
        packed = int8_kernel(layers)
        if packed is not None:
            y = torch.ops.quantized.linear_dynamic(x.float(), packed, True)
            y = y if x.dtype == torch.float32 else y.to(x.dtype)
            return tuple(y.split([m.out_features for m in layers if isinstance(m, Int8Linear)], dim=-1))
    return tuple(m(x) for m in layers)
