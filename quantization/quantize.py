"""Make quantized model files: float model (any family) → quantized tensors + metadata → safetensors.

The runtime (model/quantized.py) defines the formats and loads them; this module fills them,
by round-to-nearest (int8, int4) or by GPTQ (int4 calibrated on code; GPT-2 family only, since its
calibration pass walks GPT-2's blocks).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from codeassist.model.causal_lm import CausalLM
from codeassist.model.checkpoint import model_metadata, save_tensors_atomic
from codeassist.model.gpt import GPT
from codeassist.model.quantized import QuantSpec, block_linear_names, build_quantized_model, pack_int4
from codeassist.quantization.gptq import GPTQConfig, Int4Weight, gptq_quantize
from codeassist.quantization.rtn import quantize_int4, quantize_int8

log = logging.getLogger(__name__)

METHODS = ("int8", "int4", "gptq")


@dataclass(frozen=True)
class Quantized:
    tensors: dict[str, torch.Tensor]  # exactly the file's tensors
    metadata: dict[str, Any]  # the file's `quantization` metadata

    def build(self, model: CausalLM) -> CausalLM:
        """The quantized model these tensors load into (as load_model would build it)."""
        return build_quantized_model(model.config, self.metadata, self.tensors).eval()

    def save(self, model: CausalLM, path: str | os.PathLike[str], provenance: dict[str, Any] | None = None,
             tokenizer: dict[str, str] | None = None) -> None:
        """Write the model file; `tokenizer` is Tokenizer.to_metadata() (None for ours)."""
        save_tensors_atomic(path, self.tensors, model_metadata(model.config, provenance, self.metadata, tokenizer))


def spec_for(method: str, group_size: int = 64, head: str = "int8") -> QuantSpec:
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; use one of {', '.join(METHODS)}")
    return QuantSpec(scheme="int8" if method == "int8" else "int4", head=head, group_size=group_size)


def quantize(model: CausalLM, method: str, group_size: int = 64, head: str = "int8",
             calibration: torch.Tensor | None = None, gptq: GPTQConfig | None = None,
             progress: Callable[[str], None] | None = None) -> Quantized:
    """Quantize a float model. `calibration` (n, T) token ids is required for method 'gptq'."""
    spec = spec_for(method, group_size, head)
    if method == "gptq" and not isinstance(model, GPT):
        raise ValueError("GPTQ quantizes GPT-2-family models only; use --method int4 (round to nearest) "
                         "or int8 for this model")
    tied = model.tied_embeddings
    state = {k: v.detach().float() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    solved: dict[str, Int4Weight] = {}
    meta = spec.to_metadata()
    meta["method"] = "gptq" if method == "gptq" else "rtn"
    if method == "gptq":
        if calibration is None:
            raise ValueError("GPTQ needs calibration samples")
        cfg = gptq or GPTQConfig(group_size=group_size)
        assert isinstance(model, GPT)
        solved = gptq_quantize(model, calibration, cfg, include_head=head == "int4", progress=progress)
        meta["calibration"] = {"samples": int(calibration.size(0)), "seq_len": int(calibration.size(1)),
                               "damp": cfg.damp}
    tensors: dict[str, torch.Tensor] = {}
    for name in block_linear_names(model.config):
        _put(tensors, name, state.pop(f"{name}.weight"), spec.scheme, group_size, solved.get(name))
    if spec.head != "none":
        _put(tensors, model.EMBEDDING, state.pop(f"{model.EMBEDDING}.weight"), spec.head, group_size,
             solved.get(model.EMBEDDING))
        if not tied:
            _put(tensors, "lm_head", state.pop("lm_head.weight"), spec.head, group_size, None)
    tensors.update(state)  # biases, norms, positions (and a float head)
    return Quantized(tensors=tensors, metadata=meta)


def _put(tensors: dict[str, torch.Tensor], name: str, w: torch.Tensor, scheme: str, group_size: int,
         solved: Int4Weight | None) -> None:
    if scheme == "int8":
        tensors[f"{name}.qweight"], tensors[f"{name}.scales"] = quantize_int8(w)
        return
    if solved is not None:
        qweight, scales, zeros = pack_int4(solved.qvalues), solved.scales, solved.zeros
    else:
        qweight, scales, zeros = quantize_int4(w, group_size)
    tensors[f"{name}.qweight"], tensors[f"{name}.scales"], tensors[f"{name}.zeros"] = qweight, scales, zeros
