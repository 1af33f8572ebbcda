"""The decode-speed paths are exact: fused int8 linears and grouped-query decode attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

from codeassist.model.causal_lm import _grouped_decode
from codeassist.model.llama import Llama, LlamaConfig
from codeassist.model.quant_layers import Int8Linear, fused_linear
from codeassist.quantization.quantize import quantize

QWEN_LIKE = LlamaConfig(family="qwen2", vocab_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, head_dim=16,
                        intermediate_size=96, qkv_bias=True, tie_word_embeddings=True, block_size=128)


def int8_layer(k: int, n: int, bias: bool, seed: int) -> Int8Linear:
    g = torch.Generator().manual_seed(seed)
    layer = Int8Linear(k, n, bias=bias)
    layer.qweight.copy_(torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8))
    layer.scales.copy_(torch.rand(n, generator=g) / 100 + 1e-3)
    if layer.bias is not None:
        layer.bias.data.copy_(torch.randn(n, generator=g))
    return layer


@pytest.mark.parametrize("bias", [True, False])
def test_fused_int8_linears_equal_separate_calls_bit_for_bit(bias: bool) -> None:
    layers = [int8_layer(64, n, bias, seed) for seed, n in enumerate((64, 32, 32))]
    x = torch.randn(3, 5, 64)
    fused = fused_linear(x, layers)
    assert [t.shape[-1] for t in fused] == [64, 32, 32]
    assert layers[0]._fused is not None and layers[1]._kernel is None  # one packed copy, not two
    for got, layer in zip(fused, layers, strict=True):
        assert torch.equal(got, layer(x))


def test_fused_kernel_follows_new_weights() -> None:
    layers = [int8_layer(32, 16, True, 0), int8_layer(32, 16, True, 1)]
    x = torch.randn(1, 1, 32)
    fused_linear(x, layers)
    replacement = int8_layer(32, 16, True, 7)
    layers[1].load_state_dict(replacement.state_dict())  # in place: the same storage, new values
    assert torch.equal(fused_linear(x, layers)[1], replacement(x))


def test_unfusable_layers_run_one_by_one() -> None:
    float_layer = nn.Linear(32, 8)
    mixed = [int8_layer(32, 8, True, 0), float_layer]
    x = torch.randn(2, 32)
    out = fused_linear(x, mixed)
    assert torch.equal(out[0], mixed[0](x)) and torch.equal(out[1], float_layer(x))
    no_bias = [int8_layer(32, 8, True, 0), int8_layer(32, 8, False, 1)]
    out = fused_linear(x, no_bias)
    assert no_bias[0]._fused is None
    assert torch.equal(out[1], no_bias[1](x))


@pytest.mark.parametrize(("nh", "n_kv", "seq"), [(4, 2, 7), (14, 2, 300), (8, 1, 33)])
def test_grouped_decode_attention_equals_sdpa(nh: int, n_kv: int, seq: int) -> None:
    g = torch.Generator().manual_seed(seq)
    q = torch.randn(2, nh, 1, 16, generator=g)
    k, v = torch.randn(2, n_kv, seq, 16, generator=g), torch.randn(2, n_kv, seq, 16, generator=g)
    want = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(_grouped_decode(q, k, v, None), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(_grouped_decode(q, k, v, 0.3), F.scaled_dot_product_attention(
        q, k, v, enable_gqa=True, scale=0.3), rtol=0, atol=1e-6)


def decode_logits(model: torch.nn.Module, ids: torch.Tensor, start: int) -> list[torch.Tensor]:
    """Prefill ids[:start], then one decode step per remaining token: each step's last logits."""
    model.setup_kv_cache(1, 16)
    model(ids[:, :start], input_pos=torch.arange(start).unsqueeze(0), kv_len=start)
    return [model(ids[:, p:p + 1], input_pos=torch.tensor([[p]]), kv_len=p + 1)[0, -1]
            for p in range(start, ids.size(1))]


@torch.inference_mode()
def test_float_qwen_decode_steps_equal_one_long_prefill() -> None:
    """Grouped decode attention inside the model: each step's logits are the prefill's at that position."""
    torch.manual_seed(0)
    model = Llama(QWEN_LIKE).eval()
    ids = torch.randint(0, QWEN_LIKE.vocab_size, (1, 12))
    model.setup_kv_cache(1, 16)
    full = model(ids, input_pos=torch.arange(12).unsqueeze(0), kv_len=12)
    for p, step in enumerate(decode_logits(model, ids, 6), start=6):
        torch.testing.assert_close(step, full[0, p], rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_int8_qwen_decode_is_bitwise_the_unfused_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    from codeassist.model import llama
    monkeypatch.setattr(llama, "llama_step", lambda *args: None)  # the modules (scripted_decode has its own test)
    torch.manual_seed(0)
    fp32 = Llama(QWEN_LIKE).eval()
    model = quantize(fp32, "int8").build(fp32).eval()
    ids = torch.randint(0, QWEN_LIKE.vocab_size, (1, 12))
    fused = decode_logits(model, ids, 6)
    assert any(isinstance(m, Int8Linear) and m._fused is not None for m in model.modules())
    monkeypatch.setattr(llama, "fused_linear", lambda x, layers: tuple(m(x) for m in layers))
    for a, b in zip(fused, decode_logits(model, ids, 6), strict=True):
        assert torch.equal(a, b)
