"""Line exact match through the editor's own pipeline, in-process: the one per-line scorer.

Each case is asked of `lsp.pipeline.Pipeline` with the local backend (the same context window,
prompt builder, token healing, stop rules and post-processing an editor gets), greedy, with no
suggestion cache (each case is a new document) and the invoked time budget. A hit is the
suggestion equal to the removed text, ignoring trailing whitespace. The gate, its paired verdict
and the quantization report score with it; `codeassist eval` drives the same pipeline through the
real server over stdio instead (harness.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeassist.evaluation.lines import LineSample

if TYPE_CHECKING:
    from codeassist.lsp.backends import LocalBackend
    from codeassist.lsp.pipeline import Completion
    from codeassist.lsp.settings import Settings

__all__ = ["exact_match", "line_hits", "load_backend", "pipeline_completions", "pipeline_hits",
           "scoring_settings"]

TIME_BUDGET_MS = 30000  # no time limit in effect: a busy CPU must not turn into a lower score


def scoring_settings() -> Settings:
    """Greedy, one line, no cache or debounce, and a budget no line reaches."""
    from codeassist.lsp.settings import Settings

    return Settings(multiline="never", cache=False, debounce_ms=0, temperature=0.0,
                    time_budget_ms=TIME_BUDGET_MS)


def exact_match(model_path: Path, samples: Sequence[LineSample], device: str = "cpu") -> float:
    """The share of `samples` the language server's pipeline completes exactly with this model."""
    hits = line_hits(model_path, samples, device)
    return sum(hits) / len(hits) if hits else math.nan


def load_backend(model: str, device: str = "cpu") -> LocalBackend:
    """The editor's local backend with `model` loaded (this process's thread count), or
    RuntimeError saying why it could not load."""
    import torch

    from codeassist.lsp.backends import LocalBackend

    backend = LocalBackend(model=model, device=device, threads=torch.get_num_threads())
    backend.start()
    if not backend.wait_ready(timeout=600):
        raise RuntimeError(f"the model {model} could not be loaded: {backend.status().reason}")
    return backend


def line_hits(model_path: Path, samples: Sequence[LineSample], device: str = "cpu") -> list[bool]:
    """Per line: does the pipeline with this model file (loaded as the editor loads it) complete
    it exactly? Raises RuntimeError when the model cannot be loaded."""
    if not samples:
        return []
    import torch

    threads = torch.get_num_threads()
    try:
        return asyncio.run(pipeline_hits(load_backend(str(model_path), device), scoring_settings(), samples))
    finally:
        torch.set_num_threads(threads)


async def pipeline_completions(backend: Any, settings: Settings, samples: Sequence[LineSample]
                               ) -> list[Completion]:
    """What the pipeline suggests for each case, on one open backend, which is closed at the end."""
    from codeassist.lsp.context import build_context
    from codeassist.lsp.pipeline import Pipeline

    pipe = Pipeline(backend, settings)
    out: list[Completion] = []
    try:
        for s in samples:
            ctx = build_context(f"file:///{s.path}", s.language, s.document, s.offset)
            out.append(await pipe.complete(ctx, invoked=True))  # the full time budget, not the typing one
    finally:
        await backend.aclose()
    return out


async def pipeline_hits(backend: Any, settings: Settings, samples: Sequence[LineSample]) -> list[bool]:
    """Each case's hit: the suggestion equals the removed text, trailing whitespace aside."""
    completions = await pipeline_completions(backend, settings, samples)
    return [c.text.rstrip() == s.expected.rstrip() for c, s in zip(completions, samples, strict=True)]
