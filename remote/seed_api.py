"""The seed's API: POST /complete {code, max_tokens, temperature, top_k, suffix?} → {completion, full_code}.

    curl -s localhost:8000/complete -H 'Content-Type: application/json' \\
         -d '{"code": "def fibonacci(n):", "max_tokens": 50}'
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request

from codeassist.model.sampling import SamplingParams
from codeassist.model.stop_policy import PLAIN_LANGUAGE, stop_policy
from codeassist.remote import session
from codeassist.remote.app import server_state
from codeassist.remote.errors import APIError
from codeassist.remote.generation import Ask, cancel_on_disconnect, collect, deadline_after, plan_jobs, submit
from codeassist.remote.schema import CompleteRequest, CompleteResponse

router = APIRouter()


@router.post("/complete")
async def complete(body: CompleteRequest, request: Request) -> CompleteResponse:
    state = server_state(request)
    session.note(request, state.metrics)  # carried for routing (deploy/), logged and counted here
    if not state.loaded:
        raise APIError(503, "the model is not loaded yet", code="not_ready", headers={"Retry-After": "5"})
    ask = Ask(prefix=body.code, suffix=body.suffix, max_tokens=body.max_tokens,
              sampling=SamplingParams(temperature=body.temperature, top_k=body.top_k),
              stop=stop_policy(body.suffix, PLAIN_LANGUAGE, line=False).strings)  # as `codeassist complete`
    limit = state.settings.request_timeout_s
    jobs = await anyio.to_thread.run_sync(plan_jobs, ask, state.block_size, state.settings.max_tokens_limit,
                                          deadline_after(limit), state.tokenizer)
    handle = submit(state.scheduler, jobs, state.metrics.reject, stream=False)
    async with cancel_on_disconnect(request, handle):
        (choice,) = await collect(handle, 1, limit + 5.0)
    return CompleteResponse(completion=choice.text, full_code=body.code + choice.text + body.suffix)
