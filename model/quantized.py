"""Quantized models at run time: int8 and int4 linear layers, the loaders, and the way back to floats.

A quantized model file is an ordinary codeassist model file whose `quantization` metadata is

    {"scheme": "int8", "head": "int8"}                      or
    {"scheme": "int4", "group_size": 64, "head": "int8", "method": "rtn" | "gptq", ...}

`scheme` covers the linear layers of the blocks; `head` covers the embedding and the output head
(`none` keeps them float): one table when they are tied, two quantized separately when they are
not (Llama, some Qwen2). Every family names its layers in its module class (CausalLM.LAYERS,
BLOCK_LINEARS, EMBEDDING), so this module knows no family. Tensors, named after the module that
holds them:

    int8   NAME.qweight int8 (N, K); NAME.scales float (N,)             w = qweight * scale
    int4   NAME.qweight uint8 (N, K/2), the even column in the high nibble, the odd in the low;
           NAME.scales, NAME.zeros bfloat16 (N, K/group_size)            w = (q - 8) * scale + zero

The int4 layout is the one torch's tinygemm kernels take (CUDA packs it as is; the CPU kernel takes
the unpacked values), and its scales and zeros are bfloat16 because the kernels compute with them,
so the stored numbers are exactly what runs. Kernels, chosen by the device the input is on:

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

The CUDA paths were not run on a GPU here: the Triton kernel was checked with Triton's CPU
interpreter, and the int4 one follows torch's tinygemm conventions (as torchao/gpt-fast call it).

A tied embedding is one table: the head runs the quantized matmul and the embedding looks up
and dequantizes only the rows it needs, so the table is stored once, quantized.

`dequantize_model(model)` turns any of these back into a float model (for fine-tuning).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from codeassist.model import quantized_triton
from codeassist.model.architectures import FamilyConfig, build_model, model_class
from codeassist.model.causal_lm import CausalLM
from codeassist.model.checkpoint import QUANTIZED_LOADERS, ModelFileError, ModelInfo

log = logging.getLogger(__name__)

SCHEMES = ("int8", "int4")
HEAD_SCHEMES = ("none", "int8", "int4")
GROUP_SIZES = (32, 64, 128, 256)


@dataclass(frozen=True)
class QuantSpec:
    scheme: str  # the blocks' linear layers: int8 | int4
    head: str = "int8"  # the embedding and output head: none | int8 | int4
    group_size: int = 64  # int4 only

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> QuantSpec:
        """Validate the file's quantization metadata; anything odd is a ModelFileError."""
        scheme, head = meta.get("scheme"), meta.get("head", "int8")
        if scheme not in SCHEMES:
            raise ModelFileError(f"the model file uses quantization scheme {scheme!r}, which this codeassist "
                                 f"does not know (known: none, {', '.join(SCHEMES)})")
        if head not in HEAD_SCHEMES:
            raise ModelFileError(f"the model file has damaged quantization metadata (head {head!r})")
        group = meta.get("group_size", 64)
        uses_int4 = "int4" in (scheme, head)
        if uses_int4 and (not isinstance(group, int) or isinstance(group, bool) or group not in GROUP_SIZES):
            raise ModelFileError(f"the model file has damaged quantization metadata (group_size {group!r})")
        return cls(scheme=str(scheme), head=str(head), group_size=int(group) if uses_int4 else 64)

    def to_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"scheme": self.scheme, "head": self.head}
        if "int4" in (self.scheme, self.head):
            meta["group_size"] = self.group_size
        return meta


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            packed = self._cached("cpu", lambda: _int8_pack_cpu(self.qweight, self.scales, self.bias))
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
        self._kernel = self._dequantized = None
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


QuantizedLinear = Int8Linear | Int4Linear


# -- building and loading ----------------------------------------------------------------------

def block_linear_names(config: FamilyConfig) -> list[str]:
    cls = model_class(config)
    return [f"{cls.LAYERS}.{i}.{name}" for i in range(config.n_layer) for name in cls.BLOCK_LINEARS]


def _quantized_linear(spec_scheme: str, in_features: int, out_features: int, bias: bool, group_size: int,
                      device: torch.device | str) -> Int8Linear | Int4Linear:
    if spec_scheme == "int8":
        return Int8Linear(in_features, out_features, bias, device=device)
    return Int4Linear(in_features, out_features, bias, group_size, device)


