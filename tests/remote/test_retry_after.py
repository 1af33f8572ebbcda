"""A busy team server (429 or 503 with Retry-After): the client stays away for as long as it asked,
the reason is shown in codeassist/status, and remote.fallbackLocal answers meanwhile."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeassist.lsp.backends import CompletionRequest, FakeBackend, RemoteBackend
from codeassist.lsp.client import LspClient
from codeassist.lsp.prompt import Prompt
from codeassist.remote.client import RemoteClient, RemoteError, RemoteSettings

URL = "http://127.0.0.1:9"
OK = {"choices": [{"text": "remote_answer()"}]}


class Busy:
    """A transport that answers `status` with these headers, then 200 once `busy` is cleared."""

    def __init__(self, status: int = 429, headers: dict[str, str] | None = None) -> None:
        self.status, self.headers, self.busy, self.requests = status, headers or {}, True, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.busy:
            body = {"error": {"message": "the server is at capacity; retry later", "code": "queue_full"}}
            return httpx.Response(self.status, headers=self.headers, json=body)
        return httpx.Response(200, json=OK)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def ask(client: RemoteClient) -> str:
    return await client.complete("x = ", "", max_tokens=4, temperature=0.0, stop=[])


@pytest.mark.parametrize("status", [429, 503])
async def test_the_client_waits_as_long_as_retry_after_says(status: int) -> None:
    server, clock = Busy(status, {"Retry-After": "7"}), Clock()
    client = RemoteClient(RemoteSettings(url=URL), httpx.MockTransport(server), clock=clock)
    with pytest.raises(RemoteError) as first:
        await ask(client)
    assert f"answered {status}: the server is at capacity; retry later; next try in 7 s" in str(first.value)
    server.busy = False
    clock.now += 6.5  # still inside the window: no request leaves the client
    with pytest.raises(RemoteError) as waiting:
        await ask(client)
    assert server.requests == 1
    assert f"answered {status}" in str(waiting.value) and "next try in 1 s" in str(waiting.value)
    clock.now += 0.6  # past it: the server is asked again
    assert await ask(client) == "remote_answer()" and server.requests == 2
    await client.aclose()


async def test_retry_after_as_a_date_and_without_the_header() -> None:
    import time

    server, clock = Busy(429, {"Retry-After": formatdate(time.time() + 120, usegmt=True)}), Clock()
    client = RemoteClient(RemoteSettings(url=URL), httpx.MockTransport(server), clock=clock)
    with pytest.raises(RemoteError, match=r"next try in 1[12]\d s"):
        await ask(client)
    clock.now += 60
    with pytest.raises(RemoteError):
        await ask(client)
    assert server.requests == 1
    await client.aclose()
    # no Retry-After: nothing to honour, the next call asks again
    server = Busy(429)
    client = RemoteClient(RemoteSettings(url=URL), httpx.MockTransport(server), clock=Clock())
    for _ in range(2):
        with pytest.raises(RemoteError, match="answered 429"):
            await ask(client)
    assert server.requests == 2
    await client.aclose()


REQUEST = CompletionRequest(prompt=Prompt(ids=(1, 2), forced="", prefix="x = ", suffix="", fim=False), max_tokens=8)


async def test_the_backend_falls_back_while_the_server_asks_to_wait() -> None:
    server = Busy(429, {"Retry-After": "30"})
    local = FakeBackend(respond=lambda r: "local_answer()")
    backend = RemoteBackend(RemoteSettings(url=URL), transport=httpx.MockTransport(server), fallback=local)
    for _ in range(3):
        assert (await backend.complete(REQUEST)).text == "local_answer()"
    assert server.requests == 1 and len(local.requests) == 3
    assert "answered 429" in str(backend.status().reason)
    await backend.aclose()


# -- the language server process, against a busy server on loopback ----------------------------

class BusyServer(ThreadingHTTPServer):
    requests = 0


class BusyHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        assert isinstance(self.server, BusyServer)
        self.server.requests += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": {"message": "the server is at capacity; retry later"}}).encode()
        self.send_response(429)
        self.send_header("Retry-After", "120")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def busy_server() -> Iterator[BusyServer]:
    server = BusyServer(("127.0.0.1", 0), BusyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


URI = "file:///tmp/busy.py"
TEXT = "x = \n"  # at (0, 4) the tiny model suggests visible text


async def lsp_on(busy: BusyServer, model: str = "default", **remote: object) -> LspClient:
    client = await LspClient.start([sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio"])
    url = f"http://127.0.0.1:{busy.server_address[1]}"
    await client.initialize({"codeassist": {"backend": "remote", "cache": False, "device": "cpu", "model": model,
                                            "remote": {"url": url, "timeoutMs": 5000, **remote}}})
    client.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python",
                                                            "version": 1, "text": TEXT}})
    return client


async def inline(client: LspClient) -> list[dict[str, Any]]:
    result = await client.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": URI}, "position": {"line": 0, "character": 4},
        "context": {"triggerKind": 1}}, timeout=60)
    items: list[dict[str, Any]] = result["items"]
    return items


@pytest.mark.slow
async def test_the_language_server_shows_the_reason_and_stays_away(busy_server: BusyServer) -> None:
    client = await lsp_on(busy_server)
    try:
        assert await inline(client) == []
        status = await client.request("codeassist/status", {})
        assert "answered 429" in status["lastReason"] and "next try in 120 s" in status["lastReason"]
        assert await inline(client) == []  # the editor asks again: the server is not asked
        status = await client.request("codeassist/status", {})
        assert "answered 429" in status["lastReason"] and "next try in" in status["lastReason"]
        assert busy_server.requests == 1
    finally:
        await client.close()


@pytest.mark.slow
async def test_the_language_server_falls_back_to_the_local_model(busy_server: BusyServer,
                                                                 tiny_model_file: Path) -> None:
    client = await lsp_on(busy_server, str(tiny_model_file), fallbackLocal=True)
    try:
        async with asyncio.timeout(60):
            while not (items := await inline(client)):  # the local model loads on the first failure
                await asyncio.sleep(0.1)
        assert items[0]["insertText"].strip()
        assert busy_server.requests == 1  # every later request went straight to the local model
    finally:
        await client.close()
