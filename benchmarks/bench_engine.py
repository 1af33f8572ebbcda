"""Engine speed against its peers, measured in one run on the same random weights.

    .venv/bin/python benchmarks/bench_engine.py [--shapes default,gpt2] [--prompt 512] [--new 64]

For each shape, batch 1, a `--prompt`-token prompt and `--new` new tokens, it prints:
- our prefill ms and decode tokens/s (greedy, KV cache);
- the same against a naive generate that recomputes the whole sequence for every token;
- the same against transformers' GPT2LMHeadModel.generate (greedy, its own KV cache);
- a request that extends the previous prompt by 8 tokens: time to its first new token (prefix reuse),
  against the same request cold.
The machine is shared and noisy: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from codeassist.model.config import get_preset
from codeassist.model.engine import Engine, GenerationRequest, StopRules
from codeassist.model.gpt import GPT
from codeassist.model.hf_gpt2 import load_hf_gpt2
from codeassist.model.tokenizer import N_GPT2


def hf_pair(shape: str, seed: int = 0) -> tuple[GPT, torch.nn.Module]:
    """A random transformers GPT-2 and our GPT loaded from its saved folder: the same weights."""
    import transformers

    cfg = get_preset(shape)
    hcfg = transformers.GPT2Config(vocab_size=N_GPT2, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                                   n_layer=cfg.n_layer, n_head=cfg.n_head)
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(hcfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_hf_gpt2(Path(d))
    return ours, hf


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_ours(engine: Engine, prompt: list[int], new: int) -> tuple[float, float]:
    """(prefill ms, decode tokens/s), cold cache each time."""
    req = GenerationRequest(prompt=tuple(prompt), stop=StopRules(max_new_tokens=new, stop_on_eos=False))
    prefills, decodes = [], []
    for _ in range(3):
        engine._cached = []  # force a cold prefill
        res = engine.generate(req)
        prefills.append(res.prefill_ms)
        decodes.append((len(res.tokens) - 1) / ((res.total_ms - res.first_token_ms) / 1e3))
    return min(prefills), max(decodes)


@torch.inference_mode()
def bench_naive(model: GPT, prompt: list[int], new: int) -> float:
    """Decode tokens/s when every token recomputes the whole sequence (no cache)."""
    ids = torch.tensor([prompt])
    model(ids)  # warm-up
    t0 = time.perf_counter()
    for _ in range(new):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return new / (time.perf_counter() - t0)


@torch.inference_mode()
def bench_hf(hf: torch.nn.Module, prompt: list[int], new: int) -> tuple[float, float]:
    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)

    def prefill() -> None:
        hf(ids, attention_mask=mask)

    def gen(n: int) -> None:
        hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,  # type: ignore[operator]
                    pad_token_id=0)

    gen(2)
    prefill_s = best_of(3, prefill)
    total = best_of(2, lambda: gen(new))
    return prefill_s * 1e3, (new - 1) / max(1e-9, total - prefill_s)


def bench_extend(engine: Engine, prompt: list[int], extra: int = 8) -> tuple[float, float]:
    """(warm, cold) ms to the first new token for a prompt extended by `extra` tokens."""
    base, ext = prompt[:-extra], prompt
    one = StopRules(max_new_tokens=1, stop_on_eos=False)
    warm, cold = [], []
    for _ in range(5):
        engine._cached = []
        engine.generate(GenerationRequest(prompt=tuple(base), stop=one))
        warm.append(engine.generate(GenerationRequest(prompt=tuple(ext), stop=one)).first_token_ms)
        engine._cached = []
        cold.append(engine.generate(GenerationRequest(prompt=tuple(ext), stop=one)).first_token_ms)
    return statistics.median(warm), statistics.median(cold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="default,gpt2")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--naive-new", type=int, default=16, help="tokens for the (slow) no-cache peer")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, prompt {args.prompt}, new {args.new}")
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, N_GPT2 - 1, (args.prompt,), generator=gen).tolist()
    header = (f"{'shape':8} {'params':>7} | {'prefill ms':>10} {'decode tok/s':>12} | {'naive tok/s':>11} "
              f"{'x naive':>7} | {'HF prefill':>10} {'HF tok/s':>8} {'x HF':>5} | {'+8 tok first ms':>15} "
              f"{'cold ms':>7}")
    print(header)
    print("-" * len(header))
    for shape in args.shapes.split(","):
        ours, hf = hf_pair(shape)
        engine = Engine(ours, torch.device("cpu"), torch.float32)
        pre, dec = bench_ours(engine, prompt, args.new)
        naive = bench_naive(engine.model, prompt, args.naive_new)
        hf_pre, hf_dec = bench_hf(hf, prompt, args.new)
        warm, cold = bench_extend(engine, prompt)
        params = sum(p.numel() for p in ours.parameters()) / 1e6
        print(f"{shape:8} {params:6.1f}M | {pre:10.1f} {dec:12.1f} | {naive:11.1f} {dec / naive:6.1f}x | "
              f"{hf_pre:10.1f} {hf_dec:8.1f} {dec / hf_dec:4.2f}x | {warm:15.1f} {cold:7.1f}")
        del engine, ours, hf


if __name__ == "__main__":
    main()
