"""remote.fallbackLocal: an unreachable team server is answered by the local backend instead."""

import httpx

import codeassist.remote.client  # noqa: F401  (RemoteBackend imports it lazily; broken, it fails here)
from codeassist.lsp.backends import CompletionRequest, FakeBackend, RemoteBackend, make_backend
from codeassist.lsp.prompt import Prompt
from codeassist.lsp.settings import parse_settings
from codeassist.remote.settings import RemoteSettings


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


REQUEST = CompletionRequest(prompt=Prompt(ids=(1, 2), forced="", prefix="x = ", suffix="", fim=False), max_tokens=8)


async def test_unreachable_server_falls_back_to_the_local_backend() -> None:
    local = FakeBackend(respond=lambda r: "local_answer()")
    backend = RemoteBackend(RemoteSettings(url="http://127.0.0.1:9", timeout_ms=500),
                            transport=httpx.MockTransport(refuse), fallback=local)
    result = await backend.complete(REQUEST)
    assert result.text == "local_answer()" and local.requests == [REQUEST]
    assert backend.status().reason is not None  # the remote failure stays visible in codeassist/status
    await backend.aclose()


async def test_without_fallback_it_returns_nothing_with_a_reason() -> None:
    backend = RemoteBackend(RemoteSettings(url="http://127.0.0.1:9", timeout_ms=500),
                            transport=httpx.MockTransport(refuse))
    result = await backend.complete(REQUEST)
    assert result.text == "" and result.stop_reason == "error" and result.reason
    await backend.aclose()


def test_the_setting_selects_the_fallback() -> None:
    settings, warnings = parse_settings({"backend": "remote", "remote": {"url": "http://x", "fallbackLocal": True}})
    assert not warnings and settings.remote.fallback_local
    backend = make_backend("remote", "default", "cpu", settings.remote)
    assert isinstance(backend, RemoteBackend) and backend.fallback is not None
    assert make_backend("remote", "default", "cpu", RemoteSettings(url="http://x")).fallback is None  # type: ignore[attr-defined]
