"""OpenAI-compatible legacy completions: POST /v1/completions (JSON or server-sent events), GET /v1/models."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from codeassist.model.sampling import SamplingParams
from codeassist.remote import session
from codeassist.remote.app import ServerState, server_state
from codeassist.remote.errors import APIError, error_body
from codeassist.remote.generation import Ask, cancel_on_disconnect, collect, deadline_after, plan_jobs, submit
from codeassist.remote.scheduler import Delta, Event, Failed, Finished, Handle
from codeassist.remote.schema import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    FinishReason,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    Usage,
)

router = APIRouter(prefix="/v1")

MAX_STOPS = 16  # OpenAI takes 4; the language server's block stops, its next line and a template's need more
MAX_STOP_CHARS = 256


@router.get("/models")
async def models(request: Request) -> ModelList:
    state = server_state(request)
    if not state.loaded:
        return ModelList(data=[])
    return ModelList(data=[ModelCard(id=state.model_name, created=state.created, max_model_len=state.block_size)])


def to_ask(body: CompletionRequest, state: ServerState) -> Ask:
    """Check what the schema cannot (features we lack, per-server limits) and name the field."""
    unsupported = {"echo": body.echo, "logprobs": body.logprobs is not None,
                   "best_of": body.best_of not in (None, 1),
                   "presence_penalty": body.presence_penalty != 0.0,
                   "frequency_penalty": body.frequency_penalty != 0.0}
    for name, used in unsupported.items():
        if used:
            raise APIError(400, f"{name} is not supported by this server", name)
    if body.model is not None and body.model != state.model_name:
        raise APIError(404, f"the model {body.model!r} is not served here; GET /v1/models lists "
                       f"{state.model_name!r}", "model", "model_not_found")
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise APIError(400, "prompt must be one string (batched prompts are not supported)", "prompt")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    if body.n > state.settings.max_n:
        raise APIError(400, f"n is {body.n}; this server allows at most {state.settings.max_n}", "n")
    stops = body.stop_list()
    if len(stops) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise APIError(400, f"stop takes at most {MAX_STOPS} non-empty strings of at most "
                       f"{MAX_STOP_CHARS} characters", "stop")
    if body.healed_prefix is not None and not prompt.endswith(body.healed_prefix):
        raise APIError(400, "healed_prefix must be the end of the prompt", "healed_prefix")
    return Ask(prefix=prompt, suffix=body.suffix or "", max_tokens=body.max_tokens,
               sampling=SamplingParams(temperature=body.temperature, top_p=body.top_p), stop=tuple(stops),
               n=body.n, seed=body.seed, stop_on_eos=not body.ignore_eos, truncate=body.truncate_prompt_tokens,
               heal=True if body.healed_prefix is None else body.healed_prefix,
               dedent_line_prefix=body.dedent_line_prefix)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response | CompletionResponse:
    state = server_state(request)
    session.note(request, state.metrics)  # carried for routing (deploy/), logged and counted here
    if not state.loaded:
        raise APIError(503, "the model is not loaded yet", code="not_ready", headers={"Retry-After": "5"})
    ask = to_ask(body, state)
    limit = state.settings.request_timeout_s
    jobs = await anyio.to_thread.run_sync(plan_jobs, ask, state.block_size, state.settings.max_tokens_limit,
                                          deadline_after(limit), state.tokenizer)
    handle = submit(state.scheduler, jobs, state.metrics.reject, stream=body.stream)
    cid = f"cmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not body.stream:
        async with cancel_on_disconnect(request, handle):
            choices = await collect(handle, ask.n, limit + 5.0)
        prompt_tokens = len(jobs[0].prompt)
        completion_tokens = sum(c.finished.completion_tokens for c in choices if c.finished)
        cached = max((c.finished.cached_tokens for c in choices if c.finished), default=0)
        return CompletionResponse(
            id=cid, created=created, model=state.model_name,
            choices=[CompletionChoice(text=c.text, index=i,
                                      finish_reason=c.finished.finish_reason if c.finished else "length")
                     for i, c in enumerate(choices)],
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens,
                        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached)))
    # the first event decides the status: an error before any token is a plain error response
    async with cancel_on_disconnect(request, handle):
        first = await _first_event(handle, limit + 5.0)
    chunks = _sse(handle, first, ask.n, cid, created, state.model_name, len(jobs[0].prompt),
                  bool(body.stream_options and body.stream_options.include_usage), limit + 5.0)
    return StreamingResponse(chunks, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _first_event(handle: Handle, timeout_s: float) -> tuple[int, Event]:
    try:
        with anyio.fail_after(timeout_s):
            index, event = await handle.next()
    except TimeoutError:
        handle.cancel()
        raise APIError(504, "the request ran past its time limit", code="timeout") from None
    if isinstance(event, Failed):
        raise APIError(event.status, event.message)
    return index, event


async def _sse(handle: Handle, first: tuple[int, Event], n: int, cid: str, created: int, model: str,
               prompt_tokens: int, include_usage: bool, timeout_s: float) -> AsyncIterator[bytes]:
    """data: {chunk} lines, one finish chunk per choice, optional usage, then data: [DONE]."""

    def chunk(index: int, text: str, finish: FinishReason | None) -> bytes:
        body = CompletionResponse(id=cid, created=created, model=model,
                                  choices=[CompletionChoice(text=text, index=index, finish_reason=finish)])
        return b"data: " + body.model_dump_json(exclude={"usage"}).encode() + b"\n\n"

    pending = n
    generated = 0
    cached = 0
    event: tuple[int, Event] | None = first
    try:
        with anyio.fail_after(timeout_s):
            while pending:
                index, ev = event if event is not None else await handle.next()
                event = None
                if isinstance(ev, Delta):
                    yield chunk(index, ev.text, None)
                elif isinstance(ev, Finished):
                    pending -= 1
                    generated += ev.completion_tokens
                    cached = max(cached, ev.cached_tokens)
                    yield chunk(index, "", ev.finish_reason)
                elif isinstance(ev, Failed):
                    yield b"data: " + error_body(ev.status, ev.message) + b"\n\n"
                    return
        if include_usage:
            usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=generated,
                          total_tokens=prompt_tokens + generated,
                          prompt_tokens_details=PromptTokensDetails(cached_tokens=cached))
            yield b"data: " + json.dumps({"id": cid, "object": "text_completion", "created": created,
                                          "model": model, "choices": [],
                                          "usage": usage.model_dump()}).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    except TimeoutError:
        yield b"data: " + error_body(504, "the request ran past its time limit", code="timeout") + b"\n\n"
    finally:
        handle.cancel()  # a client gone mid-stream cancels the generator: free the rows now
