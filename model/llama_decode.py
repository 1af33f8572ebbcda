"""One decode step of an int8 Llama-family model on a CPU (batch 1, one token) as one TorchScript
function over the layers' packed int8 kernels.

A decode step of Qwen2.5-Coder-0.5B is 24 layers of four int8 matmuls with ~20 small ops around
them. Run as modules, the Python between those ops and their dispatch cost ~20 ms a token on this
machine: as much as the matmuls themselves at two threads. Here the layer loop is one scripted
function: no modules, no Python between the ops, q and k rotated in one pass (one flip, the
rotation's sign folded into the sine table). Every op is the module path's, in its order and
with its operands, so the logits are the same bit for bit (tests/model/test_llama_decode.py).

Qwen2.5-Coder-0.5B's shape, random weights, 512 cached tokens, ms a token (benchmarks/README.md):
modules 67-75 at one thread and 51-57 at two; this function 50-52 and 36-37.

TorchScript is deprecated in favour of torch.compile, but torch.compile took 34 s to compile the
module step and ran it slower (benchmarks/README.md). Should scripting fail in some PyTorch, the
same function runs eagerly: still without the modules, ~15% faster than them.

The engine's other paths (prefill, several tokens, batched rows, float or int4 weights, CUDA, the
StarCoder2 trunk, autograd) run the modules.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

from codeassist.model import quant_layers
from codeassist.model.quant_layers import Int8Linear, int8_kernel

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Packed = Any
else:  # TorchScript needs the real class in decode_layers' annotations
    Packed = torch.classes.quantized.LinearPackedParamsBase
# per layer: input norm weight, fused q/k/v kernel, o kernel, post-attention norm weight,
# fused gate/up kernel, down kernel
LayerPlan = tuple[torch.Tensor, Packed, Packed, torch.Tensor, Packed, Packed]


def decode_layers(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor, pos: torch.Tensor,
                  kv_len: int, layers: list[LayerPlan], keys: list[torch.Tensor], values: list[torch.Tensor],
                  n_head: int, n_kv_head: int, head_dim: int, hidden: int, eps: float) -> torch.Tensor:
    """The trunk's layers for one token: x (1, 1, C) → (1, 1, C); keys/values are the caches
    (B, n_kv, S, hs), whose row 0 slot `pos` is written; cos, sin_signed (1, 1, 1, hs)."""
    C = x.size(-1)
    n_qk = n_head + n_kv_head
    half = head_dim // 2
    scale = head_dim ** -0.5
    for i, (w_in, qkv_kernel, o_kernel, w_post, gate_up_kernel, down_kernel) in enumerate(layers):
        h = F.rms_norm(x, [C], w_in, eps)
        qkv = torch.ops.quantized.linear_dynamic(h, qkv_kernel, True)  # (1, 1, (nh + 2 n_kv) hs)
        qk = qkv[:, :, :n_qk * head_dim].view(1, n_qk, 1, head_dim)  # q's heads, then k's
        # apply_rope's x * cos + cat(-x2, x1) * sin, with the minus sign moved into the sine
        rotated = qk.view(1, n_qk, 1, 2, half).flip(-2).view(1, n_qk, 1, head_dim)
        qk = qk * cos + rotated * sin_signed
        v = qkv[:, :, n_qk * head_dim:].view(1, n_kv_head, 1, head_dim)
        k_cache, v_cache = keys[i], values[i]
        k_cache[:1].index_copy_(2, pos, qk[:, n_head:])
        v_cache[:1].index_copy_(2, pos, v)
        keys_seen, values_seen = k_cache[:1, :, :kv_len], v_cache[:1, :, :kv_len]
        if n_kv_head == n_head:  # causal_lm.attend's kernel without grouping
            y = F.scaled_dot_product_attention(qk[:, :n_head], keys_seen, values_seen)
        else:  # causal_lm._grouped_decode: the query heads that share a key/value head are one matmul
            q = qk[:, :n_head].reshape(1, n_kv_head, n_head // n_kv_head, head_dim)
            scores = torch.matmul(q, keys_seen.transpose(-1, -2)).mul_(scale)
            y = torch.matmul(scores.softmax(dim=-1), values_seen)
        y = y.reshape(1, 1, n_head * head_dim)
        x = x + torch.ops.quantized.linear_dynamic(y, o_kernel, True)
        h = F.rms_norm(x, [C], w_post, eps)
        gate_up = torch.ops.quantized.linear_dynamic(h, gate_up_kernel, True)
        gate, up = gate_up.split([hidden, hidden], dim=-1)
        x = x + torch.ops.quantized.linear_dynamic(F.silu(gate) * up, down_kernel, True)
    return x


_compiled: list[Any] = []  # [the scripted decode_layers, or decode_layers itself if scripting failed]


def _decode_layers() -> Any:
    if not _compiled:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "torch.jit.script is deprecated": see the docstring
                _compiled.append(torch.jit.script(decode_layers))
        except Exception as exc:  # any scripting failure leaves the eager function
            log.warning("TorchScript could not compile the decode step (%s); running it eagerly", exc)
            _compiled.append(decode_layers)
    return _compiled[0]


class DecodePlan:
    """What decode_layers needs from a model, gathered once and rebuilt when any weight changes."""

    def __init__(self, model: Any) -> None:
        self.tensors = self._tensors(model)
        self.key = self._key(self.tensors)
        self.layers: list[LayerPlan] = []  # empty: the model is not one decode_layers runs
        if not is_supported(model):
            return
        for block in model.transformer.blocks():
            attn, mlp = block.self_attn, block.mlp
            kernels = (int8_kernel((attn.q_proj, attn.k_proj, attn.v_proj)), int8_kernel((attn.o_proj,)),
                       int8_kernel((mlp.gate_proj, mlp.up_proj)), int8_kernel((mlp.down_proj,)))
            if any(k is None for k in kernels):
                self.layers = []
                return
            qkv, o, gate_up, down = kernels
            self.layers.append((block.input_layernorm.weight.detach(), qkv, o,
                                block.post_attention_layernorm.weight.detach(), gate_up, down))

    @staticmethod
    def _tensors(model: Any) -> list[torch.Tensor]:
        out = []
        for block in model.transformer.blocks():
            out += [block.input_layernorm.weight, block.post_attention_layernorm.weight]
            out += [m.qweight for name in model.BLOCK_LINEARS if isinstance(m := block.get_submodule(name), Int8Linear)]
        return out

    @staticmethod
    def _key(tensors: list[torch.Tensor]) -> tuple[int, ...]:
        return (quant_layers._reloads[0], *(t.data_ptr() for t in tensors))

    def is_current(self) -> bool:
        return self._key(self.tensors) == self.key


def is_supported(model: Any) -> bool:
    """An int8 Llama or Qwen2 trunk (RMSNorm, SwiGLU) whose seven block linears are all int8."""
    if model.config.family not in ("llama", "qwen2"):
        return False
    return all(type(block.get_submodule(name)) is Int8Linear
               for block in model.transformer.blocks() for name in model.BLOCK_LINEARS)


def decode_step(model: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, input_pos: torch.Tensor,
                kv_len: int) -> torch.Tensor | None:
    """The trunk's layers for one embedded token x (1, 1, C) through decode_layers, or None when
    this call is not one it takes (see the module docstring): the caller then runs the modules."""
    if (x.shape[:2] != (1, 1) or input_pos.shape != (1, 1) or x.device.type != "cpu"
            or x.dtype != torch.float32 or torch.is_grad_enabled() or model.training):
        return None
    plan: DecodePlan | None = getattr(model, "_decode_plan", None)
    if plan is None or not plan.is_current():
        plan = model._decode_plan = DecodePlan(model)
    if not plan.layers:
        return None
    caches = [attn.kv_cache for attn in model.attention_layers()]
    if any(c is None for c in caches):
        return None
    config = model.config
    half = config.head_dim // 2
    sin_signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    out: torch.Tensor = _decode_layers()(
        x, cos, sin_signed, input_pos[0], kv_len, plan.layers, [c.k for c in caches], [c.v for c in caches],
        config.n_head, config.n_kv_head, config.head_dim, config.intermediate_size, config.rms_norm_eps)
    return out