def swap_modules(model: CausalLM, spec: QuantSpec, device: torch.device | str = "meta") -> None:
    """Replace the float linears (and the embedding and head) with empty quantized ones, in place."""
    for name in block_linear_names(model.config):
        parent_name, attr = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        old = getattr(parent, attr)
        setattr(parent, attr, _quantized_linear(spec.scheme, old.in_features, old.out_features,
                                                old.bias is not None, spec.group_size, device))
    if spec.head == "none":
        return
    c = model.config
    table: Int8Embedding | Int4Embedding
    if spec.head == "int8":
        table = Int8Embedding(c.vocab_size, c.n_embd, device=device)
    else:
        table = Int4Embedding(c.vocab_size, c.n_embd, spec.group_size, device=device)
    table.dtype_anchor = torch.empty(0)  # never meta: it carries no data, only the dtype
    parent_name, attr = model.EMBEDDING.rsplit(".", 1)
    setattr(model.get_submodule(parent_name), attr, table)
    if model.tied_embeddings:
        model.lm_head = TiedHead(table)
    else:
        model.lm_head = _quantized_linear(spec.head, c.n_embd, c.vocab_size, False, spec.group_size, device)


def build_quantized_model(config: FamilyConfig, quantization: dict[str, Any],
                          tensors: dict[str, torch.Tensor]) -> CausalLM:
    """The model with quantized modules holding `tensors` (a quantized model file's contents)."""
    spec = QuantSpec.from_metadata(quantization)
    with torch.device("meta"):
        model = build_model(config)
    try:
        swap_modules(model, spec)
    except ValueError as exc:
        raise ModelFileError(f"the model file does not match its quantization metadata ({exc})") from None
    tensors = dict(tensors)
    embedding = f"{model.EMBEDDING}.weight"
    if spec.head == "none" and model.tied_embeddings and "lm_head.weight" not in tensors and embedding in tensors:
        tensors["lm_head.weight"] = tensors[embedding]
    expected = model.state_dict()
    for key, ref in expected.items():
        got = tensors.get(key)
        if got is None:
            continue  # load_state_dict names every missing key below
        if ref.is_floating_point() != got.is_floating_point() or (
                not ref.is_floating_point() and ref.dtype != got.dtype):
            raise ModelFileError(f"the model file does not match its quantization metadata "
                                 f"({key} is {got.dtype}, expected {ref.dtype})")
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise ModelFileError(f"the model file does not match its quantization metadata ({first[0].strip()[:200]})"
                             ) from None
    model.tie_weights()  # a float tied head: re-tie after assign
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load(info: ModelInfo, tensors: dict[str, torch.Tensor]) -> CausalLM:
    return build_quantized_model(info.config, info.quantization, tensors)


for _scheme in SCHEMES:
    QUANTIZED_LOADERS[_scheme] = _load


# -- back to floats ----------------------------------------------------------------------------

def is_quantized(model: CausalLM) -> bool:
    return any(isinstance(m, Int8Linear | Int4Linear) for m in model.modules())


def dequantize_model(model: CausalLM, dtype: torch.dtype = torch.float32) -> CausalLM:
    """A float model computing what `model` computes (a float model is returned unchanged).

    For fine-tuning from a quantized model, e.g. the embedded default: its weights are the
    dequantized ones, trainable, and a tied embedding is tied to the head again.
    """
    if not is_quantized(model):
        return model
    device = model.anchor.device
    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear | Int4Linear):
            state[f"{name}.weight"] = module.dequantize()
            if module.bias is not None:
                state[f"{name}.bias"] = module.bias.detach()
    for name, tensor in model.state_dict().items():
        owner = name.rsplit(".", 1)[0]
        if isinstance(model.get_submodule(owner), Int8Linear | Int4Linear):
            continue
        state[name] = tensor
    if model.tied_embeddings:
        state["lm_head.weight"] = state[f"{model.EMBEDDING}.weight"]
    out = build_model(model.config)
    out.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=True)
    out.tie_weights()
    return out.to(device).train(model.training)
