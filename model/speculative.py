"""Speculative decoding: draft several tokens cheaply, verify them in one forward pass.

Two drafters share one verifier:

- prompt lookup: the last n tokens are looked up among the earlier ones (the prompt and what has
  been generated); the tokens that followed their latest occurrence are the draft. Code repeats
  itself (names, argument lists, whole lines), so this often guesses right, and drafting is free.
- a draft model: a smaller model with the same tokenizer proposes k tokens one by one.

The target model then scores [last token, d1..dk] in one pass, which costs little more than one
token when decoding is bound by reading the weights. Verification keeps the output distribution:

- greedy: drafts are kept while they equal the target's argmax; the first mismatch is replaced
  by the argmax, so the output is the plain greedy output (up to floating-point ties);
- sampling: draft i is kept with probability min(1, p_i(d) / q_i(d)); at the first rejection the
  token is drawn from norm(max(p_i - q_i, 0)) instead (Leviathan et al. 2023, Chen et al. 2023).
  A lookup draft is deterministic, so q_i is a point mass on d and the residual is p_i without d.
  If every draft is kept, one more token is drawn from p_{k+1}.

Speculation trades compute for latency: under a busy batch each verify pass costs the others,
so `should_speculate` turns it off when more than `max_batch` sequences decode together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from codeassist.model.engine_steps import prefill, prepare
from codeassist.model.sampling import SamplingParams, filtered_probs

if TYPE_CHECKING:
    from codeassist.model.causal_lm import CausalLM

METHODS = ("none", "prompt_lookup", "draft")


@dataclass(frozen=True)
class SpeculationParams:
    method: str = "none"  # none | prompt_lookup | draft (needs Engine(draft_model=...))
    num_draft: int = 8  # the most tokens drafted per verify pass (k)
    ngram_max: int = 3  # prompt lookup: the longest suffix looked up ...
    ngram_min: int = 1  # ... down to this one
    max_batch: int = 1  # speculate only while at most this many sequences decode together

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown speculation method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.num_draft < 1:
            raise ValueError("num_draft must be >= 1")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError("prompt lookup needs 1 <= ngram_min <= ngram_max")

    @property
    def enabled(self) -> bool:
        return self.method != "none"


def should_speculate(params: SpeculationParams, active_sequences: int) -> bool:
    """Speculation pays for one sequence; a busy batch already uses the compute it would need."""
    return params.enabled and active_sequences <= params.max_batch


# -- drafting ------------------------------------------------------------------------------------

class NgramIndex:
    """Latest occurrence of every n-gram (n in [ngram_min, ngram_max]) of a growing token list.

    `extend` is O(new tokens × n) and `draft` O(n), so lookup costs nothing next to a forward pass.
    """

    def __init__(self, ngram_min: int = 1, ngram_max: int = 3) -> None:
        self.ngram_min, self.ngram_max = ngram_min, ngram_max
        self.tokens: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}  # n-gram → index of the token after its latest end

    def extend(self, tokens: list[int]) -> None:
        for t in tokens:
            L = len(self.tokens)  # t will sit at index L: the n-grams ending at L-1 are followed by it
            for n in range(self.ngram_min, min(self.ngram_max, L) + 1):
                self._next[tuple(self.tokens[L - n:L])] = L
            self.tokens.append(t)

    def draft(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest matching suffix."""
        L = len(self.tokens)
        for n in range(min(self.ngram_max, L), self.ngram_min - 1, -1):
            start = self._next.get(tuple(self.tokens[L - n:]))
            if start is not None:
                return self.tokens[start:start + k]
        return []


class DraftModel:
    """A small model that proposes tokens, with its own KV cache and prefix reuse."""

    def __init__(self, model: CausalLM, device: torch.device, dtype: torch.dtype,
                 context: int | None = None) -> None:
        self.model = prepare(model, device, dtype)
        self.device = device
        # the engine's context (capped: a 32k-position draft model need not allocate 32k slots)
        self.block_size = min(model.config.block_size, context or model.config.block_size)
        self._cached: list[int] = []

    def _feed(self, ids: list[int], start: int) -> torch.Tensor:
        if self.model.kv_batch_size != 1:
            self.model.setup_kv_cache(1, self.block_size)
        return prefill(self.model, ids, start, self.device)

    def propose(self, tokens: list[int], k: int, sampling: SamplingParams,
                gen: torch.Generator | None) -> tuple[list[int], torch.Tensor | None]:
        """k drafted tokens after `tokens`, and for sampling their distributions q (k, vocab)."""
        k = min(k, self.block_size - len(tokens))
        if k < 1:
            return [], None
        if self.model.kv_batch_size != 1:
            self._cached = []
        reuse = min(common_prefix(self._cached, tokens), len(tokens) - 1)
        logits = self._feed(tokens[reuse:], reuse)
        self._cached = list(tokens)
        draft: list[int] = []
        qs: list[torch.Tensor] = []
        for i in range(k):
            if sampling.greedy:
                t = int(torch.argmax(logits))
            else:
                q = filtered_probs(logits, sampling)
                t = int(torch.multinomial(q, 1, generator=gen))
                qs.append(q)
            draft.append(t)
            if i < k - 1:
                logits = self._feed([t], len(self._cached))
                self._cached.append(t)
        return draft, (torch.stack(qs) if qs else None)


