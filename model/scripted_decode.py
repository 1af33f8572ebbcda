"""Decode steps of int8 models on a CPU as one TorchScript function each: the layers of GPT-2 and
of the Llama family (llama, qwen2) for one token per row, over the packed int8 kernels.

A decode step is a few int8 matmuls a layer with ~15-20 small ops around them. Run as modules,
the Python between those ops and their dispatch cost as much as the matmuls: ~20 ms a token for
Qwen2.5-Coder-0.5B's 24 layers, ~3 ms for the embedded default's 6. Here each family's layer loop
is one scripted function: no modules, no Python between the ops. The attention, the cache write
and GELU are causal_lm's own functions (attend_cached, write_kv, gelu_tanh), compiled with it, and
every other op is the module path's, in its order, so the logits are the same bit for bit
(tests/model/test_scripted_decode.py). The one liberty: Llama's q and k are rotated in one pass
(one flip, the rotation's sign folded into the sine table), elementwise the same arithmetic.

ms a token, the same process alternating (benchmarks/README.md): Qwen2.5-Coder-0.5B's shape at 512
cached tokens, modules 73-75 → 51-55 at one thread, 46-51 → 34-37 at two; the embedded default at
300 cached tokens, 6.3-7.9 → 4.1 and 5.8-6.2 → 3.1-4.0.

TorchScript is deprecated in favour of torch.compile, but torch.compile took 34 s to compile the
module step and ran it slower (benchmarks/README.md). Should scripting fail in some PyTorch, the
same function runs eagerly: still without the modules.

Taken: a step of one token per row (any number of rows, the team server's batches too) of a model
whose block linears are all int8, in float32 on a CPU, without autograd, with a KV cache. Anything
else (prefill, speculative verification, float or int4 weights, CUDA, StarCoder2 and GPTBigCode
trunks, training) runs the modules.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

from codeassist.model import quant_layers
from codeassist.model.causal_lm import attend_cached, gelu_tanh, write_kv
from codeassist.model.quant_layers import Int8Linear, int8_kernel

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Packed = Any
else:  # TorchScript needs the real class in the functions' annotations
    try:
        Packed = torch.classes.quantized.LinearPackedParamsBase
    except (RuntimeError, AttributeError):  # a PyTorch without int8 kernels: the modules' fallback runs
        Packed = Any

# per layer: ln_1 weight and bias, c_attn, attn.c_proj, ln_2 weight and bias, c_fc, mlp.c_proj
GPT2Layer = tuple[torch.Tensor, torch.Tensor | None, Packed, Packed, torch.Tensor, torch.Tensor | None,
                  Packed, Packed]
# per layer: input norm weight, fused q/k/v, o, post-attention norm weight, fused gate/up, down
LlamaLayer = tuple[torch.Tensor, Packed, Packed, torch.Tensor, Packed, Packed]


def gpt2_layers(x: torch.Tensor, input_pos: torch.Tensor, kv_len: int, layers: list[GPT2Layer],
                keys: list[torch.Tensor], values: list[torch.Tensor], n_head: int, eps: float) -> torch.Tensor:
    """GPT-2's blocks for one token per row: x (B, 1, C) → (B, 1, C); input_pos (B|1, 1)."""
    B, C = x.size(0), x.size(-1)
    hs = C // n_head
    for i, (w_1, b_1, attn_kernel, proj_kernel, w_2, b_2, fc_kernel, out_kernel) in enumerate(layers):
        h = F.layer_norm(x, [C], w_1, b_1, eps)
        q, k, v = torch.ops.quantized.linear_dynamic(h, attn_kernel, True).split(C, dim=2)
        q = q.view(B, 1, n_head, hs).transpose(1, 2)  # (B, nh, 1, hs)
        k = k.view(B, 1, n_head, hs).transpose(1, 2)
        v = v.view(B, 1, n_head, hs).transpose(1, 2)
        k_seen, v_seen = write_kv(keys[i], values[i], input_pos, k, v, kv_len)
        y = attend_cached(q, k_seen, v_seen, input_pos, kv_len, None)
        y = y.transpose(1, 2).contiguous().view(B, 1, C)
        x = x + torch.ops.quantized.linear_dynamic(y, proj_kernel, True)
        h = F.layer_norm(x, [C], w_2, b_2, eps)
        h = gelu_tanh(torch.ops.quantized.linear_dynamic(h, fc_kernel, True))
        x = x + torch.ops.quantized.linear_dynamic(h, out_kernel, True)
    return x


