"""GPTQ: it must beat round-to-nearest where it claims to, on the layer's own inputs."""

from __future__ import annotations

import torch

from codeassist.model.quantized import dequantize_int4, pack_int4
from codeassist.quantization.gptq import GPTQConfig, gptq_layer
from codeassist.quantization.rtn import quantize_int4


def test_gptq_has_lower_output_error_than_rtn_on_correlated_inputs() -> None:
    gen = torch.Generator().manual_seed(0)
    K, N = 128, 96
    mix = torch.randn(K, K, generator=gen) / K**0.5
    x = torch.randn(2048, K, generator=gen) @ mix + 0.3 * torch.randn(2048, K, generator=gen)  # correlated
    w = torch.randn(N, K, generator=gen) * 0.02
    H = 2 * x.t() @ x / x.size(0)
    solved = gptq_layer(w, H, GPTQConfig(group_size=32))
    rtn = dequantize_int4(*quantize_int4(w, 32))
    ref = x @ w.t()
    err_gptq = float((x @ solved.dequantize().t() - ref).norm())
    err_rtn = float((x @ rtn.t() - ref).norm())
    assert err_gptq < 0.8 * err_rtn


def test_gptq_values_are_on_the_stored_grid() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(32, 64, generator=gen)
    solved = gptq_layer(w, torch.eye(64), GPTQConfig(group_size=32))
    assert solved.qvalues.dtype == torch.uint8 and int(solved.qvalues.max()) <= 15
    # what the file stores (packed values, bf16 scales and zeros) dequantizes to what GPTQ solved for
    torch.testing.assert_close(dequantize_int4(pack_int4(solved.qvalues), solved.scales, solved.zeros),
                               solved.dequantize())
    # with an identity Hessian there is nothing to compensate: GPTQ is round-to-nearest
    rtn = dequantize_int4(*quantize_int4(w, 32))
    torch.testing.assert_close(solved.dequantize(), rtn, atol=1e-6, rtol=0)
