"""Quantized model files: the format, the loaders, and the way back to floats.

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
so the stored numbers are exactly what runs. The layers and their kernels are in
model/quant_layers.py.

`dequantize_model(model)` turns any of these back into a float model (for fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from codeassist.model.architectures import FamilyConfig, build_model, empty_model, model_class
from codeassist.model.causal_lm import CausalLM
from codeassist.model.checkpoint import QUANTIZED_LOADERS, ModelFileError, ModelInfo
from codeassist.model.quant_layers import (
    Int4Embedding,
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    TiedHead,
    dequantize_int4,
    pack_int4,
    unpack_int4,
)

__all__ = [
    "GROUP_SIZES", "HEAD_SCHEMES", "SCHEMES", "Int4Embedding", "Int4Linear", "Int8Embedding", "Int8Linear",
    "QuantSpec", "TiedHead", "block_linear_names", "build_quantized_model", "dequantize_int4",
    "dequantize_model", "is_quantized", "pack_int4", "swap_modules", "unpack_int4",
]

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
    model = empty_model(config)
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
