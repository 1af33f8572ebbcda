"""Training throughput of our loop against a plain nanoGPT-style loop, and MFU, in one run.

    .venv/bin/python benchmarks/bench_train.py [--preset default] [--batch 4] [--seq 1024]
                                               [--steps 5] [--warmup 2] [--threads 2]

- ours: `training.loop.train` as `codeassist train` runs it (fp32 on CPU, gradient accumulation,
  clipping, the step-seeded batches), and the same with bf16 autocast; tokens/s over the steps
  after warm-up, timed by the loop's own per-step clock (checkpoints and evaluation switched off).
  What makes it faster: the output head's cross-entropy is computed chunk by chunk with its
  gradients, never materialising the 4 x 1024 x 50,304 logits (model/fused_ce.py; log_softmax
  forward and backward and the zero-filled NLL gradient were a sixth of a step), and AdamW is
  the fused kernel, which PyTorch also has for CPUs;
- peer: nanoGPT's train.py loop on the same model, data and batch: AdamW (nanoGPT asks for the
  fused kernel only on CUDA), clip, no autocast on CPU (nanoGPT enables it only on CUDA), the same
  batch sampling, the logits and F.cross_entropy;
- MFU: achieved model FLOP/s (nanoGPT's estimate, 6N + 12·L·T·C per token, N counting the tied
  head once) against the fastest matmul this CPU ran (fp32 and bf16 peaks measured here, each
  best of several 1024³..2048³ products).

The machine is shared: read the ratio, measured in the same run, rather than absolute numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codeassist.model.config import ModelConfig, get_preset
from codeassist.model.gpt import GPT
from codeassist.training.loop import TrainConfig, batch_generator, build_model, get_batch, train


def matmul_peak(dtype: torch.dtype, seconds: float = 1.5) -> float:
    """Best FLOP/s of square matmuls in `dtype`."""
    best = 0.0
    for n in (1024, 1536, 2048):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        t_end = time.perf_counter() + seconds / 3
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def flops_per_token(config: ModelConfig, seq: int) -> float:
    n = sum(p.numel() for p in build_model(config, 0).parameters()) - config.block_size * config.n_embd
    return 6 * n + 12 * config.n_layer * config.n_embd * seq


def bench_ours(config: ModelConfig, data: np.ndarray, batch: int, seq: int, warmup: int, steps: int,
               bf16: bool) -> float:
    cfg = TrainConfig(batch_size=batch, seq_len=seq, max_iters=warmup + steps, warmup_iters=1, eval_interval=10**9,
                      ckpt_interval=10**9, autocast_bf16=bf16)
    times: list[float] = []

    def progress(p: dict[str, Any]) -> None:
        if p["step"] > warmup:
            times.append(batch * seq / p["tok_s"])

    with tempfile.TemporaryDirectory() as tmp:
        train(build_model(config, 0), data, None, cfg, Path(tmp), torch.device("cpu"), on_progress=progress)
    return batch * seq * len(times) / sum(times)


def bench_nanogpt(config: ModelConfig, data: np.ndarray, batch: int, seq: int, warmup: int, steps: int) -> float:
    """nanoGPT train.py's inner loop, as it runs on a CPU."""
    model: GPT = build_model(config, 0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    elapsed = 0.0
    for it in range(warmup + steps):
        t0 = time.monotonic()
        x, y = get_batch(data, batch, seq, batch_generator(0, it, 0))
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        if it >= warmup:
            elapsed += time.monotonic() - t0
    return batch * seq * steps / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--batch", type=int, default=4, help="sequences per step (train_default uses 4)")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each counts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = get_preset(args.preset)
    seq = min(args.seq, config.block_size)
    data = np.random.default_rng(0).integers(0, 50257, 2_000_000).astype(np.uint16)
    print(f"{args.preset}: {config.n_layer} layers x {config.n_embd}, batch {args.batch} x {seq} tokens, "
          f"{args.threads} threads, {args.steps} timed steps after {args.warmup}")
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak on this CPU: fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s")
    fpt = flops_per_token(config, seq)
    rows = []
    # interleaved, best of two each, so that load changes on the shared machine hit both
    ours = ours16 = peer = 0.0
    for _ in range(args.rounds):
        ours = max(ours, bench_ours(config, data, args.batch, seq, args.warmup, args.steps, bf16=False))
        peer = max(peer, bench_nanogpt(config, data, args.batch, seq, args.warmup, args.steps))
        ours16 = max(ours16, bench_ours(config, data, args.batch, seq, args.warmup, args.steps, bf16=True))
    for name, tok_s, peak in (("ours fp32 (CPU default)", ours, peak32), ("ours bf16 autocast", ours16, peak16),
                              ("nanoGPT loop (fp32)", peer, peak32)):
        achieved = tok_s * fpt
        rows.append(f"{name:22} {tok_s:9,.0f} tok/s  {achieved / 1e9:6.1f} GFLOP/s  "
                    f"MFU {100 * achieved / peak:5.1f}% of its dtype's peak, "
                    f"{100 * achieved / max(peak16, peak32):5.1f}% of the best peak")
    print("\n".join(rows))
    print(f"speed-up over the nanoGPT loop: ours fp32 {ours / peer:.2f}x, ours bf16 {ours16 / peer:.2f}x")


if __name__ == "__main__":
    main()
