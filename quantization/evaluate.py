"""What the report times: prefill and decode speed, through Engine.generate (the path the editor
uses), so a kernel that drifts shows up here.

Its quality figures come from codeassist.evaluation: held-out perplexity (evaluation.loss) and
line exact match through the editor's own pipeline (evaluation.exact, the gate's scorer), each
on the variant's model file as users load it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from codeassist.model.engine import Engine, GenerationRequest, StopRules


@dataclass(frozen=True)
class Speed:
    prefill_ms: float  # best of the rounds, for a prompt of `prompt_tokens` with nothing cached
    decode_tps: float  # best of the rounds: tokens/s after the first token, batch 1
    prompt_tokens: int
    # the same on the process's CPU clock: what an idle core would give (exact with one thread;
    # with more, CPU time adds up over threads and these understate the speed)
    prefill_cpu_ms: float = 0.0
    decode_cpu_tps: float = 0.0


def _prompts(text_ids: Sequence[int], n: int, length: int) -> list[tuple[int, ...]]:
    """n distinct prompts whose first tokens differ, so no cached prefix is reused between them."""
    step = max(1, (len(text_ids) - length) // (n + 1))
    prompts: list[tuple[int, ...]] = []
    for i in range(n):
        p = tuple(text_ids[i * step:i * step + length])
        if prompts and p[0] == prompts[-1][0]:
            p = ((p[0] + 1) % 50000, *p[1:])
        prompts.append(p)
    return prompts


def measure_speed(engines: Sequence[Engine], text_ids: Sequence[int], prompt_tokens: int = 512,
                  decode_tokens: int = 64, rounds: int = 3) -> list[Speed]:
    """Prefill and decode timings through Engine.generate (the path the editor uses).

    The engines take turns, round after round, and each keeps its best round: on a shared CPU
    the slow outliers are other people's work, and taking turns exposes all engines to it alike.
    """
    block = min(e.config.block_size for e in engines)
    prompt_tokens = min(prompt_tokens, block - decode_tokens - 1)
    prompts = _prompts(text_ids, rounds + 1, prompt_tokens)
    wall: list[list[tuple[float, float]]] = [[] for _ in engines]  # (prefill ms, decode tok/s)
    cpu: list[list[tuple[float, float]]] = [[] for _ in engines]
    for r, p in enumerate(prompts):
        for i, engine in enumerate(engines):
            c0 = time.process_time()
            first = engine.generate(GenerationRequest(prompt=p, stop=StopRules(max_new_tokens=1)))
            c1 = time.process_time()
            # the decode request reuses 15 cached tokens: one token of prefill, then decode steps
            dec = engine.generate(GenerationRequest(prompt=p[:16], stop=StopRules(
                max_new_tokens=decode_tokens, stop_on_eos=False)))
            c2 = time.process_time()
            if r == 0 or len(dec.tokens) < 2:  # round 0 packs kernels and allocates caches
                continue
            decode_s = (dec.total_ms - dec.first_token_ms) / 1e3
            wall[i].append((first.prefill_ms, (len(dec.tokens) - 1) / max(1e-9, decode_s)))
            cpu[i].append(((c1 - c0) * 1e3, len(dec.tokens) / max(1e-9, c2 - c1)))
    return [Speed(prefill_ms=min(x[0] for x in w), decode_tps=max(x[1] for x in w), prompt_tokens=len(prompts[0]),
                  prefill_cpu_ms=min(x[0] for x in c), decode_cpu_tps=max(x[1] for x in c))
            for w, c in zip(wall, cpu, strict=True)]
