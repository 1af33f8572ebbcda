"""Continuous batching: one worker thread owns the model; requests join and leave at token boundaries.

Each turn of the worker (1) drops waiting sequences that were cancelled or ran out of time,
(2) prefills the sequences it admits into free rows of the batch and samples their first
token, (3) runs one decode step for every running sequence, and (4) frees the rows of the
sequences that finished or were cancelled. So new prompts are prefilled between decode steps
of the others, and a client that goes away frees its row within one step.

The event loop talks to the worker through `submit` (non-blocking; a full queue raises
QueueFull) and the `Stream` it returns (events pushed with call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

import torch

from codeassist.model import tokenizer as tok
from codeassist.model.healing import PrefixConstraint
from codeassist.model.sampling import SamplingParams, sample_next
from codeassist.remote.batch import BatchState
from codeassist.remote.metrics import ServerMetrics
from codeassist.remote.schema import FinishReason
from codeassist.remote.textstream import TextStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    prompt: tuple[int, ...]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    forced_prefix: bytes = b""  # token healing: output must start with these bytes (hidden)
    stop: tuple[str, ...] = ()
    stop_on_eos: bool = True
    seed: int | None = None
    deadline: float | None = None  # time.monotonic() by which the sequence must end


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str  # eos | stop | max_tokens | time | context | cancelled
    prompt_tokens: int
    completion_tokens: int

    @property
    def finish_reason(self) -> FinishReason:
        """OpenAI's vocabulary: "stop" when the model or a stop string ended it, else "length"."""
        return "stop" if self.reason in ("eos", "stop") else "length"


@dataclass(frozen=True)
class Failed:
    status: int
    message: str


Event = Delta | Finished | Failed


