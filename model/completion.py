"""One completion at a cursor with the in-process engine, for `codeassist complete` (and tests).

The prompt is the one builder's (model/prompting.py) and the stops the one policy's (model/stop_policy.py,
a Python block), so the same cursor gives the same prompt as in the editor and on the team server.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from codeassist.model.engine import Engine, GenerationRequest, GenerationResult
from codeassist.model.prompting import Prompt, build_prompt, strip_forced
from codeassist.model.sampling import SamplingParams
from codeassist.model.stop_policy import PLAIN_LANGUAGE, stop_policy

# remote/generation.py imports the builder from here; it is model/prompting.py's, not a second one
__all__ = ["Prompt", "build_prompt", "complete"]


def complete(engine: Engine, prefix: str, suffix: str = "", max_new_tokens: int = 64,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             stop: tuple[str, ...] | None = None, time_budget_s: float | None = None,
             seed: int | None = None, cancel: threading.Event | None = None) -> tuple[str, GenerationResult]:
    """(the text to insert at the cursor, the engine's result).

    `stop`: None is the stop policy's block stops; a tuple replaces them (the next line of code
    after the cursor still stops)."""
    context = engine.context_tokens
    budget = context - max_new_tokens
    if budget < 8:
        max_new_tokens = max(1, context // 2)
        budget = context - max_new_tokens
    prompt = build_prompt(prefix, suffix, budget, tokenizer=engine.tokenizer)
    rules = stop_policy(suffix, PLAIN_LANGUAGE, line=False)
    if stop is not None:
        rules = replace(rules, stop_strings=stop)
    req = GenerationRequest(prompt=prompt.ids, forced_prefix=prompt.forced_prefix, seed=seed,
                            sampling=SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p),
                            stop=replace(rules, max_new_tokens=max_new_tokens, time_budget_s=time_budget_s))
    result = engine.generate(req, cancel)
    return strip_forced(result.text, prompt.forced), result
