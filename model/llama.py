"""The Llama family as Hugging Face defines it: `llama` (Code Llama, DeepSeek-Coder), `qwen2`
(Qwen2.5-Coder) and `starcoder2`.

RoPE, RMSNorm, a SwiGLU MLP and grouped-query attention (n_kv_head key/value heads shared by
n_head / n_kv_head query heads each). qwen2 has biases on q, k and v; llama has them on all four
projections when `attention_bias` is set. The embedding may be tied to the head (Qwen2.5-Coder
0.5B and 1.5B) or not. starcoder2 is the same trunk with LayerNorm, a plain GELU MLP (c_fc,
c_proj) and biases everywhere; its sliding window is honoured by capping the context at the
window, where sliding and full attention are the same thing.

Module names are Hugging Face's (`model.layers.N.self_attn.q_proj`, ...), so a checkpoint maps
one to one and an export writes the same names back. The rotary tables are computed from the
positions at each call, on the positions' device, in fp32 as transformers does, then cast to
the activations' dtype: nothing here assumes a CPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from codeassist.model.causal_lm import CausalLM, KVCache, attend, gelu_tanh
from codeassist.model.quant_layers import fused_linear
from codeassist.model.scripted_decode import llama_step

MODEL_TYPES = ("llama", "qwen2", "starcoder2")
ROPE_TYPES = ("default", "linear")


@dataclass(frozen=True)
class LlamaConfig:
    family: str = "llama"  # Hugging Face's model_type: llama | qwen2 | starcoder2
    block_size: int = 2048  # max_position_embeddings; the engine caps its cache below this
    vocab_size: int = 32000
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int = 4  # key/value heads (grouped-query attention when fewer than n_head)
    n_embd: int = 64
    head_dim: int = 16  # usually n_embd / n_head, but Llama's config may say otherwise
    intermediate_size: int = 172  # the SwiGLU hidden width
    rms_norm_eps: float = 1e-6  # the norms' epsilon (starcoder2: its LayerNorms', norm_epsilon)
    rope_theta: float = 10000.0
    rope_linear_factor: float = 1.0  # positions divided by this (linear RoPE scaling: DeepSeek-Coder)
    qkv_bias: bool = False  # qwen2: True
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    dropout: float = 0.0  # attention dropout, training only

    def __post_init__(self) -> None:
        if self.family not in MODEL_TYPES:
            raise ValueError(f"the Llama family has model types {', '.join(MODEL_TYPES)}, not {self.family!r}")
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "head_dim",
                     "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for RoPE")

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> LlamaConfig:
        """From a Hugging Face config.json (transformers 4 or 5 layout); ValueError says what is unsupported."""
        model_type = hf.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not in the Llama family")
        starcoder2 = model_type == "starcoder2"
        act = hf.get("hidden_act", "gelu_pytorch_tanh" if starcoder2 else "silu")
        wanted = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast") if starcoder2 else ("silu",)
        if act not in wanted:
            raise ValueError(f"its hidden_act is {act!r}; codeassist runs {model_type} with {' or '.join(wanted)}")
        if hf.get("use_sliding_window"):
            raise ValueError("it uses sliding-window attention, which codeassist does not support")
        if hf.get("pretraining_tp", 1) not in (1, None):
            raise ValueError("it sets pretraining_tp, which codeassist does not support")
        rope = dict(hf.get("rope_parameters") or {})
        rope.update(hf.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"it uses RoPE scaling {rope_type!r}; codeassist supports the default and "
                             "linear RoPE only")
        if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
            raise ValueError("it uses partial rotary embeddings, which codeassist does not support")
        theta = hf.get("rope_theta") or rope.get("rope_theta") or 10000.0
        n_embd, n_head = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        attn_bias = bool(hf.get("use_bias", True) if starcoder2 else hf.get("attention_bias", False))
        block_size = int(hf.get("max_position_embeddings", 2048 if model_type == "llama" else 32768))
        if starcoder2 and hf.get("sliding_window"):
            block_size = min(block_size, int(hf["sliding_window"]))  # within the window, attention is full
        return cls(
            family=model_type, block_size=block_size,
            vocab_size=int(hf["vocab_size"]), n_layer=int(hf["num_hidden_layers"]), n_head=n_head,
            n_kv_head=int(hf.get("num_key_value_heads") or n_head), n_embd=n_embd,
            head_dim=int(hf.get("head_dim") or n_embd // n_head),
            intermediate_size=int(hf["intermediate_size"]),
            rms_norm_eps=float(hf.get("norm_epsilon", 1e-5) if starcoder2 else hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_linear_factor=float(rope.get("factor", 1.0)) if rope_type == "linear" else 1.0,
            qkv_bias=True if model_type == "qwen2" else attn_bias,
            o_bias=False if model_type == "qwen2" else attn_bias,
            mlp_bias=attn_bias if starcoder2 else bool(hf.get("mlp_bias", False)) if model_type == "llama" else False,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face config.json of this shape (what an export writes)."""
        arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "starcoder2": "Starcoder2ForCausalLM"}
        hf: dict[str, Any] = {
            "model_type": self.family, "architectures": [arch[self.family]],
            "max_position_embeddings": self.block_size, "vocab_size": self.vocab_size,
            "num_hidden_layers": self.n_layer, "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head, "hidden_size": self.n_embd, "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size, "rope_theta": self.rope_theta,
            "rope_scaling": ({"rope_type": "linear", "factor": self.rope_linear_factor}
                             if self.rope_linear_factor != 1.0 else None),
            "tie_word_embeddings": self.tie_word_embeddings, "torch_dtype": "float32",
        }
        if self.family == "starcoder2":
            hf.update(norm_epsilon=self.rms_norm_eps, hidden_act="gelu_pytorch_tanh", use_bias=self.qkv_bias,
                      sliding_window=None)
        else:
            hf.update(rms_norm_eps=self.rms_norm_eps, hidden_act="silu")
        if self.family == "llama":
            hf.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        return hf

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LlamaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)
        # reduced precision: normalise in fp32, scale after the cast back (as transformers does)
        y = F.rms_norm(x.float(), (x.size(-1),), None, self.eps).to(x.dtype)
        return self.weight.to(x.dtype) * y


