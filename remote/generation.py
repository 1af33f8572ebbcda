"""From a request's text to scheduler jobs and back: the prompt plan, the context check, and
collecting a request's events while watching for the client to go away."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.requests import Request

from codeassist.model.prompting import build_prompt
from codeassist.model.sampling import SamplingParams
from codeassist.model.tokenization import Tokenizer
from codeassist.remote.errors import APIError
from codeassist.remote.scheduler import (
    Delta,
    Failed,
    Finished,
    Handle,
    Job,
    NotAccepting,
    QueueFull,
    Scheduler,
)

MIN_PROMPT_BUDGET = 8  # fewer prompt tokens than this leave the model nothing to go on


@dataclass(frozen=True)
class Ask:
    """One completion request, API-independent."""

    prefix: str
    suffix: str
    max_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None
    stop_on_eos: bool = True
    truncate: int | None = None  # None: refuse an over-long prompt; -1: fit the context; k: keep k
    heal: bool | str = True  # True: heal here; a string: the end of prefix the client healed (healed_prefix)
    dedent_line_prefix: str | None = None  # BLOCK mode's dedent stop (model/stops.py StopRules)


@dataclass
class Choice:
    text: str = ""
    finished: Finished | None = None


def plan_jobs(ask: Ask, block_size: int, max_tokens_limit: int, deadline: float,
              tokenizer: Tokenizer | None = None) -> list[Job]:
    """The jobs for a request, or APIError(400) naming what does not fit; the prompt is in the
    served model's `tokenizer` (ServerState.tokenizer; ours when None)."""
    if ask.max_tokens > max_tokens_limit:
        raise APIError(400, f"max_tokens is {ask.max_tokens}; this server allows at most {max_tokens_limit}",
                       "max_tokens")
    budget = block_size - ask.max_tokens
    if ask.truncate is not None and ask.truncate > 0:
        budget = min(budget, ask.truncate)
    if budget < MIN_PROMPT_BUDGET:
        raise APIError(400, f"max_tokens of {ask.max_tokens} leaves no room for the prompt in the model's "
                       f"context of {block_size} tokens", "max_tokens", "context_length_exceeded")
    if ask.truncate is None:
        prompt = build_prompt(ask.prefix, ask.suffix, 1 << 30, ask.heal, tokenizer)
        if len(prompt.ids) > budget:
            raise APIError(400, f"the prompt ({len(prompt.ids)} tokens) plus max_tokens ({ask.max_tokens}) "
                           f"exceeds the model's context of {block_size} tokens", "prompt",
                           "context_length_exceeded")
    else:
        prompt = build_prompt(ask.prefix, ask.suffix, budget, ask.heal, tokenizer)
    return [Job(prompt=prompt.ids, max_new_tokens=ask.max_tokens, sampling=ask.sampling,
                forced_prefix=prompt.forced_prefix, stop=ask.stop, stop_on_eos=ask.stop_on_eos,
                dedent_line_prefix=ask.dedent_line_prefix,
                seed=None if ask.seed is None else ask.seed + i, deadline=deadline)
            for i in range(ask.n)]


def submit(scheduler: Scheduler, jobs: list[Job], on_reject: Callable[[str], None], stream: bool = True) -> Handle:
    try:
        return scheduler.submit(jobs, stream)
    except QueueFull as exc:
        on_reject("queue_full")
        raise APIError(429, "the server is at capacity; retry later", code="queue_full",
                       headers={"Retry-After": str(exc.retry_after_s)}) from None
    except NotAccepting:
        on_reject("not_ready")
        raise APIError(503, "the server is not accepting requests (loading or shutting down)",
                       code="not_ready", headers={"Retry-After": "5"}) from None


@contextlib.asynccontextmanager
async def cancel_on_disconnect(request: Request, handle: Handle) -> AsyncIterator[None]:
    """While inside, a client that disconnects cancels the handle (its rows free within a step)."""

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                handle.cancel()
                return

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()


async def collect(handle: Handle, n: int, timeout_s: float) -> list[Choice]:
    """Wait for every choice to finish; a failure becomes APIError."""
    choices = [Choice() for _ in range(n)]
    pending = n
    try:
        async with asyncio.timeout(timeout_s):
            while pending:
                index, event = await handle.next()
                if isinstance(event, Delta):
                    choices[index].text += event.text
                elif isinstance(event, Finished):
                    choices[index].finished = event
                    pending -= 1
                elif isinstance(event, Failed):
                    handle.cancel()
                    raise APIError(event.status, event.message)
    except TimeoutError:
        handle.cancel()
        raise APIError(504, "the request ran past its time limit", code="timeout") from None
    except asyncio.CancelledError:
        handle.cancel()
        raise
    return choices


def deadline_after(seconds: float) -> float:
    return time.monotonic() + seconds
