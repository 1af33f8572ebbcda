"""`--precision auto`: measure whether bf16 autocast trains faster than fp32 on this machine, once.

CPUs disagree: bf16 autocast trained 1.45x faster than fp32 on one of our AMD EPYCs and 0.54x on
an Intel Xeon without AMX (shared/notes/platform-facts.md), so the choice is measured, not assumed.
The probe times a training step's matmuls at the run's shape (a block's four linear layers and the
output head, forward and backward) in both precisions, interleaved, best of a few, and keeps the
answer in the cache keyed by the CPU, torch's version and the shape, so a run pays it once
(a second or two). CUDA takes bf16 where the GPU supports it.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
MIN_SPEEDUP = 1.1  # bf16 must win clearly: it also costs a little accuracy


@dataclass(frozen=True)
class ProbeShape:
    n_embd: int
    vocab_size: int
    rows: int = 512  # tokens in the probe's micro-batch

    def key(self) -> str:
        return f"{self.n_embd}x{self.vocab_size}x{self.rows}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _step(x: torch.Tensor, w: list[torch.Tensor], bf16: bool) -> None:
    """One block's linear layers and the head, forward and backward, at their real shapes."""
    qkv, proj, fc, fc_proj, head = w
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        a = torch.nn.functional.linear(x, qkv)[:, : x.size(1)]
        h = x + torch.nn.functional.linear(a, proj)
        h = h + torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(h, fc)), fc_proj)
        logits = torch.nn.functional.linear(h, head)
    logits.float().logsumexp(dim=-1).mean().backward()  # type: ignore[no-untyped-call]


def probe_speedup(shape: ProbeShape, repeats: int = 3) -> float:
    """fp32 time / bf16 time for a step's matmuls at `shape` on this CPU (above 1: bf16 is faster).

    The head is cut to 8,192 rows and the batch to 128 tokens (the ratio, not the time, is what
    counts), and a bf16 step that takes over twice the fp32 one ends the probe at once: on a CPU
    without bf16 instructions it is tens of times slower (measured 38x here: 2.7 s against 107 s
    at the full 50,304-row head), and waiting for that to repeat would be the probe's whole cost.
    """
    gen = torch.Generator().manual_seed(0)
    c, vocab, rows = shape.n_embd, min(shape.vocab_size, 8192), min(shape.rows, 128)
    dims = [(3 * c, c), (c, c), (4 * c, c), (c, 4 * c), (vocab, c)]
    weights = [(torch.randn(o, i, generator=gen) * 0.02).requires_grad_() for o, i in dims]
    x = torch.randn(rows, c, generator=gen)

    def timed(bf16: bool) -> float:
        t0 = time.perf_counter()
        _step(x, weights, bf16)
        return time.perf_counter() - t0

    timed(False)  # warm up
    best = {False: timed(False), True: timed(True)}
    if best[True] > 2 * best[False]:
        return best[False] / best[True]
    for _ in range(repeats):
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], timed(bf16))
    return best[False] / best[True]


Probe = Callable[[ProbeShape], float]


def cache_file() -> Path:
    from codeassist.model.store import cache_dir

    return cache_dir() / "precision-probe.json"


def use_bf16(precision: str, device: torch.device, shape: ProbeShape, probe: Probe = probe_speedup,
             cache: Path | None = None) -> bool:
    """Whether to train with bf16 autocast: `fp32` and `bf16` are obeyed; `auto` measures once."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32 or bf16")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    cache = cache or cache_file()
    key = f"{_cpu_name()}|torch {torch.__version__}|{shape.key()}"
    known: dict[str, float] = {}
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = round(probe(shape), 3)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
            tmp.replace(cache)
        except OSError as exc:  # a read-only cache only costs the probe next time
            log.debug("precision probe not cached: %s", exc)
    speedup = known[key]
    log.info("precision auto: bf16 autocast is %.2fx fp32 on this CPU at this shape; training in %s",
             speedup, "bf16" if speedup >= MIN_SPEEDUP else "fp32")
    return speedup >= MIN_SPEEDUP
