"""Prefix caching across requests: a request that starts from a cached prefix gives the tokens a
cold one gives, greedy and sampled with a seed, also while a tiny cache limit evicts entries."""

from __future__ import annotations

import torch

from codeassist.model import tokenizer as tok
from codeassist.model.sampling import SamplingParams
from codeassist.remote.metrics import ServerMetrics
from codeassist.remote.prefix_cache import PrefixCache, common_prefix
from codeassist.remote.scheduler import Finished, Job, Scheduler
from tests.remote.conftest import tiny_engine
from tests.remote.test_scheduler import alone, drain

SOURCE = ("import os\nimport sys\n\n\ndef read_config(path):\n    with open(path) as f:\n"
          "        return f.read()\n\n\nclass Cache:\n    def __init__(self, size):\n"
          "        self.size = size\n        self.items = {}\n\n    def get(self, key):\n")


def typing(text: str = SOURCE, steps: int = 3) -> list[tuple[int, ...]]:
    """Consecutive windows of one user typing: each the previous plus a few characters."""
    cut = len(text) - 3 * steps
    return [(tok.EOT_ID, *tok.encode(text[:cut + 3 * i])) for i in range(steps)]


def start(cache_bytes: int, max_batch: int = 2, chunk: int = 256) -> Scheduler:
    s = Scheduler(ServerMetrics(), max_batch=max_batch, prefix_cache_bytes=cache_bytes, prefill_chunk=chunk)
    e = tiny_engine()
    s.start(e.model, e.device, e.dtype)
    return s


FILLER = Job(prompt=(tok.EOT_ID, *tok.encode("# unrelated, too short to cache")), max_new_tokens=80,
             stop_on_eos=False)


async def one_by_one(s: Scheduler, jobs: list[Job]) -> list[tuple[str, Finished]]:
    """Each job alone, an unrelated one between them: no row still holds the previous prompt's
    keys and values by chance, so a hit must copy them from the cache."""
    out = []
    for job in jobs:
        texts, fins = await drain(s.submit([job]))
        out.append((texts[0], fins[0]))
        await drain(s.submit([FILLER]))
    return out


def counter(s: Scheduler, name: str) -> float:
    value: float = getattr(s.metrics, name)._value.get()
    return value


async def test_a_cached_request_equals_a_cold_one_greedy_and_seeded() -> None:
    windows = typing(steps=4)
    greedy = [Job(prompt=p, max_new_tokens=12, stop_on_eos=False) for p in windows]
    seeded = [Job(prompt=p, max_new_tokens=12, stop_on_eos=False, seed=7,
                  sampling=SamplingParams(temperature=1.0, top_k=50)) for p in windows]
    cold, warm = start(0), start(64 << 20)
    try:
        cold_out = await one_by_one(cold, greedy + seeded)
        warm_out = await one_by_one(warm, greedy + seeded)
    finally:
        cold.stop()
        warm.stop()
    assert [t for t, _ in warm_out] == [t for t, _ in cold_out]
    assert [t for t, _ in warm_out[:4]] == [alone(p, 12) for p in windows]
    assert len({t for t, _ in cold_out[4:]}) > 1  # sampled: the windows do not all give one text
    cached = [f.cached_tokens for _, f in warm_out]
    assert cached[0] == 0 and all(c >= len(windows[0]) - 2 for c in cached[1:])  # the typing case hits
    assert all(f.cached_tokens == 0 for _, f in cold_out)
    assert counter(warm, "cache_hits") == 7 and counter(warm, "cache_lookups") == 16  # the filler misses
    assert counter(warm, "cache_reused_tokens") == sum(cached)
    assert counter(cold, "cache_lookups") == 0


async def test_eviction_under_a_tiny_limit_keeps_outputs_exact() -> None:
    users = [typing(SOURCE, 3), typing(SOURCE.replace("os", "re").upper(), 3),
             typing("def main():\n" * 12, 3)]
    entry = 2 * 2 * 64 * 4 * max(len(p) for u in users for p in u)  # k and v, n_layer 2, n_embd 64, fp32
    s = start(entry + entry // 2)  # room for one entry: each user's request evicts another's
    order = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (2, 1), (1, 2), (2, 2)]  # (user, keystroke)
    jobs = [Job(prompt=users[u][i], max_new_tokens=8, stop_on_eos=False) for u, i in order]
    try:
        out = await one_by_one(s, jobs)
        assert s.cache.nbytes <= s.cache.max_bytes and len(s.cache) == 1
    finally:
        s.stop()
    assert [t for t, _ in out] == [alone(j.prompt, 8) for j in jobs]
    assert counter(s, "cache_evictions") == 5  # u1 evicts u0, u0 u1, u2 u0, u1 u2, u2 u1 (LRU of one)
    assert counter(s, "cache_hits") == 3  # the second keystroke of each user
    assert [f.cached_tokens > 0 for _, f in out] == [False, True, False, True, False, False, True, False, False]
    assert s.metrics.cache_bytes._value.get() <= entry + entry // 2