def llama_layers(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor, input_pos: torch.Tensor,
                 kv_len: int, layers: list[LlamaLayer], keys: list[torch.Tensor], values: list[torch.Tensor],
                 n_head: int, n_kv_head: int, head_dim: int, hidden: int, eps: float) -> torch.Tensor:
    """The Llama trunk's layers for one token per row: x (B, 1, C) → (B, 1, C); cos and
    sin_signed (B|1, 1, 1, hs), the sine's first half negated."""
    B, C = x.size(0), x.size(-1)
    n_qk = n_head + n_kv_head
    half = head_dim // 2
    for i, (w_in, qkv_kernel, o_kernel, w_post, gate_up_kernel, down_kernel) in enumerate(layers):
        h = F.rms_norm(x, [C], w_in, eps)
        qkv = torch.ops.quantized.linear_dynamic(h, qkv_kernel, True)  # (B, 1, (nh + 2 n_kv) hs)
        qk = qkv[:, :, :n_qk * head_dim].view(B, n_qk, 1, head_dim)  # q's heads, then k's
        # apply_rope's x * cos + cat(-x2, x1) * sin, with the minus sign moved into the sine
        rotated = qk.view(B, n_qk, 1, 2, half).flip(-2).view(B, n_qk, 1, head_dim)
        qk = qk * cos + rotated * sin_signed
        v = qkv[:, :, n_qk * head_dim:].view(B, n_kv_head, 1, head_dim)
        k_seen, v_seen = write_kv(keys[i], values[i], input_pos, qk[:, n_head:], v, kv_len)
        y = attend_cached(qk[:, :n_head], k_seen, v_seen, input_pos, kv_len, None)  # (B, nh, 1, hs)
        y = y.transpose(1, 2).reshape(B, 1, n_head * head_dim)
        x = x + torch.ops.quantized.linear_dynamic(y, o_kernel, True)
        h = F.rms_norm(x, [C], w_post, eps)
        gate_up = torch.ops.quantized.linear_dynamic(h, gate_up_kernel, True)
        gate, up = gate_up.split([hidden, hidden], dim=-1)
        x = x + torch.ops.quantized.linear_dynamic(F.silu(gate) * up, down_kernel, True)
    return x


_compiled: dict[str, Any] = {}  # function name -> the scripted function, or the function itself


def _scripted(fn: Callable[..., torch.Tensor]) -> Any:
    if fn.__name__ not in _compiled:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "torch.jit.script is deprecated": see the docstring
                _compiled[fn.__name__] = torch.jit.script(fn)
        except Exception as exc:  # any scripting failure leaves the eager function
            log.warning("TorchScript could not compile %s (%s); running it eagerly", fn.__name__, exc)
            _compiled[fn.__name__] = fn
    return _compiled[fn.__name__]


class DecodePlan:
    """What a family's function needs from a model, gathered once and rebuilt when a weight changes:
    `layers` is empty when the model is not one the function runs."""

    def __init__(self, model: Any, norms: tuple[str, ...], gather: Callable[[Any], tuple[Any, ...] | None]) -> None:
        self.tensors: list[torch.Tensor] = []
        all_int8 = True
        for block in model.transformer.blocks():
            linears = [block.get_submodule(name) for name in model.BLOCK_LINEARS]
            all_int8 = all_int8 and all(type(m) is Int8Linear for m in linears)
            self.tensors += [block.get_submodule(name).weight for name in norms]
            self.tensors += [m.qweight for m in linears if isinstance(m, Int8Linear)]
        self.key = self._key()
        self.layers: list[Any] = []
        if not all_int8:
            return
        for block in model.transformer.blocks():
            layer = gather(block)
            if layer is None:  # a kernel PyTorch lacks here: the modules' fallback
                self.layers = []
                return
            self.layers.append(layer)

    def _key(self) -> tuple[int, ...]:
        return (quant_layers._reloads[0], *(t.data_ptr() for t in self.tensors))

    def is_current(self) -> bool:
        return self._key() == self.key


