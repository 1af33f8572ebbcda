"""What the report measures: held-out perplexity, line-completion exact match, prefill and decode speed.

Every measurement runs the model as it serves: through the loaded file and the Engine (speed and
exact match) or the same modules (perplexity), so a kernel that drifts shows up here.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from codeassist.model.causal_lm import CausalLM
from codeassist.model.completion import complete
from codeassist.model.engine import Engine, GenerationRequest, StopRules
from codeassist.training.shards import Document

PREFIX_CHARS = 1200  # context before the cursor for exact match (keeps prefill cost bounded)
SUFFIX_CHARS = 400


@torch.inference_mode()
def perplexity(model: CausalLM, tokens: Sequence[int], seq_len: int) -> float:
    """exp(mean next-token loss) over non-overlapping windows of `seq_len` + 1 tokens."""
    seq_len = min(seq_len, model.config.block_size)
    data = torch.tensor(list(tokens), dtype=torch.long)
    total, count = 0.0, 0
    for start in range(0, len(data) - 1, seq_len):
        window = data[start:start + seq_len + 1]
        if len(window) < 2:
            break
        x, y = window[:-1].unsqueeze(0), window[1:]
        logits = model(x)[0].float()  # (T, vocab)
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        count += len(y)
    return math.exp(total / max(1, count))


@dataclass(frozen=True)
class LineCase:
    prefix: str  # text before the cursor, which sits inside a line
    suffix: str  # text after that line
    target: str  # the rest of the line: what an exact completion inserts


def line_cases(docs: Sequence[Document], n: int, seed: int = 0) -> list[LineCase]:
    """Cursor positions inside code lines of held-out files, reproducible by seed."""
    rng = random.Random(seed)
    candidates: list[tuple[int, int]] = []  # (doc, line number)
    lines_of = [d.text.split("\n") for d in docs]
    for di, lines in enumerate(lines_of):
        for li, line in enumerate(lines):
            body = line.strip()
            if li >= 3 and len(body) >= 12 and not body.startswith("#"):
                candidates.append((di, li))
    cases: list[LineCase] = []
    for di, li in rng.sample(candidates, min(n, len(candidates))):
        lines = lines_of[di]
        line = lines[li]
        indent = len(line) - len(line.lstrip())
        cut = indent + rng.randrange(len(line.strip()) // 3, 2 * len(line.strip()) // 3)
        before = "\n".join(lines[:li]) + "\n" + line[:cut]
        after = "\n" + "\n".join(lines[li + 1:])
        cases.append(LineCase(prefix=before[-PREFIX_CHARS:], suffix=after[:SUFFIX_CHARS],
                              target=line[cut:].rstrip()))
    return cases


def exact_match(engine: Engine, cases: Sequence[LineCase], max_new_tokens: int = 32) -> float:
    """Share of cases whose greedy completion, up to the end of the line, is the original text."""
    hits = 0
    for case in cases:
        text, _ = complete(engine, case.prefix, case.suffix, max_new_tokens=max_new_tokens,
                           temperature=0.0, stop=("\n",))
        hits += text.rstrip() == case.target
    return hits / max(1, len(cases))


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
