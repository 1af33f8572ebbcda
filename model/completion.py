"""One completion at a cursor: prompt layout, token budget, token healing, and the cleaned text.

The language server builds richer prompts (other open files, modes, post-processing); this is
the plain path shared by `codeassist complete` and the team server's seed API.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from codeassist.model.engine import Engine, GenerationRequest, GenerationResult, StopRules
from codeassist.model.sampling import SamplingParams
from codeassist.model.tokenization import Tokenizer, resolve

# Python statements that start a new top-level unit end a suggestion
DEFAULT_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\n\n\n")


@dataclass(frozen=True)
class Prompt:
    ids: tuple[int, ...]
    forced_prefix: bytes  # the healed text, which the output must start with


def build_prompt(prefix: str, suffix: str, max_prompt_tokens: int, heal: bool = True,
                 tokenizer: Tokenizer | None = None) -> Prompt:
    """Fill-in-the-middle in the tokenizer's template (ours: SPM) when there is code after the
    cursor and the model has a template, else plain left-to-right (BOS or end of text first).

    The budget keeps the text nearest the cursor: the end of the prefix and the start of the
    suffix (the suffix gets at most a quarter). With `heal`, the last prefix token is removed
    and its bytes become the forced start of the output (token healing).
    """
    tk = resolve(tokenizer)
    prefix_ids = tk.encode(prefix)
    forced = b""
    if heal and prefix_ids and _is_utf8(tk.token_bytes(prefix_ids[-1])):
        forced = tk.token_bytes(prefix_ids[-1])
        prefix_ids = prefix_ids[:-1]
    if suffix.strip() and tk.fim:
        suffix_ids = tk.encode(suffix)[: max(0, max_prompt_tokens // 4)]
        markers = len(tk.fim_ids([], []))
        room = max(1, max_prompt_tokens - len(suffix_ids) - markers)
        ids = tk.fim_ids(prefix_ids[-room:] if len(prefix_ids) > room else prefix_ids, suffix_ids)
    else:
        lead = tk.lead_ids()
        keep = max_prompt_tokens - len(lead)
        ids = [*lead, *prefix_ids[-keep:]] if keep > 0 else lead
    return Prompt(ids=tuple(ids), forced_prefix=forced)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def complete(engine: Engine, prefix: str, suffix: str = "", max_new_tokens: int = 64,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             stop: tuple[str, ...] = DEFAULT_STOPS, time_budget_s: float | None = None,
             seed: int | None = None, cancel: threading.Event | None = None) -> tuple[str, GenerationResult]:
    """(the text to insert at the cursor, the engine's result)."""
    context = engine.context_tokens
    budget = context - max_new_tokens
    if budget < 8:
        max_new_tokens = max(1, context // 2)
        budget = context - max_new_tokens
    prompt = build_prompt(prefix, suffix, budget, tokenizer=engine.tokenizer)
    stops = tuple(stop)
    if suffix.strip():
        first = suffix.strip().splitlines()[0]
        stops += (first,) if len(first) >= 8 else ()  # the model has reached the suffix
    req = GenerationRequest(prompt=prompt.ids, forced_prefix=prompt.forced_prefix, seed=seed,
                            sampling=SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p),
                            stop=StopRules(max_new_tokens=max_new_tokens, stop_strings=stops,
                                           time_budget_s=time_budget_s))
    result = engine.generate(req, cancel)
    text = result.text
    forced = prompt.forced_prefix.decode("utf-8", errors="ignore")
    text = text[len(forced):] if text.startswith(forced) else ""
    return text, result