def test_the_cache_keeps_the_longest_match_and_replaces_what_a_new_entry_covers() -> None:
    def kv(n: int) -> torch.Tensor:
        return torch.zeros(2, 4, n, 16)

    cache = PrefixCache(1 << 20, min_tokens=4)
    a = tuple(range(40))
    b = tuple(range(100, 140))
    cache.insert(a, kv(40), kv(40))
    cache.insert(b, kv(40), kv(40))
    entry, n = cache.lookup((*a[:30], 999, 998))
    assert entry is not None and entry.tokens == a and n == 30
    entry, n = cache.lookup(a)  # the whole prompt matches: its last token must still run
    assert n == 39
    assert cache.lookup((7, 8, 9, 10, 11))[0] is None
    cache.insert((*a[:38], 5, 6, 7), kv(41), kv(41))  # the next keystroke replaces the previous window
    assert not cache.holds(a) and len(cache) == 2
    assert common_prefix((1, 2, 3), (1, 2, 4)) == 2 and common_prefix((1,), (1, 2)) == 1


async def test_a_typing_user_copies_a_row_into_the_cache_once_not_at_every_keystroke(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from codeassist.remote.batch import BatchState

    snapshots: list[int] = []
    real = BatchState.snapshot

    def counting(self: BatchState, row: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        snapshots.append(length)
        return real(self, row, length)

    monkeypatch.setattr(BatchState, "snapshot", counting)
    windows = typing(steps=4)  # a few tokens apart: each reuses the first window's entry
    s = start(64 << 20)
    try:
        out = await one_by_one(s, [Job(prompt=p, max_new_tokens=4, stop_on_eos=False) for p in windows])
    finally:
        s.stop()
    assert snapshots == [len(windows[0])]
    assert [f.cached_tokens for _, f in out[1:]] == [common_prefix(windows[0], p) for p in windows[1:]]


async def test_cache_hits_admitted_together_are_prefilled_in_one_pass_and_stay_exact() -> None:
    """Three typing users' next keystrokes arrive together: each starts from its own cached
    window, their new tokens run in one padded pass, and each output equals the cold engine's."""
    users = [typing(SOURCE, 2), typing(SOURCE.replace("os", "re").upper(), 2), typing("def main():\n" * 12, 2)]
    s = start(64 << 20, max_batch=4)
    try:
        for u in users:  # the first keystroke of each: cold, leaves its window in the cache
            await drain(s.submit([Job(prompt=u[0], max_new_tokens=8, stop_on_eos=False)]))
        passes = counter(s, "prefill_chunks")
        jobs = [Job(prompt=u[1], max_new_tokens=8, stop_on_eos=False) for u in users]
        with s._cond:  # hold the worker so all three wait for the same turn
            handles = [s.submit([job]) for job in jobs]
        out = [await drain(h) for h in handles]
    finally:
        s.stop()
    assert [texts[0] for texts, _ in out] == [alone(j.prompt, 8) for j in jobs]
    assert all(fins[0].cached_tokens >= len(u[0]) - 2 for (_, fins), u in zip(out, users, strict=True))
    assert counter(s, "prefill_chunks") == passes + 1  # one pass, not one per user


def test_a_batched_cached_prefill_equals_each_row_alone() -> None:
    """BatchState.prefill_cached against start_row + extend, row by row (fp32: the same logits)."""
    from codeassist.remote.batch import BatchState

    e = tiny_engine()
    windows = [typing(SOURCE, 2), typing("def main():\n" * 12, 2)]
    with torch.inference_mode():
        batch = BatchState(e.model, 4, e.device, e.dtype)
        snaps = []
        for w in windows:  # cache each first window, as the scheduler does when a request ends
            batch.prefill([list(w[0])])
            snaps.append(batch.snapshot(0, len(w[0]) - 1))
            batch.remove(0)
        starts = [(snap, len(w[0]) - 1, list(w[1][len(w[0]) - 1:])) for snap, w in zip(snaps, windows, strict=True)]
        together = batch.prefill_cached(starts)
        for row, (_, n, new) in enumerate(starts):
            assert batch.rows[row].pos == n + len(new)
        batch.rows.clear()
        for i, (snap, n, new) in enumerate(starts):
            batch.start_row(snap, n)
            alone_logits = batch.extend(new)
            batch.commit()
            batch.remove(0)
            torch.testing.assert_close(together[i], alone_logits, rtol=1e-4, atol=1e-4)
