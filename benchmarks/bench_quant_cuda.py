"""The CUDA quantized paths, as one script for a machine with a GPU (none was available to write it).

    .venv/bin/python benchmarks/bench_quant_cuda.py [--shape gpt2] [--tokens 128]

1. Checks each CUDA kernel against its dequantized reference (relative error printed; exits 1 if
   any is off by more than 2%): int8 (Triton, and torch._weight_int8pack_mm) and int4 (tinygemm).
2. Decodes greedily at batch 1 through the Engine on the GPT-2 small shape with random weights and
   prints tokens/s for bf16, int8 and int4, with ratios against bf16 measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.nn import functional as F

from codeassist.model import quantized as q
from codeassist.model.config import get_preset
from codeassist.model.engine import Engine, GenerationRequest, StopRules
from codeassist.model.gpt import GPT
from codeassist.quantization.quantize import quantize
from codeassist.quantization.rtn import quantize_int4, quantize_int8


def check_kernels(dev: torch.device) -> bool:
    ok = True
    torch.manual_seed(0)
    for M, N, K in [(1, 2304, 768), (7, 3072, 768), (512, 768, 3072), (1, 50304, 768)]:
        w = torch.randn(N, K) * 0.02
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        qw, s = quantize_int8(w)
        ref8 = F.linear(x.float(), (qw.float() * s[:, None]).to(dev))
        out = {"int8 triton": None, "int8 torch": None}
        if q.quantized_triton.is_available():
            out["int8 triton"] = q.quantized_triton.int8_mm(x, qw.to(dev), s.to(dev))
        out["int8 torch"] = torch._weight_int8pack_mm(x, qw.to(dev), s.to(dev, torch.bfloat16))
        lin4 = q.Int4Linear(K, N, bias=False, group_size=64)
        lin4.qweight, lin4.scales, lin4.zeros = quantize_int4(w, 64)
        lin4 = lin4.to(dev)
        ref4 = F.linear(x.float(), lin4.dequantize())
        results = {**out, "int4 tinygemm": lin4(x)}
        for name, y in results.items():
            if y is None:
                print(f"{name:14} M={M:4} N={N:5} K={K:5}: unavailable")
                continue
            ref = ref4 if name.startswith("int4") else ref8
            err = float((y.float() - ref).norm() / ref.norm())
            ok &= err < 0.02
            print(f"{name:14} M={M:4} N={N:5} K={K:5}: relative error {err:.4f}")
    return ok


def decode_speed(model: GPT, dev: torch.device, tokens: int) -> float:
    engine = Engine(model, dev, torch.bfloat16)
    req = GenerationRequest(prompt=tuple(range(1000, 1016)), stop=StopRules(max_new_tokens=tokens, stop_on_eos=False))
    engine.generate(req)  # warm-up: packs kernels, compiles Triton
    best = 0.0
    for i in range(3):
        req = GenerationRequest(prompt=tuple(range(2000 + i, 2016 + i)),
                                stop=StopRules(max_new_tokens=tokens, stop_on_eos=False))
        torch.cuda.synchronize()
        r = engine.generate(req)
        torch.cuda.synchronize()
        best = max(best, (len(r.tokens) - 1) / ((r.total_ms - r.first_token_ms) / 1e3))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="gpt2")
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton:", q.quantized_triton.is_available())
    ok = check_kernels(dev)
    model = GPT(get_preset(args.shape))
    model.init_weights(0)
    model.eval()
    variants = {"bf16": model, "int8": quantize(model, "int8").build(model),
                "int4-g64": quantize(model, "int4", 64).build(model)}
    speeds = {}
    for name, m in variants.items():
        t0 = time.perf_counter()
        speeds[name] = decode_speed(m, dev, args.tokens)
        print(f"{args.shape} {name:9} decode {speeds[name]:8.1f} tok/s  x bf16 {speeds[name] / speeds['bf16']:.2f}"
              f"  ({time.perf_counter() - t0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
