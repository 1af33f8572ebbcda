"""A numpy forward pass over a GGUF file, following llama.cpp's graphs for gpt2, llama and qwen2.

It reads only what llama.cpp reads (the file's keys and tensors by their GGUF names) and applies
llama.cpp's conventions, notably RoPE: arch llama rotates adjacent pairs (x[2i], x[2i+1]) (ggml's
"normal" mode), qwen2 rotates halves (x[i], x[i + d/2]) (the "neox" mode). Tests compare its logits
with ours and with transformers' to check an export's semantics, not just its names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np


def read(source: Path | gguf.GGUFReader) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    reader = source if isinstance(source, gguf.GGUFReader) else gguf.GGUFReader(str(source))
    keys = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    tensors = {}
    for t in reader.tensors:
        shape = list(reversed(t.shape.tolist()))
        data = np.asarray(t.data)
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            data = gguf.quants.dequantize(data, t.tensor_type)
        tensors[t.name] = data.astype(np.float32).reshape(shape)
    return keys, tensors


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """q (nh, T, hs), k and v (n_kv, T, hs): causal softmax attention, kv heads shared."""
    rep = q.shape[0] // k.shape[0]
    k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    T = q.shape[1]
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v  # (nh, T, hs)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _rope(x: np.ndarray, base: float, scale: float, neox: bool) -> np.ndarray:
    """x (n, T, hs) at positions 0..T-1."""
    hs, T = x.shape[-1], x.shape[1]
    theta = (np.arange(T)[:, None] / scale) * base ** (-np.arange(0, hs, 2) / hs)  # (T, hs/2)
    cos, sin = np.cos(theta), np.sin(theta)
    if neox:
        a, b = x[..., : hs // 2], x[..., hs // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def forward(source: Path | gguf.GGUFReader, ids: list[int]) -> np.ndarray:
    """Logits (T, vocab) of the GGUF model (a file or its reader) for the token ids."""
    keys, w = read(source)
    arch = str(keys["general.architecture"])
    if arch in ("gpt2", "starcoder"):
        return _forward_gpt2(keys, w, ids, arch)
    return _forward_llama(keys, w, ids, arch)


def _forward_gpt2(keys: dict[str, Any], w: dict[str, np.ndarray], ids: list[int], arch: str) -> np.ndarray:
    """gpt2 and starcoder: learned positions, LayerNorm, GELU; starcoder's fused qkv holds
    head_count_kv key/value heads after the queries."""
    eps, nh = float(keys[f"{arch}.attention.layer_norm_epsilon"]), int(keys[f"{arch}.attention.head_count"])
    nkv = int(keys.get(f"{arch}.attention.head_count_kv", nh))
    T = len(ids)
    x = w["token_embd.weight"][ids] + w["position_embd.weight"][:T]
    for n in range(int(keys[f"{arch}.block_count"])):
        p = f"blk.{n}."
        h = _layer_norm(x, w[p + "attn_norm.weight"], w[p + "attn_norm.bias"], eps)
        qkv = h @ w[p + "attn_qkv.weight"].T + w[p + "attn_qkv.bias"]
        C = x.shape[-1]
        kv = C // nh * nkv
        q, k, v = qkv[:, :C], qkv[:, C:C + kv], qkv[:, C + kv:]
        q = q.reshape(T, nh, -1).transpose(1, 0, 2)
        k, v = (a.reshape(T, nkv, -1).transpose(1, 0, 2) for a in (k, v))
        y = _attention(q, k, v).transpose(1, 0, 2).reshape(T, -1)
        x = x + y @ w[p + "attn_output.weight"].T + w[p + "attn_output.bias"]
        h = _layer_norm(x, w[p + "ffn_norm.weight"], w[p + "ffn_norm.bias"], eps)
        h = _gelu(h @ w[p + "ffn_up.weight"].T + w[p + "ffn_up.bias"])
        x = x + h @ w[p + "ffn_down.weight"].T + w[p + "ffn_down.bias"]
    x = _layer_norm(x, w["output_norm.weight"], w["output_norm.bias"], eps)
    return x @ w.get("output.weight", w["token_embd.weight"]).T


def _forward_llama(keys: dict[str, Any], w: dict[str, np.ndarray], ids: list[int], arch: str) -> np.ndarray:
    eps = float(keys[f"{arch}.attention.layer_norm_rms_epsilon"])
    nh, nkv = int(keys[f"{arch}.attention.head_count"]), int(keys[f"{arch}.attention.head_count_kv"])
    base = float(keys[f"{arch}.rope.freq_base"])
    scale = float(keys.get(f"{arch}.rope.scaling.factor", 1.0))
    neox = arch == "qwen2"  # llama.cpp's rope type per arch
    T = len(ids)
    x = w["token_embd.weight"][ids]

    def proj(h: np.ndarray, name: str) -> np.ndarray:
        out = h @ w[name + ".weight"].T
        return out + w[name + ".bias"] if name + ".bias" in w else out

    for n in range(int(keys[f"{arch}.block_count"])):
        p = f"blk.{n}."
        h = _rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = proj(h, p + "attn_q").reshape(T, nh, -1).transpose(1, 0, 2)
        k = proj(h, p + "attn_k").reshape(T, nkv, -1).transpose(1, 0, 2)
        v = proj(h, p + "attn_v").reshape(T, nkv, -1).transpose(1, 0, 2)
        q, k = _rope(q, base, scale, neox), _rope(k, base, scale, neox)
        x = x + proj(_attention(q, k, v).transpose(1, 0, 2).reshape(T, -1), p + "attn_output")
        h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate = proj(h, p + "ffn_gate")
        x = x + proj(gate / (1 + np.exp(-gate)) * proj(h, p + "ffn_up"), p + "ffn_down")
    x = _rms_norm(x, w["output_norm.weight"], eps)
    head = w.get("output.weight", w["token_embd.weight"])  # tied: llama.cpp reuses the embedding
    return x @ head.T
