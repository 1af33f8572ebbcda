"""RemoteClient, the language server's way to a team server, against the real server and fakes."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from codeassist.model.completion import complete
from codeassist.remote.client import RemoteClient, RemoteError, RemoteSettings
from codeassist.remote.settings import ServerSettings
from tests.remote.conftest import Live, tiny_engine

ARGS = {"max_tokens": 6, "temperature": 0.0, "stop": ["\n\n"]}


def expected(prefix: str, suffix: str = "") -> str:
    """What the server's model says, run here alone (batch 1) with the same prompt budget:
    the context less max_tokens, keeping the text nearest the cursor."""
    text, _ = complete(tiny_engine(), prefix, suffix, max_new_tokens=6, stop=("\n\n",))
    assert text  # a non-empty answer to compare with
    return text


async def test_our_dialect_completes_and_fits_an_editor_window_to_the_context(shared_server: Live) -> None:
    client = RemoteClient(RemoteSettings(url=shared_server.url))
    try:
        text = await client.complete("def f(x):\n    return", "\n", **ARGS)  # type: ignore[arg-type]
        assert text == expected("def f(x):\n    return", "\n")
        # a window bigger than the tiny model's 256-token context still completes, from its end
        big = "x = 1\n" * 300 + "y = "
        assert await client.complete(big, "", **ARGS) == expected(big)  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def test_openai_dialect_with_a_v1_base_url_and_errors_in_one_sentence(shared_server: Live) -> None:
    client = RemoteClient(RemoteSettings(url=shared_server.url + "/v1/", api="openai", model="tiny"))
    wrong = RemoteClient(RemoteSettings(url=shared_server.url, api="openai", model="gpt-9"))
    try:
        text = await client.complete("import os\nx = ", "", **ARGS)  # type: ignore[arg-type]
        assert text == expected("import os\nx = ")
        with pytest.raises(RemoteError) as err:
            await wrong.complete("x", "", **ARGS)  # type: ignore[arg-type]
        assert "404" in str(err.value) and "gpt-9" in str(err.value) and "\n" not in str(err.value)
    finally:
        await client.aclose()
        await wrong.aclose()


async def test_llamacpp_dialect_speaks_infill() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/infill"
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"content": "return x", "stop": True})

    client = RemoteClient(RemoteSettings(url="http://llama:8080", api="llamacpp"), transport=httpx.MockTransport(handler))
    try:
        assert await client.complete("def f(x):\n    ", "\n", **ARGS) == "return x"  # type: ignore[arg-type]
    finally:
        await client.aclose()
    assert seen[0]["input_prefix"] == "def f(x):\n    " and seen[0]["input_suffix"] == "\n"
    assert seen[0]["n_predict"] == 6 and seen[0]["stop"] == ["\n\n"]


async def test_the_api_key_is_sent_and_a_refusal_is_explained(serve) -> None:  # type: ignore[no-untyped-def]
    live: Live = serve(ServerSettings(port=0, api_keys=("k-123",)))
    good = RemoteClient(RemoteSettings(url=live.url, api_key="k-123"))
    bad = RemoteClient(RemoteSettings(url=live.url, api_key="k-999"))
    try:
        assert await good.complete("x", "", **ARGS) == expected("x")  # type: ignore[arg-type]
        with pytest.raises(RemoteError, match="refused the API key"):
            await bad.complete("x", "", **ARGS)  # type: ignore[arg-type]
    finally:
        await good.aclose()
        await bad.aclose()
    assert "k-123" not in repr(good.settings)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_dead_server_fails_fast_with_a_reason() -> None:
    client = RemoteClient(RemoteSettings(url=f"http://127.0.0.1:{closed_port()}", timeout_ms=60_000))
    try:
        with pytest.raises(RemoteError, match="cannot reach"):
            # long before the 60 s timeout: refused connections do not wait for it
            await asyncio.wait_for(client.complete("x", "", **ARGS), 30)  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def test_a_server_that_never_answers_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts (the kernel does), never answers
    client = RemoteClient(RemoteSettings(url=f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_ms=300))
    try:
        with pytest.raises(RemoteError, match="within 300 ms"):
            await client.complete("x", "", **ARGS)  # type: ignore[arg-type]
    finally:
        await client.aclose()
        listener.close()


async def test_cancelling_the_task_cancels_the_request_on_the_server(serve) -> None:  # type: ignore[no-untyped-def]
    live: Live = serve(ServerSettings(port=0, max_batch=1), load=lambda: tiny_engine(0.02))
    client = RemoteClient(RemoteSettings(url=live.url, timeout_ms=30000))
    task = asyncio.create_task(client.complete("def f(x):\n", "", max_tokens=200, temperature=0.0, stop=[]))
    try:
        while live.state.scheduler.in_flight == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(live.metric, 'codeassist_sequences_finished_total{reason="cancelled"}') < 1:
            assert time.monotonic() < deadline, "the server kept generating for a cancelled request"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def test_bad_settings_are_one_sentence() -> None:
    with pytest.raises(RemoteError, match="unknown remote API"):
        RemoteClient(RemoteSettings(url="http://x", api="grpc"))
    with pytest.raises(RemoteError, match="must start with http"):
        RemoteClient(RemoteSettings(url="localhost:8000"))


def test_the_client_side_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, codeassist.remote.client, codeassist.remote.schema; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"




async def test_block_stops_beyond_four_reach_our_server_and_hold(shared_server: Live,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Our server takes 16 stops: the editor's block stops and its next line go in one request and
    the server decodes with all of them (it used to refuse more than 4, and the client cut them)."""
    prefix = "import os\nx = "
    free, _ = complete(tiny_engine(), prefix, "", max_new_tokens=12)
    assert len(free) > 8
    stops = ["\n\n\n", "\ndef ", "\nclass ", "\nif __name__", "\n@", free[4:8]]  # the sixth is met
    submitted: list[tuple[str, ...]] = []
    submit = shared_server.state.scheduler.submit
    monkeypatch.setattr(shared_server.state.scheduler, "submit",
                        lambda jobs, stream=True: submitted.append(jobs[0].stop) or submit(jobs, stream))
    client = RemoteClient(RemoteSettings(url=shared_server.url))
    try:
        got = await client.complete(prefix, "", max_tokens=12, temperature=0.0, stop=stops)
    finally:
        await client.aclose()
    want, _ = complete(tiny_engine(), prefix, "", max_new_tokens=12, stop=tuple(stops))
    assert got == want and len(want) <= 4 < len(free)
    assert submitted == [tuple(stops)]  # one request, every stop decided while decoding
