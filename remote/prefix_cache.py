"""Prompt prefixes kept across requests: keys and values of recent prompts, bounded in bytes.

Editor traffic is one user typing: each request's window differs from that user's previous one
only in its last few tokens, so its prefill can start from the previous prompt's keys and values.
The cache is a handful of whole-prompt entries, not a radix tree of blocks: with the scheduler's
static rows, a hit is one copy of the common prefix into the new row, and a typing user's newest
prompt replaces their previous one, so a few entries serve many users (llama.cpp's slots keep
one prompt each the same way). Lookup scans the entries for the longest common prefix; that is
microseconds for the tens of entries the byte budget holds.

Exact: the entry's keys and values are the ones the model wrote for the same tokens at the same
positions, and the rest of the prompt is computed on top of them, so a hit gives the tokens a
cold prefill would (up to float rounding, as batched prefill already does). Worker-thread only.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from codeassist.remote.metrics import ServerMetrics

REPLACE_SLACK = 16  # a new entry replaces one it matches to within this many tokens of its end


@dataclass(frozen=True)
class CachedPrefix:
    tokens: tuple[int, ...]
    k: torch.Tensor  # (n_layer, n_head, T, head_dim), T = len(tokens)
    v: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the typing case: one C-speed comparison
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]; bisect on slice equality
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class PrefixCache:
    """Least-recently-used entries keyed by their tokens; `max_bytes` of 0 turns it off."""

    def __init__(self, max_bytes: int, min_tokens: int = 16) -> None:
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens  # a shorter match is not worth leaving the batched prefill
        self._entries: collections.OrderedDict[tuple[int, ...], CachedPrefix] = collections.OrderedDict()
        self.nbytes = 0
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: tuple[int, ...]) -> tuple[CachedPrefix | None, int]:
        """The entry sharing the longest prefix with `prompt`, and how many tokens of it to reuse:
        at most len(prompt) - 1, since the last prompt token must run to give the next logits."""
        best: CachedPrefix | None = None
        best_n = 0
        for entry in self._entries.values():
            n = min(common_prefix(entry.tokens, prompt), len(prompt) - 1)
            if n > best_n:
                best, best_n = entry, n
        if best is None or best_n < self.min_tokens:
            return None, 0
        self._entries.move_to_end(best.tokens)
        return best, best_n

    def insert(self, tokens: tuple[int, ...], k: torch.Tensor, v: torch.Tensor) -> None:
        """Keep `tokens`' keys and values (cloned by the caller); older entries it covers go."""
        if not self.enabled or len(tokens) < self.min_tokens:
            return
        entry = CachedPrefix(tokens, k, v)
        if entry.nbytes > self.max_bytes:
            return
        for old in list(self._entries.values()):
            if common_prefix(old.tokens, tokens) >= len(old.tokens) - REPLACE_SLACK:
                self._drop(old.tokens)
        while self.nbytes + entry.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1
        self._entries[tokens] = entry
        self.nbytes += entry.nbytes

    def holds(self, tokens: tuple[int, ...]) -> bool:
        return tokens in self._entries

    def _drop(self, tokens: tuple[int, ...]) -> None:
        self.nbytes -= self._entries.pop(tokens).nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0


class PrefixReuse:
    """The scheduler's use of the cache: how much of a prompt a lookup reuses, what a finished
    row leaves behind, and the metrics of both. A disabled cache (0 bytes) reuses nothing."""

    def __init__(self, cache: PrefixCache, metrics: ServerMetrics) -> None:
        self.cache = cache
        self.metrics = metrics

    def lookup(self, prompt: tuple[int, ...]) -> tuple[CachedPrefix | None, int]:
        return self.cache.lookup(prompt) if self.cache.enabled else (None, 0)

    def count(self, lookups: int, reused: int) -> None:
        """`lookups` prompts were looked up; one of them reused `reused` tokens (0: none did)."""
        if self.cache.enabled:
            self.metrics.cache_lookups.inc(lookups)
            if reused:
                self.metrics.cache_hits.inc()
                self.metrics.cache_reused_tokens.inc(reused)

    def remember(self, tokens: tuple[int, ...], source: tuple[int, ...] | None, cached: int,
                 snapshot: Callable[[int], tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep the keys and values of `tokens` (a row's first len(tokens) prompt tokens; `snapshot(n)`
        copies them), unless the entry the row started from (`source`, `cached` tokens reused) is
        still there and covers nearly as much: a typing user's next keystroke then reuses that one,
        so a row is not copied at every keystroke."""
        cache = self.cache
        if not cache.enabled or len(tokens) < cache.min_tokens or cache.holds(tokens):
            return
        if source is not None and cached >= len(tokens) - REPLACE_SLACK and cache.holds(source):
            return
        evicted = cache.evictions
        cache.insert(tokens, *snapshot(len(tokens)))
        self.metrics.cache_evictions.inc(cache.evictions - evicted)
        self.metrics.cache_bytes.set(cache.nbytes)