def rope_tables(config: LlamaConfig, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B|1, 1, T, head_dim) for positions pos (B|1, T), computed in fp32."""
    hs = config.head_dim
    exponent = torch.arange(0, hs, 2, dtype=torch.int64, device=pos.device).float() / hs
    inv_freq = 1.0 / (config.rope_theta ** exponent) / config.rope_linear_factor  # (hs/2,)
    freqs = pos.float().unsqueeze(-1) * inv_freq  # (B|1, T, hs/2)
    emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)  # (B|1, 1, T, hs)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.dropout = config.dropout
        C, q_dim, kv_dim = config.n_embd, config.n_head * config.head_dim, config.n_kv_head * config.head_dim
        self.q_proj = nn.Linear(C, q_dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(C, kv_dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(C, kv_dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(q_dim, C, bias=config.o_bias)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                input_pos: torch.Tensor | None, kv_len: int) -> torch.Tensor:
        B, T, _ = x.size()
        hs = self.head_dim
        q, k, v = fused_linear(x, (self.q_proj, self.k_proj, self.v_proj))  # one int8 call on a CPU
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, hs).transpose(1, 2)  # (B, n_kv, T, hs)
        v = v.view(B, T, self.n_kv_head, hs).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = attend(q, k, v, self.kv_cache, input_pos, kv_len, self.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * hs))


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        C, H = config.n_embd, config.intermediate_size
        self.gate_proj = nn.Linear(C, H, bias=config.mlp_bias)
        self.up_proj = nn.Linear(C, H, bias=config.mlp_bias)
        self.down_proj = nn.Linear(H, C, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = fused_linear(x, (self.gate_proj, self.up_proj))
        return self.down_proj(F.silu(gate) * up)


class Starcoder2MLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.intermediate_size, bias=config.mlp_bias)
        self.c_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(gelu_tanh(self.c_fc(x)))


def make_norm(config: LlamaConfig) -> RMSNorm | nn.LayerNorm:
    if config.family == "starcoder2":
        return nn.LayerNorm(config.n_embd, eps=config.rms_norm_eps)
    return RMSNorm(config.n_embd, config.rms_norm_eps)


class LlamaLayer(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = make_norm(config)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = make_norm(config)
        self.mlp: nn.Module = Starcoder2MLP(config) if config.family == "starcoder2" else LlamaMLP(config)

    @property
    def attn(self) -> LlamaAttention:
        """The name the batcher uses for every family's attention (it swaps `attn.kv_cache`)."""
        return self.self_attn

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                input_pos: torch.Tensor | None, kv_len: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, input_pos, kv_len)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaTrunk(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList([LlamaLayer(config) for _ in range(config.n_layer)])
        self.norm = make_norm(config)

    def blocks(self) -> list[LlamaLayer]:
        return [b for b in self.layers if isinstance(b, LlamaLayer)]


class Llama(CausalLM):
    config: LlamaConfig
    LAYERS = "model.layers"
    BLOCK_LINEARS: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    EMBEDDING = "model.embed_tokens"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaTrunk(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.kv_batch_size = 0

    @property
    def transformer(self) -> LlamaTrunk:  # type: ignore[override]  # read-only: the trunk is `model`
        """The trunk under the name every family shares (Hugging Face calls it `model`)."""
        return self.model

    @property
    def tied_embeddings(self) -> bool:
        return self.config.tie_word_embeddings

    def attention_layers(self) -> list[LlamaAttention]:
        return [layer.self_attn for layer in self.model.blocks()]

    @property
    def kv_heads(self) -> int:
        return self.config.n_kv_head

    @property
    def anchor(self) -> torch.Tensor:
        weight: torch.Tensor = self.model.norm.weight
        return weight

    def hidden_states(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None,
                      kv_len: int = 0) -> torch.Tensor:
        T = idx.size(1)
        if input_pos is None:
            if self.config.block_size < T:
                raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
            pos = torch.arange(T, device=idx.device).unsqueeze(0)  # (1, T)
        else:
            pos = input_pos
        x = self.model.embed_tokens(idx)  # (B, T, C)
        cos, sin = rope_tables(self.config, pos, x.dtype)
        step = None if input_pos is None or T != 1 else llama_step(self, x, cos, sin, input_pos, kv_len)
        if step is not None:
            x = step  # a token a row of an int8 model on a CPU: one scripted function (model/scripted_decode.py)
        else:
            for layer in self.model.blocks():
                x = layer(x, cos, sin, input_pos, kv_len)
        out: torch.Tensor = self.model.norm(x)
        return out


class Starcoder2(Llama):
    """starcoder2: the Llama trunk with LayerNorm and a GELU MLP, so other linear layer names."""

    BLOCK_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.c_fc", "mlp.c_proj")
