"""A request the user asked for waits for the model to load, up to its time budget; typing does not wait."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from pathlib import Path

import pytest

from codeassist.lsp.backends import BackendStatus, CompletionRequest, FakeBackend, LocalBackend
from codeassist.lsp.client import LspClient
from codeassist.lsp.context import build_context
from codeassist.lsp.pipeline import Pipeline
from codeassist.lsp.prompt import prompt_for
from codeassist.lsp.settings import Settings

DOC = "import os\n\ndef main():\n    \n\nmain()\n"
CUR = DOC.index("    \n") + 4
LOADING = "the model is still loading"


def ctx():  # type: ignore[no-untyped-def]
    return build_context("file:///a.py", "python", DOC, CUR)


class LoadingBackend(FakeBackend):
    """Not ready until `finish_loading()`; records each wait and its timeout."""

    def __init__(self) -> None:
        super().__init__(lambda r: "print(os.getcwd())", ready=False, reason=LOADING)
        self.loaded = asyncio.Event()
        self.waiting = asyncio.Event()
        self.waits: list[float] = []

    def finish_loading(self) -> None:
        self.ready = True
        self.loaded.set()

    async def wait_until_ready(self, timeout_s: float) -> BackendStatus:
        self.waits.append(timeout_s)
        self.waiting.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loaded.wait(), timeout_s)
        return self.status()


async def test_an_invoked_request_waits_for_the_model() -> None:
    backend = LoadingBackend()
    pipe = Pipeline(backend, Settings(time_budget_ms=20000))
    asked = asyncio.ensure_future(pipe.complete(ctx(), invoked=True))
    await asyncio.wait_for(backend.waiting.wait(), 10)
    assert not asked.done()
    backend.finish_loading()
    got = await asyncio.wait_for(asked, 10)
    assert got.text == "print(os.getcwd())" and got.reason is None
    assert backend.waits == [20.0]  # up to the time budget


async def test_a_typing_request_does_not_wait() -> None:
    backend = LoadingBackend()
    pipe = Pipeline(backend, Settings(time_budget_ms=20000))
    got = await asyncio.wait_for(pipe.complete(ctx(), invoked=False), 10)  # never loaded: no wait
    assert got.text == "" and got.reason == LOADING
    assert backend.waits == [] and backend.requests == []


async def test_an_invoked_request_gives_up_at_the_time_budget() -> None:
    backend = LoadingBackend()
    pipe = Pipeline(backend, Settings(time_budget_ms=50))
    got = await asyncio.wait_for(pipe.complete(ctx(), invoked=True), 10)
    assert got.text == "" and got.reason == LOADING
    assert backend.waits == [0.05] and backend.requests == []


async def test_local_backend_waits_for_its_load_without_blocking_the_loop(
        tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from codeassist.model.engine import Engine

    release = threading.Event()
    real_load = Engine.load

    def held_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        release.wait(60)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(Engine, "load", staticmethod(held_load))
    backend = LocalBackend(str(tiny_model_path), device="cpu")
    try:
        early = await backend.wait_until_ready(0.0)  # starts the load; gives up at once
        assert not early.ready and "loading" in (early.reason or "")
        waiting = asyncio.ensure_future(backend.wait_until_ready(60))
        await asyncio.sleep(0)
        assert not waiting.done()
        # the load is released from the event loop: a wait that blocked the loop would never see it
        asyncio.get_running_loop().call_soon(release.set)
        status = await asyncio.wait_for(waiting, 90)
        assert status.ready and status.context_tokens == 256
        after = await backend.wait_until_ready(0.0)  # loaded: returns at once
        assert after.ready
        prompt = prompt_for(build_context("file:///b.py", "python", "x = ", 4), 128)
        assert (await backend.complete(CompletionRequest(prompt, max_tokens=2))).stop_reason != "unavailable"
    finally:
        release.set()
        await backend.aclose()


async def test_local_backend_reports_a_failed_load_at_once(tmp_path: Path) -> None:
    backend = LocalBackend(str(tmp_path / "missing.safetensors"), device="cpu")
    try:
        status = await asyncio.wait_for(backend.wait_until_ready(60), 90)
        assert not status.ready and status.reason and "loading" not in status.reason
    finally:
        await backend.aclose()


@pytest.mark.slow
async def test_the_server_answers_alt_backslash_while_the_default_model_loads() -> None:
    """The real server on the embedded default, asked at once after `initialize`: the request made
    while typing (triggerKind 2) comes back empty because the model is still loading, the one the
    user asked for (triggerKind 1: Alt+\\ in VS Code, or a classic completion from Neovim's omnifunc) waits
    for the model and gets its suggestion."""
    cmd = [sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio", "--device", "cpu"]
    client = await LspClient.start(cmd)
    try:
        await client.initialize({"codeassist": {"timeBudgetMs": 30000, "maxTokens": 12, "cache": False}})
        uri = "file:///tmp/wait.py"
        text = "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return f.\n"
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                "version": 1, "text": text}})
        position = {"line": 5, "character": len("        return f.")}

        def inline(kind: int) -> asyncio.Future:  # type: ignore[type-arg]
            return client.send_request("textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": kind}})[1]

        _, loading = client.send_request("codeassist/status", {})  # the three are sent back to back
        typing = inline(2)
        asked = inline(1)
        classic = client.send_request("textDocument/completion", {  # Neovim 0.11's omnifunc (Ctrl-X Ctrl-O)
            "textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 1}})[1]
        status = await asyncio.wait_for(loading, 60)
        assert status["ready"] is False and "loading" in status["lastReason"], status
        assert (await asyncio.wait_for(typing, 60))["items"] == []
        result = await asyncio.wait_for(asked, 120)
        assert result["items"] and result["items"][0]["insertText"].strip(), result
        listed = await asyncio.wait_for(classic, 120)
        assert listed["items"] and listed["items"][0]["textEdit"]["newText"].strip(), listed
    finally:
        assert await client.close() == 0