def _plan(model: Any, x: torch.Tensor, input_pos: torch.Tensor, norms: tuple[str, ...],
          gather: Callable[[Any], tuple[Any, ...] | None]) -> tuple[DecodePlan, list[Any]] | None:
    """The model's current plan and its caches when this step is one a scripted function takes."""
    B = x.size(0)
    if (x.size(1) != 1 or input_pos.size(1) != 1 or input_pos.size(0) not in (1, B) or not x.is_cpu
            or x.dtype != torch.float32 or torch.is_grad_enabled() or model.training):
        return None
    plan: DecodePlan | None = getattr(model, "_decode_plan", None)
    if plan is None or not plan.is_current():
        plan = model._decode_plan = DecodePlan(model, norms, gather)
    caches = [attn.kv_cache for attn in model.attention_layers()]
    if not plan.layers or any(c is None for c in caches):
        return None
    return plan, caches


def _kernels(*groups: tuple[Any, ...]) -> list[Any] | None:
    kernels = [int8_kernel(group) for group in groups]
    return None if any(k is None for k in kernels) else kernels


def _gpt2_layer(block: Any) -> GPT2Layer | None:
    attn, mlp = block.attn, block.mlp
    kernels = _kernels((attn.c_attn,), (attn.c_proj,), (mlp.c_fc,), (mlp.c_proj,))
    if kernels is None:
        return None
    bias_1, bias_2 = block.ln_1.bias, block.ln_2.bias
    return (block.ln_1.weight.detach(), None if bias_1 is None else bias_1.detach(), kernels[0], kernels[1],
            block.ln_2.weight.detach(), None if bias_2 is None else bias_2.detach(), kernels[2], kernels[3])


def _llama_layer(block: Any) -> LlamaLayer | None:
    attn, mlp = block.self_attn, block.mlp
    kernels = _kernels((attn.q_proj, attn.k_proj, attn.v_proj), (attn.o_proj,), (mlp.gate_proj, mlp.up_proj),
                       (mlp.down_proj,))
    if kernels is None:
        return None
    qkv, o, gate_up, down = kernels
    return (block.input_layernorm.weight.detach(), qkv, o, block.post_attention_layernorm.weight.detach(),
            gate_up, down)


def gpt2_step(model: Any, x: torch.Tensor, input_pos: torch.Tensor, kv_len: int) -> torch.Tensor | None:
    """GPT-2's blocks for embedded tokens x (B, 1, C) through gpt2_layers, or None when this call
    is not one it takes (see the module docstring): the caller then runs the modules."""
    found = _plan(model, x, input_pos, ("ln_1", "ln_2"), _gpt2_layer)
    if found is None:
        return None
    plan, caches = found
    out: torch.Tensor = _scripted(gpt2_layers)(
        x, input_pos, kv_len, plan.layers, [c.k for c in caches], [c.v for c in caches], model.config.n_head,
        model.config.layer_norm_eps)
    return out


def llama_step(model: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, input_pos: torch.Tensor,
               kv_len: int) -> torch.Tensor | None:
    """The Llama trunk's layers (llama, qwen2) for embedded tokens x (B, 1, C) through llama_layers,
    or None when this call is not one it takes: the caller then runs the modules."""
    if model.config.family not in ("llama", "qwen2"):  # starcoder2: LayerNorm and a GELU MLP
        return None
    found = _plan(model, x, input_pos, ("input_layernorm", "post_attention_layernorm"), _llama_layer)
    if found is None:
        return None
    plan, caches = found
    config = model.config
    half = config.head_dim // 2
    sin_signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    out: torch.Tensor = _scripted(llama_layers)(
        x, cos, sin_signed, input_pos, kv_len, plan.layers, [c.k for c in caches], [c.v for c in caches],
        config.n_head, config.n_kv_head, config.head_dim, config.intermediate_size, config.rms_norm_eps)
    return out
