"""What passes between the event loop and the scheduler's worker (jobs in, events out), and the
worker's state of one sequence."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

import torch

from codeassist.model.chooser import TokenChooser
from codeassist.model.sampling import SamplingParams
from codeassist.model.stops import StopRules
from codeassist.model.textstream import TextStream
from codeassist.model.tokenization import Tokenizer, resolve
from codeassist.remote.schema import FinishReason


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
    dedent_line_prefix: str | None = None  # BLOCK mode's dedent stop (model/stops.py StopRules)


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str  # eos | stop | max_tokens | time | context | cancelled
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose keys and values came from the prefix cache

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

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: threading.Condition, stream: bool = True) -> None:
        self._loop = loop
        self._events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self._wake = wake
        self.cancelled = threading.Event()
        # a caller that waits for the whole answer (not streaming) gets each sequence's text as
        # one Delta just before its Finished: the worker does not wake the event loop per token
        # (each wake is a self-pipe write and Python work on the loop's thread, which then holds
        # the GIL the worker needs between its torch calls)
        self._buffered: dict[int, list[str]] | None = None if stream else {}

    def cancel(self) -> None:
        self.cancelled.set()
        with self._wake:
            self._wake.notify()

    def _put(self, index: int, event: Event) -> None:  # from the worker thread
        if self._buffered is not None:
            if isinstance(event, Delta):
                self._buffered.setdefault(index, []).append(event.text)
                return
            text = "".join(self._buffered.pop(index, ()))
            if text:
                self._send(index, Delta(text))
        self._send(index, event)

    def _send(self, index: int, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self._events.put_nowait, (index, event))

    async def next(self) -> tuple[int, Event]:
        return await self._events.get()


class SeqState:
    """The scheduler's worker-side state of one sequence."""

    def __init__(self, job: Job, handle: Handle, index: int, device: torch.device,
                 tokenizer: Tokenizer | None = None) -> None:
        self.job = job
        self.handle = handle
        self.index = index
        tk = resolve(tokenizer)
        self.text = TextStream(job.forced_prefix, StopRules(stop_strings=job.stop,
                                                            dedent_line_prefix=job.dedent_line_prefix), tk)
        self.chooser = TokenChooser(tk, job.sampling, job.forced_prefix, job.seed, device, job.stop_on_eos)
        self.generated = 0
        self.reason: str | None = None
        self.t_submit = time.monotonic()
        self.t_first: float | None = None
        self.cached = 0  # prompt tokens taken from the prefix cache
        self.source: tuple[int, ...] | None = None  # the tokens of the cache entry they came from
        self.fed = 0  # prompt tokens in the row's cache so far (piecewise prefill)

    def expired(self, now: float) -> bool:
        return self.job.deadline is not None and now >= self.job.deadline
