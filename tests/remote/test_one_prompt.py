"""One cursor, one prompt (issue 17): the language server's pipeline, `codeassist complete`, the seed
API, the OpenAI endpoint and the remote backend against our server all build it with the one prompt
builder, healing included."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import torch

from codeassist.lsp.backends import Backend, FakeBackend, RemoteBackend
from codeassist.lsp.context import Snippet, build_context
from codeassist.lsp.pipeline import Pipeline
from codeassist.lsp.settings import Settings
from codeassist.model.completion import complete
from codeassist.model.engine import Engine, GenerationRequest
from codeassist.model.prompting import build_prompt
from codeassist.remote.events import Handle, SeqState
from codeassist.remote.generation import plan_jobs
from codeassist.remote.openai_api import to_ask
from codeassist.remote.scheduler import Job
from codeassist.remote.schema import CompletionRequest
from codeassist.remote.settings import RemoteSettings, ServerSettings
from tests.remote.conftest import Live, tiny_engine

DOC = "def total(values):\n    result = 0\n    for v in values:\n        result += v\n    retur\n\nprint(total([1, 2]))\n"
CURSOR = DOC.index("retur") + len("retur")
PREFIX, SUFFIX = DOC[:CURSOR], DOC[CURSOR:]
SNIPPET = Snippet("util.py", "def mean(values):\n    return total(values) / len(values)", 0.5)

Sent = tuple[tuple[int, ...], bytes]  # the prompt's ids and the forced (healed) bytes


def spy_on_the_scheduler(live: Live, monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    sent: list[Sent] = []
    submit = live.state.scheduler.submit

    def spy(jobs: list[Job], stream: bool = True) -> Any:
        sent.append((jobs[0].prompt, jobs[0].forced_prefix))
        return submit(jobs, stream)

    monkeypatch.setattr(live.state.scheduler, "submit", spy)
    return sent


async def pipeline_prompt(backend: Backend, snippets: tuple[Snippet, ...] = ()) -> None:
    ctx = build_context("file:///a.py", "python", DOC, CURSOR, snippets)
    pipe = Pipeline(backend, Settings(cache=False, copy=False, max_tokens=8))
    got = await pipe.complete(ctx, invoked=True)
    assert got.reason is None or "remote" not in got.reason, got.reason


def spy_engine(sent: list[Sent]) -> Engine:
    engine = tiny_engine()
    generate: Callable[..., Any] = engine.generate

    def spy(request: GenerationRequest, cancel: Any = None) -> Any:
        sent.append((request.prompt, request.forced_prefix))
        return generate(request, cancel)

    engine.generate = spy  # type: ignore[method-assign]
    return engine


async def test_every_entry_point_builds_the_same_prompt_for_one_cursor(
        serve: Callable[..., Live], monkeypatch: pytest.MonkeyPatch) -> None:
    want = build_prompt(PREFIX, SUFFIX, 1 << 20)
    assert want.forced == " retur" and want.fim  # healed back to the word's start, code after the cursor
    expected = (want.ids, want.forced_prefix)

    editor = FakeBackend(lambda r: "n result")
    await pipeline_prompt(editor)
    assert (editor.requests[0].prompt.ids, editor.requests[0].prompt.forced_prefix) == expected

    local: list[Sent] = []
    complete(spy_engine(local), PREFIX, SUFFIX, max_new_tokens=8)
    assert local == [expected]

    live = serve()
    server = spy_on_the_scheduler(live, monkeypatch)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        seed = http.post("/complete", json={"code": PREFIX, "suffix": SUFFIX, "max_tokens": 8})
        openai = http.post("/v1/completions", json={"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 8})
    assert seed.status_code == openai.status_code == 200, (seed.text, openai.text)
    remote = RemoteBackend(RemoteSettings(url=live.url, timeout_ms=30000))
    try:
        await pipeline_prompt(remote)
    finally:
        await remote.aclose()
    assert server == [expected] * 3  # seed API, OpenAI endpoint, the editor's remote backend


async def test_the_remote_backend_sends_the_context_and_our_server_prompts_as_the_editor(
        serve: Callable[..., Live], monkeypatch: pytest.MonkeyPatch) -> None:
    editor = FakeBackend(lambda r: "n result")
    await pipeline_prompt(editor, (SNIPPET,))
    made = editor.requests[0].prompt
    assert "Compare this snippet from util.py" in made.context and made.text_prefix == made.context + PREFIX
    live = serve()
    server = spy_on_the_scheduler(live, monkeypatch)
    bodies: list[bytes] = []
    seen = RemoteBackend(RemoteSettings(url=live.url, timeout_ms=30000))
    monkeypatch.setattr(httpx.AsyncClient, "post", _recording(httpx.AsyncClient.post, bodies))
    try:
        await pipeline_prompt(seen, (SNIPPET,))
    finally:
        await seen.aclose()
    assert b'"healed_prefix":" retur"' in bodies[0].replace(b": ", b":")
    assert server == [(made.ids, made.forced_prefix)]


def _recording(post: Callable[..., Any], bodies: list[bytes]) -> Callable[..., Any]:
    async def record(self: httpx.AsyncClient, url: str, **kwargs: Any) -> Any:
        bodies.append(httpx.Request("POST", "http://x", json=kwargs.get("json")).content)
        return await post(self, url, **kwargs)

    return record


async def test_our_server_honours_the_healed_prefix_it_is_sent(serve: Callable[..., Live],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    live = serve()
    server = spy_on_the_scheduler(live, monkeypatch)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        for healed in ("ur", ""):  # not where the server would heal (" retur"): it heals where it is told
            r = http.post("/v1/completions", json={"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 4,
                                                   "healed_prefix": healed})
            assert r.status_code == 200, r.text
    want = [build_prompt(PREFIX, SUFFIX, 1 << 20, heal=h) for h in ("ur", "")]
    assert server == [(p.ids, p.forced_prefix) for p in want]
    assert [p.forced for p in want] == ["ur", ""]



async def test_our_server_ends_a_block_at_the_dedent_it_is_sent_as_it_decodes() -> None:
    """`dedent_line_prefix` (our extension) reaches the sequence's stop rules: the text stream of a
    job planned from the request stops at the first line dedented below the block."""
    state = SimpleNamespace(settings=ServerSettings(), model_name="tiny")
    tk = tiny_engine().tokenizer
    out = "x = 1\n    y = 2\nprint(x)\n"
    for dedent, want in (("    ", "x = 1\n    y = 2"), (None, out)):
        body = CompletionRequest(prompt="def f():\n    ", max_tokens=32, dedent_line_prefix=dedent)
        (job,) = plan_jobs(to_ask(body, state), 256, 64, 1e18, tk)  # type: ignore[arg-type]
        seq = SeqState(job, Handle(asyncio.get_running_loop(), threading.Condition()), 0, torch.device("cpu"), tk)
        for token in tk.encode(job.forced_prefix.decode() + out):  # the healed text comes first
            seq.text.push(token)
        seq.text.finish()
        assert seq.text.stopped == (dedent is not None)
        assert seq.text.text == want