class QueueFull(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__("the server is busy; retry later")
        self.retry_after_s = retry_after_s


class NotAccepting(Exception):
    """The scheduler is loading, draining or stopped."""


class Handle:
    """The caller's end of one request's sequences: (index, event) pairs; cancel() frees their rows
    within one step."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: threading.Condition) -> None:
        self._loop = loop
        self._events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self._wake = wake
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()
        with self._wake:
            self._wake.notify()

    def _put(self, index: int, event: Event) -> None:  # from the worker thread
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self._events.put_nowait, (index, event))

    async def next(self) -> tuple[int, Event]:
        return await self._events.get()


class _Seq:
    """Worker-side state of one sequence."""

    def __init__(self, job: Job, handle: Handle, index: int, device: torch.device) -> None:
        self.job = job
        self.handle = handle
        self.index = index
        self.text = TextStream(job.forced_prefix, job.stop)
        self.constraint = PrefixConstraint(job.forced_prefix) if job.forced_prefix else None
        self.gen = torch.Generator(device=device).manual_seed(job.seed) if job.seed is not None else None
        self.generated = 0
        self.reason: str | None = None
        self.t_submit = time.monotonic()
        self.t_first: float | None = None

    def expired(self, now: float) -> bool:
        return self.job.deadline is not None and now >= self.job.deadline


class Scheduler:
    def __init__(self, metrics: ServerMetrics, max_batch: int = 16, max_queue: int = 64,
                 max_prefill_tokens: int = 2048) -> None:
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self._cond = threading.Condition()
        self._waiting: collections.deque[_Seq] = collections.deque()
        self._running: list[_Seq] = []  # aligned with the batch's rows
        self._batch: BatchState | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._live = 0  # sequences submitted and not yet answered (waiting, being prefilled, running)
        self.accepting = False
        self.block_size = 0

    # -- event-loop side -----------------------------------------------------------------------

    def start(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        from codeassist.model.gpt import GPT

        assert isinstance(model, GPT)
        self._batch = BatchState(model, self.max_batch, device, dtype)
        self.block_size = model.config.block_size
        self._device = device
        self._thread = threading.Thread(target=self._work, name="codeassist-scheduler", daemon=True)
        self._thread.start()
        self.accepting = True

    def submit(self, jobs: list[Job]) -> Handle:
        """Queue one request's jobs together (all or none). Raises QueueFull or NotAccepting."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if not self.accepting:
                raise NotAccepting()
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(self.retry_after_s())
            handle = Handle(loop, self._cond)
            self._waiting.extend(_Seq(j, handle, i, self._device) for i, j in enumerate(jobs))
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
                    while not self._stopping and not self._waiting and not self._running:
                        self._cond.wait()
                    if self._stopping:
                        break
                    admitted = self._admit()
                try:
                    self._turn(admitted)
                except Exception:
                    log.exception("the model failed; failing the sequences it held")
                    self._fail_all(admitted)
        self._fail_all([])
        if self._batch is not None:
            self._batch.close()

    def _admit(self) -> list[_Seq]:
        """Under the lock: drop dead waiting sequences, take what fits the free rows."""
        assert self._batch is not None
        now = time.monotonic()
        for s in [s for s in self._waiting if s.handle.cancelled.is_set() or s.expired(now)]:
            self._waiting.remove(s)
            if s.handle.cancelled.is_set():
                self._finish(s, "cancelled")
            else:
                self.metrics.reject("queue_timeout")
                s.handle._put(s.index, Failed(503, "the request waited in the queue past its time limit"))
                self._live -= 1  # (the lock is held here)
        admitted: list[_Seq] = []
        longest = 0
        while self._waiting and len(admitted) < self._batch.free:
            nxt = len(self._waiting[0].job.prompt)
            if admitted and (len(admitted) + 1) * max(longest, nxt) > self.max_prefill_tokens:
                break
            longest = max(longest, nxt)
            admitted.append(self._waiting.popleft())
        self.metrics.queued.set(len(self._waiting))
        return admitted

    def _turn(self, admitted: list[_Seq]) -> None:
        batch = self._batch
        assert batch is not None
        if admitted:
            logits = batch.prefill([list(s.job.prompt) for s in admitted])
            self._running.extend(admitted)
            first = len(self._running) - len(admitted)
            self.metrics.tokens_in.inc(sum(len(s.job.prompt) for s in admitted))
            self._sample(logits, first)
            self._sweep()
        if self._running:
            logits = batch.decode()
            self.metrics.batch_steps.inc()
            self._sample(logits, 0)
            self._sweep()
        self.metrics.running.set(len(self._running))

    def _sample(self, logits: torch.Tensor, first: int) -> None:
        """Choose the next token of rows first.. from their logits (one row each), apply stop rules."""
        assert self._batch is not None
        seqs = self._running[first:first + logits.size(0)]
        no_eos = [i for i, seq in enumerate(seqs) if not seq.job.stop_on_eos]
        if no_eos:  # ignore_eos: the specials are never chosen (logits is the step's own float copy)
            rows = torch.tensor(no_eos, device=logits.device)
            logits[rows, tok.EOT_ID] = float("-inf")
            logits[rows, tok.FIM_PREFIX_ID:] = float("-inf")
        greedy = logits.argmax(dim=-1).tolist()
        now = time.monotonic()
        for i, seq in enumerate(seqs):
            token = greedy[i]
            healing = seq.constraint is not None and not seq.constraint.done
            if healing or not seq.job.sampling.greedy:
                row = seq.constraint.mask(logits[i]) if healing and seq.constraint is not None else logits[i]
                token = sample_next(row, seq.job.sampling, seq.gen)
            if seq.constraint is not None:
                seq.constraint.advance(token)
            if seq.t_first is None:
                seq.t_first = now
                self.metrics.ttft.observe(now - seq.t_submit)
            self._accept(seq, token, self._batch.rows[first + i].pos, now)
            self._batch.rows[first + i].token = token

    def _accept(self, seq: _Seq, token: int, pos: int, now: float) -> None:
        if tok.is_special(token):
            seq.reason = "eos"
            return
        seq.generated += 1
        delta = seq.text.push(token)
        if delta:
            seq.handle._put(seq.index, Delta(delta))
        if seq.text.stopped:
            seq.reason = "stop"
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
            moved = self._batch.remove(row)
            if moved is not None:
                self._running[row] = self._running[moved]
            self._running.pop()
            self._finish(seq, seq.reason)

    def _finish(self, seq: _Seq, reason: str) -> None:
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
        seq.handle._put(seq.index, Finished(reason, len(seq.job.prompt), seq.generated))
        self._answered()

    def _fail_all(self, admitted: list[_Seq]) -> None:
        """After a model error (or at stop): every held sequence gets a generic error; rows reset."""
        with self._cond:
            doomed = list(self._running)
            doomed += [s for s in admitted if s not in doomed]
            if self._stopping:
                doomed += list(self._waiting)
                self._waiting.clear()
        self._running = []
        if self._batch is not None:
            self._batch.rows = []
        for s in doomed:
            self.metrics.finished.labels(reason="error").inc()
            s.handle._put(s.index, Failed(500, "the model failed on this request"))
        self._answered(len(doomed))
        self.metrics.running.set(0)
