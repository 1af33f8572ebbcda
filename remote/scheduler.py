"""Continuous batching: one worker thread owns the model; requests join and leave at token boundaries.

Each turn of the worker (1) drops waiting sequences that were cancelled or ran out of time,
(2) prefills the sequences it admits into free rows of the batch and samples their first
token, (3) runs one decode step for every running sequence, and (4) frees the rows of the
sequences that finished or were cancelled. So new prompts are prefilled between decode steps
of the others, and a client that goes away frees its row within one step.

Prefill reuses the prefix cache (remote/prefix_cache.py): a prompt that shares a prefix with a
recent one starts from its keys and values, and every finished (or cancelled) sequence leaves
its prompt's there. Cold short prompts are prefilled together in one padded batch, and so are
cache hits whose new tokens fit one chunk (typing users' keystrokes, which arrive together: one
pass for all, each row from its own cached prefix). Any other prompt (a lone cache hit, or more
than `prefill_chunk` new tokens) is prefilled alone in chunks of `prefill_chunk`, one chunk per
turn between decode steps, so the running sequences keep streaming while a long prompt is
admitted. Admission counts what a prompt will prefill: a cache hit only its new tokens.

The event loop talks to the worker through `submit` (non-blocking; a full queue raises
QueueFull) and the `Stream` it returns (events pushed with call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import TYPE_CHECKING

import torch

from codeassist.model.chooser import mask_banned
from codeassist.model.decoding import emit
from codeassist.model.tokenization import Tokenizer, codeassist_tokenizer, resolve
from codeassist.remote.batch import BatchState
from codeassist.remote.events import (
    Delta,
    Event,
    Failed,
    Finished,
    Handle,
    Job,
    NotAccepting,
    QueueFull,
    SeqState,
)
from codeassist.remote.metrics import ServerMetrics
from codeassist.remote.prefix_cache import CachedPrefix, PrefixCache, PrefixReuse

if TYPE_CHECKING:
    from codeassist.model.causal_lm import CausalLM

__all__ = ["Delta", "Event", "Failed", "Finished", "Handle", "Job", "NotAccepting", "QueueFull", "Scheduler"]

log = logging.getLogger(__name__)

Plan = tuple[SeqState, CachedPrefix | None, int]  # an admitted sequence, its cache entry, the tokens it reuses


class Scheduler:
    def __init__(self, metrics: ServerMetrics, max_batch: int = 16, max_queue: int = 64,
                 max_prefill_tokens: int = 2048, prefix_cache_bytes: int = 0, prefill_chunk: int = 256) -> None:
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self.prefill_chunk = prefill_chunk
        self.cache = PrefixCache(prefix_cache_bytes)
        self.reuse = PrefixReuse(self.cache, metrics)
        self._pending: SeqState | None = None  # the sequence being prefilled piecewise
        self._cond = threading.Condition()
        self._waiting: collections.deque[SeqState] = collections.deque()
        self._running: list[SeqState] = []  # aligned with the batch's rows
        self._batch: BatchState | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._live = 0  # sequences submitted and not yet answered (waiting, being prefilled, running)
        self.accepting = False
        self.block_size = 0
        self.tokenizer: Tokenizer = codeassist_tokenizer()  # the model's, from start()

    # -- event-loop side -----------------------------------------------------------------------

    def start(self, model: CausalLM, device: torch.device, dtype: torch.dtype,
              tokenizer: Tokenizer | None = None, context: int | None = None) -> None:
        """Serve `model` with its `tokenizer` (ours when None); `context` caps the KV cache
        (the engine's context_tokens; the model's block_size when None)."""
        self.tokenizer = resolve(tokenizer)
        self._batch = BatchState(model, self.max_batch, device, dtype, context)
        self.block_size = self._batch.block_size
        self._device = device
        self._thread = threading.Thread(target=self._work, name="codeassist-scheduler", daemon=True)
        self._thread.start()
        self.accepting = True

    def submit(self, jobs: list[Job], stream: bool = True) -> Handle:
        """Queue one request's jobs together (all or none). Raises QueueFull or NotAccepting.
        `stream=False`: the caller waits for whole answers (see Handle)."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if not self.accepting:
                raise NotAccepting()
            if len(self._waiting) + len(jobs) > self.max_queue:
                self._drop_dead()  # editors cancel often: cancelled requests must not hold places
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(self.retry_after_s())
            handle = Handle(loop, self._cond, stream)
            self._waiting.extend(SeqState(j, handle, i, self._device, self.tokenizer) for i, j in enumerate(jobs))
            self._live += len(jobs)
            self.metrics.queued.set(len(self._waiting))
            self._cond.notify()
        return handle

    def retry_after_s(self) -> int:
        """A hint for 429s: about how long until the queue has room (at least one second)."""
        return max(1, min(30, len(self._waiting) // max(1, self.max_batch)))

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._live

    def _answered(self, count: int = 1) -> None:
        with self._cond:
            self._live -= count

    def stop_accepting(self) -> None:
        with self._cond:
            self.accepting = False

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self.accepting = False
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- worker side ----------------------------------------------------------------------------

    def _work(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._stopping or self._waiting or self._running or self._pending):
                        self._cond.wait()
                    if self._stopping:
                        break
                    admitted = self._admit()
                try:
                    self._turn(admitted)
                except Exception:
                    log.exception("the model failed; failing the sequences it held")
                    self._fail_all([s for s, _, _ in admitted])
        self._fail_all([])
        if self._batch is not None:
            self._batch.close()

    def _admit(self) -> list[Plan]:
        """Under the lock: drop dead waiting sequences, take what fits the free rows, each with
        its prefix-cache lookup (what it prefills is only what the cache does not hold)."""
        assert self._batch is not None
        self._drop_dead()
        admitted: list[Plan] = []
        if self._pending is not None:  # its row must be the last one: nothing joins until it has
            return admitted
        longest = 0
        while self._waiting and len(admitted) < self._batch.free:
            seq = self._waiting[0]
            entry, n = self.reuse.lookup(seq.job.prompt)
            nxt = len(seq.job.prompt) - n
            if admitted and (len(admitted) + 1) * max(longest, nxt) > self.max_prefill_tokens:
                break
            longest = max(longest, nxt)
            admitted.append((self._waiting.popleft(), entry, n))
        self.metrics.queued.set(len(self._waiting))
        return admitted

    def _drop_dead(self) -> None:
        """Under the lock: answer the waiting sequences that were cancelled or ran out of time."""
        now = time.monotonic()
        for s in [s for s in self._waiting if s.handle.cancelled.is_set() or s.expired(now)]:
            self._waiting.remove(s)
            if s.handle.cancelled.is_set():
                self._finish(s, "cancelled")
            else:
                self.metrics.reject("queue_timeout")
                s.handle._put(s.index, Failed(503, "the request waited in the queue past its time limit"))
                self._live -= 1
        self.metrics.queued.set(len(self._waiting))

    def _turn(self, admitted: list[Plan]) -> None:
        batch = self._batch
        assert batch is not None
        if self._pending is not None:
            self._prefill_chunk()
        elif admitted:
            self._prefill(admitted)
        if self._running:
            logits = batch.decode()
            self.metrics.batch_steps.inc()
            self._sample(logits, 0)
            self._sweep()
        self.metrics.running.set(len(self._running))

    def _prefill(self, plans: list[Plan]) -> None:
        """Cold short prompts in one padded batch; then the others one by one from their cached
        prefix, until one of them needs more than a chunk (it stays pending; the rest wait)."""
        assert self._batch is not None
        cold = [s for s, _, n in plans if n == 0 and len(s.job.prompt) <= self.prefill_chunk]
        if cold:
            logits = self._batch.prefill([list(s.job.prompt) for s in cold])
            self._running.extend(cold)
            self.metrics.tokens_in.inc(sum(len(s.job.prompt) for s in cold))
            self.reuse.count(len(cold), 0)
            self._sample(logits, len(self._running) - len(cold))
            self._sweep()
        rest = [(s, entry, n) for s, entry, n in plans if s not in cold]
        # cache hits whose new tokens fit one chunk (typing users' keystrokes): one padded pass
        quick = [(s, entry, n) for s, entry, n in rest
                 if entry is not None and len(s.job.prompt) - n <= self.prefill_chunk]
        pad = max((len(s.job.prompt) - n for s, _, n in quick), default=0)
        quick = [(s, entry, n) for s, entry, n in quick if n + pad <= self._batch.block_size]  # padding fits
        if len(quick) > 1:
            self._prefill_cached(quick)
            rest = [plan for plan in rest if plan not in quick]
        for i, (seq, entry, n) in enumerate(rest):
            if self._pending is not None:
                with self._cond:  # back to the head of the queue, in order
                    self._waiting.extendleft(s for s, _, _ in reversed(rest[i:]))
                    self.metrics.queued.set(len(self._waiting))
                return
            self.reuse.count(1, n)
            self._batch.start_row((entry.k, entry.v) if entry is not None else None, n)
            seq.cached = seq.fed = n
            seq.source = entry.tokens if entry is not None else None
            self._pending = seq
            self._prefill_chunk()

    def _prefill_cached(self, plans: list[tuple[SeqState, CachedPrefix, int]]) -> None:
        """Sequences starting from cached prefixes, their new tokens in one padded pass."""
        assert self._batch is not None
        starts: list[tuple[tuple[torch.Tensor, torch.Tensor] | None, int, list[int]]] = [
            ((entry.k, entry.v), n, list(s.job.prompt[n:])) for s, entry, n in plans]
        logits = self._batch.prefill_cached(starts)
        for seq, entry, n in plans:
            self.reuse.count(1, n)
            seq.cached, seq.fed = n, len(seq.job.prompt)
            seq.source = entry.tokens
        self._running.extend(s for s, _, _ in plans)
        self.metrics.tokens_in.inc(sum(len(s.job.prompt) - n for s, _, n in plans))
        self.metrics.prefill_chunks.inc()
        self._sample(logits, len(self._running) - len(plans))
        self._sweep()

    def _prefill_chunk(self) -> None:
        """The pending sequence's next chunk; with its last, it joins the running batch."""
        seq, batch = self._pending, self._batch
        assert seq is not None and batch is not None
        if seq.handle.cancelled.is_set() or seq.expired(time.monotonic()):
            self._remember(batch.active, seq, seq.fed)  # a later keystroke may reuse it
            batch.pending = self._pending = None
            self._finish(seq, "cancelled" if seq.handle.cancelled.is_set() else "time")
            return
        prompt = seq.job.prompt
        end = min(len(prompt), seq.fed + self.prefill_chunk)
        logits = batch.extend(list(prompt[seq.fed:end]))
        self.metrics.tokens_in.inc(end - seq.fed)
        self.metrics.prefill_chunks.inc()
        seq.fed = end
        if end == len(prompt):
            batch.commit()
            self._pending = None
            self._running.append(seq)
            self._sample(logits.unsqueeze(0), len(self._running) - 1)
            self._sweep()

    def _remember(self, row: int, seq: SeqState, length: int) -> None:
        """Leave `row`'s first `length` prompt tokens in the prefix cache (PrefixReuse.remember)."""
        batch = self._batch
        assert batch is not None
        self.reuse.remember(seq.job.prompt[:length], seq.source, seq.cached, lambda n: batch.snapshot(row, n))

    def _sample(self, logits: torch.Tensor, first: int) -> None:
        """Choose the next token of rows first.. from their logits (one row each), apply stop rules."""
        assert self._batch is not None
        seqs = self._running[first:first + logits.size(0)]
        # the ids never chosen, for every row at once (logits is the step's own float copy), so
        # one argmax gives every greedy row its token; the choosers need no more for those rows
        no_eos = [i for i, seq in enumerate(seqs) if not seq.job.stop_on_eos]
        mask_banned(logits, self.tokenizer, len(no_eos) < len(seqs))  # one pass when every row agrees
        if no_eos and len(no_eos) < len(seqs):
            rows = torch.tensor(no_eos, device=logits.device)
            logits[rows] = mask_banned(logits[rows], self.tokenizer, False)
        greedy = logits.argmax(dim=-1).tolist()
        now = time.monotonic()
        for i, seq in enumerate(seqs):
            token = seq.chooser.choose(logits[i], greedy[i])
            if seq.t_first is None:
                seq.t_first = now
                self.metrics.ttft.observe(now - seq.t_submit)
            self._accept(seq, token, self._batch.rows[first + i].pos, now)
            self._batch.rows[first + i].token = token

    def _accept(self, seq: SeqState, token: int, pos: int, now: float) -> None:
        reason, delta = emit(token, seq.text, self.tokenizer)
        if reason == "eos":
            seq.reason = reason
            return
        seq.generated += 1
        if delta:
            seq.handle._put(seq.index, Delta(delta))
        if reason is not None:
            seq.reason = reason
        elif seq.generated >= seq.job.max_new_tokens:
            seq.reason = "max_tokens"
        elif pos >= self.block_size:
            seq.reason = "context"
        elif seq.expired(now):
            seq.reason = "time"

    def _sweep(self) -> None:
        """Free the rows of finished and cancelled sequences (highest row first, see BatchState)."""
        assert self._batch is not None
        for row in range(len(self._running) - 1, -1, -1):
            seq = self._running[row]
            if seq.reason is None and seq.handle.cancelled.is_set():
                seq.reason = "cancelled"
            if seq.reason is None:
                continue
            self._remember(row, seq, len(seq.job.prompt))
            moved = self._batch.remove(row)
            if moved is not None:
                self._running[row] = self._running[moved]
            self._running.pop()
            self._finish(seq, seq.reason)

    def _finish(self, seq: SeqState, reason: str) -> None:
        now = time.monotonic()
        if reason != "cancelled":
            tail = seq.text.finish()
            if tail:
                seq.handle._put(seq.index, Delta(tail))
        self.metrics.finished.labels(reason=reason).inc()
        self.metrics.tokens_out.inc(seq.generated)
        self.metrics.e2e.observe(now - seq.t_submit)
        if seq.t_first is not None and seq.generated > 1:
            self.metrics.per_token.observe((now - seq.t_first) / (seq.generated - 1))
        seq.handle._put(seq.index, Finished(reason, len(seq.job.prompt), seq.generated, seq.cached))
        self._answered()

    def _fail_all(self, admitted: list[SeqState]) -> None:
        """After a model error (or at stop): every held sequence gets a generic error; rows reset."""
        with self._cond:
            doomed = list(self._running)
            doomed += [s for s in admitted if s not in doomed]
            if self._pending is not None and self._pending not in doomed:
                doomed.append(self._pending)
            if self._stopping:
                doomed += list(self._waiting)
                self._waiting.clear()
        self._running = []
        self._pending = None
        if self._batch is not None:
            self._batch.rows = []
            self._batch.pending = None
        for s in doomed:
            self.metrics.finished.labels(reason="error").inc()
            s.handle._put(s.index, Failed(500, "the model failed on this request"))
        self._answered(len(doomed))
        self.metrics.running.set(0)
