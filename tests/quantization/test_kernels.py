"""The quantized linear layers against nn.Linear and against their own dequantized weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

from codeassist.model import quant_layers as q
from codeassist.quantization.rtn import quantize_int4, quantize_int8


def _linear(n_in: int, n_out: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, n_out)
    nn.init.normal_(lin.weight, std=0.02)
    nn.init.normal_(lin.bias, std=0.01)
    return lin.eval()


def _int8(lin: nn.Linear) -> q.Int8Linear:
    m = q.Int8Linear(lin.in_features, lin.out_features, bias=True)
    m.qweight, m.scales = quantize_int8(lin.weight)
    m.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
    return m


def _int4(lin: nn.Linear, group_size: int) -> q.Int4Linear:
    m = q.Int4Linear(lin.in_features, lin.out_features, bias=True, group_size=group_size)
    m.qweight, m.scales, m.zeros = quantize_int4(lin.weight, group_size)
    m.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
    return m


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("shape", [(1, 256), (3, 7, 256)])
def test_int8_linear_matches_nn_linear(shape: tuple[int, ...]) -> None:
    lin = _linear(256, 192)
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = lin(x)
        out = _int8(lin)(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert _rel_err(out, ref) < 0.02  # int8 weights and dynamic 7-bit activations


def test_int8_keeps_the_activation_dtype() -> None:
    lin = _linear(128, 64)
    x = torch.randn(2, 128, dtype=torch.bfloat16)
    with torch.no_grad():
        out = _int8(lin)(x)
    assert out.dtype == torch.bfloat16
    assert _rel_err(out, lin(x.float())) < 0.03


def test_int8_repacks_after_new_weights_are_loaded() -> None:
    a, b = _int8(_linear(64, 64, seed=1)), _int8(_linear(64, 64, seed=2))
    x = torch.randn(1, 64)
    with torch.no_grad():
        before = a(x)
        a.load_state_dict(b.state_dict())
        torch.testing.assert_close(a(x), b(x))
    assert not torch.allclose(before, b(x))


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_kernel_matches_its_dequantized_weights(group_size: int) -> None:
    lin = _linear(256, 192)
    m = _int4(lin, group_size)
    x = torch.randn(5, 256)
    with torch.no_grad():
        out = m(x)
        ref = F.linear(x.bfloat16().float(), m.dequantize(), m.bias)  # the kernel takes bf16 activations
        assert _rel_err(out, ref) < 0.01
        assert _rel_err(out, lin(x)) < 0.15  # 4 bits: close to the float layer, not equal


def test_int4_without_a_kernel_falls_back_to_the_same_result() -> None:
    lin = _linear(64, 24)  # 24 outputs: not a multiple of 16, so the CPU kernel does not take it
    m = _int4(lin, 32)
    x = torch.randn(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), F.linear(x, m.dequantize(), m.bias))


def test_int4_pack_roundtrip_and_nibble_order() -> None:
    values = torch.randint(0, 16, (8, 64), dtype=torch.uint8)
    packed = q.pack_int4(values)
    assert packed.shape == (8, 32) and packed.dtype == torch.uint8
    assert int(packed[0, 0]) == int(values[0, 0]) * 16 + int(values[0, 1])  # even column high
    assert torch.equal(q.unpack_int4(packed), values)


def test_int8_cuda_entry_point_conventions_on_cpu() -> None:
    # the CUDA kernel torch._weight_int8pack_mm also has a CPU build: check our call's shapes/dtypes
    lin = _linear(128, 96)
    m = _int8(lin)
    x = torch.randn(4, 128, dtype=torch.bfloat16)
    out = q._int8_cuda(x, m.qweight, m.scales, m.bias)
    ref = F.linear(x.float(), m.dequantize(), m.bias)
    assert out.shape == (4, 96)
    assert _rel_err(out, ref) < 0.02


def test_embedding_rows_are_the_dequantized_table() -> None:
    table = torch.randn(320, 64) * 0.02
    emb8 = q.Int8Embedding(320, 64)
    emb8.qweight, emb8.scales = quantize_int8(table)
    emb4 = q.Int4Embedding(320, 64, group_size=32)
    emb4.qweight, emb4.scales, emb4.zeros = quantize_int4(table, 32)
    idx = torch.tensor([[0, 5, 319], [7, 7, 1]])
    for emb in (emb8, emb4):
        rows = emb(idx)
        assert rows.shape == (2, 3, 64) and rows.dtype == torch.float32
        torch.testing.assert_close(rows, emb.dequantize()[idx])


@pytest.mark.gpu
def test_int8_triton_kernel_in_the_interpreter() -> None:
    """The CUDA kernel, run by Triton's CPU interpreter (only where Triton is installed).

    A GPU check: Triton comes with the CUDA builds of torch, not with the CPU wheel that
    `make test` installs, so it runs on a machine with a GPU (`pytest -m gpu`).
    A subprocess: Triton reads TRITON_INTERPRET when it is imported.
    """
    pytest.importorskip("triton", reason="GPU check: Triton comes with CUDA builds of torch; run it on a "
                                         "machine with a GPU (pytest -m gpu)")
    script = textwrap.dedent("""
        import torch
        from torch.nn import functional as F
        from codeassist.model.quantized_triton import int8_mm
        from codeassist.quantization.rtn import quantize_int8
        torch.manual_seed(0)
        for M, N, K, dtype in [(1, 96, 128, torch.float32), (17, 200, 192, torch.float32),
                               (3, 64, 128, torch.bfloat16)]:
            w, b = torch.randn(N, K) * 0.02, torch.randn(N) * 0.01
            qw, scales = quantize_int8(w)
            x = torch.randn(M, K).to(dtype)
            out = int8_mm(x, qw, scales, b)
            ref = F.linear(x.float(), qw.float() * scales[:, None], b)
            assert out.dtype == dtype and out.shape == (M, N)
            err = float((out.float() - ref).norm() / ref.norm())
            assert err < 0.01, (M, N, K, dtype, err)
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TRITON_INTERPRET": "1"})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_int8_without_its_cpu_kernel_falls_back_to_dequantized_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_args: object) -> None:
        raise RuntimeError("no such engine")

    monkeypatch.setattr(q, "_int8_pack_cpu", unavailable)
    lin = _linear(64, 32)
    m = _int8(lin)
    x = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), F.linear(x, m.dequantize(), m.bias))
        torch.testing.assert_close(m(x), F.linear(x, m.dequantize(), m.bias))  # cached the second time