# -- verification --------------------------------------------------------------------------------

def verify_greedy(logits: torch.Tensor, draft: list[int]) -> tuple[int, int]:
    """(drafts kept, the token after them); logits (k+1, vocab) score positions after each input."""
    best = torch.argmax(logits, dim=-1).tolist()  # one host synchronisation per verify pass
    n = 0
    while n < len(draft) and draft[n] == best[n]:
        n += 1
    return n, int(best[n])


def verify_sampling(logits: torch.Tensor, draft: list[int], sampling: SamplingParams,
                    q: torch.Tensor | None, gen: torch.Generator | None) -> tuple[int, int]:
    """Rejection sampling: (drafts kept, the token after them), distributed as sampling from p.

    q (k, vocab) holds the draft distributions; None means the drafts were deterministic.
    """
    k = len(draft)
    p = filtered_probs(logits, sampling)  # (k+1, vocab)
    idx = torch.arange(k, device=p.device)
    d = torch.tensor(draft, device=p.device)
    p_d = p[idx, d]
    ratio = p_d if q is None else p_d / q[idx, d].clamp_min(1e-30)
    u = torch.rand(k, generator=gen, device=gen.device if gen is not None else p.device)
    keep = (u.to(ratio.device) < ratio).tolist()
    n = 0
    while n < k and keep[n]:
        n += 1
    if n == k:
        return n, int(torch.multinomial(p[k], 1, generator=gen))
    if q is None:
        residual = p[n].clone()
        residual[draft[n]] = 0.0
    else:
        residual = (p[n] - q[n]).clamp_min(0.0)
    if float(residual.sum()) <= 0.0:  # p == q up to rounding: any draw from p is exact
        residual = p[n]
    return n, int(torch.multinomial(residual, 1, generator=gen))


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share (what a KV cache holding a can keep for b)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Drafter:
    """One request's drafting: the source (lookup or a draft model) and an adaptive draft length.

    The length grows by 2 after a pass that kept every draft and shrinks by 1 after one that did
    not (the rule transformers uses for assisted generation), so text that does not repeat itself
    costs short verify passes. After `cooldown_after` passes in a row that kept nothing, drafting
    pauses for as many tokens as it has failed in a row (at most `max_cooldown`).
    """

    cooldown_after = 2
    max_cooldown = 16

    def __init__(self, params: SpeculationParams, prompt: list[int], draft_model: DraftModel | None) -> None:
        self.params = params
        self.k = params.num_draft
        self.steps = 0
        self._prompt = prompt
        self._model = draft_model if params.method == "draft" else None
        self._index: NgramIndex | None = None
        self._misses = 0
        self._pause = 0

    def propose(self, generated: list[int], k: int, sampling: SamplingParams,
                gen: torch.Generator | None) -> tuple[list[int], torch.Tensor | None]:
        """Up to k tokens to follow prompt + generated; q (k, vocab) for a sampled model draft."""
        if self._pause > 0:
            self._pause -= 1
            return [], None
        if self._model is not None:
            return self._model.propose(self._prompt + generated, k, sampling, gen)
        if self._index is None:
            self._index = NgramIndex(self.params.ngram_min, self.params.ngram_max)
            self._index.extend(self._prompt)
        self._index.extend(generated[len(self._index.tokens) - len(self._prompt):])
        return self._index.draft(k), None

    def update(self, drafted: int, kept: int) -> None:
        self.steps += 1
        if kept == drafted:
            self.k = min(self.params.num_draft, self.k + 2)
        else:
            self.k = max(1, self.k - 1)
        self._misses = self._misses + 1 if kept == 0 else 0
        if self._misses >= self.cooldown_after:
            self._pause = min(self.max_cooldown, self._misses)
