"""The server process against hostile or broken clients (RELIABILITY.md), with the fake backend."""

import asyncio
import contextlib
import json
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from codeassist.lsp.client import LspClient, LspError, frame

pytestmark = pytest.mark.slow

URI = "file:///tmp/robust.py"


def server_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "codeassist.cli.main", "lsp", *extra]


@pytest.fixture
async def raw() -> AsyncIterator[LspClient]:
    client = await LspClient.start(server_cmd("--backend", "fake"))
    yield client
    if client.proc.returncode is None:
        client.proc.kill()
        await client.proc.wait()


@pytest.fixture
async def ready(raw: LspClient) -> LspClient:
    await raw.initialize()
    return raw


def open_doc(client: LspClient, text: str, uri: str = URI) -> None:
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                            "version": 1, "text": text}})


def inline(client: LspClient, line: int, character: int, uri: str = URI) -> tuple[int, asyncio.Future]:
    return client.send_request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
        "context": {"triggerKind": 2}})


async def still_usable(client: LspClient) -> None:
    status = await client.request("codeassist/status", {}, timeout=5)
    assert status["backend"] == "fake"


async def test_bad_header_then_valid_request(ready: LspClient) -> None:
    ready.write(b"Content-Lengthh: 12\r\n\r\n{\"x\": 1}\r\nnonsense\r\n\r\n", raw=True)
    await still_usable(ready)


async def test_bad_json_is_answered_with_parse_error(ready: LspClient) -> None:
    ready.write(b'{"jsonrpc": "2.0", "id": 5, "method": ', raw=False)
    await still_usable(ready)
    errors = [r for r in ready.responses if "error" in r]
    assert errors and errors[0]["error"]["code"] == -32700 and errors[0]["id"] is None


async def test_deeply_nested_json_is_a_parse_error(ready: LspClient) -> None:
    ready.write(frame(b"[" * 200_000), raw=True)
    await still_usable(ready)
    assert [r["error"]["code"] for r in ready.responses if "error" in r] == [-32700]


async def test_one_gib_content_length_does_not_hang(ready: LspClient) -> None:
    ready.write(b"Content-Length: 1073741824\r\n\r\n" + b"x" * 4096, raw=True)
    await still_usable(ready)  # answered (within its 5 s wait), not blocked reading a gigabyte


async def test_wrongly_typed_params_get_invalid_params_for_the_same_id(ready: LspClient) -> None:
    msg_id, fut = ready.send_request("textDocument/inlineCompletion", {
        "textDocument": {"uri": URI}, "position": {"line": "three", "character": None}})
    with pytest.raises(LspError) as err:
        await asyncio.wait_for(fut, 5)
    assert err.value.code == -32602
    assert [r["id"] for r in ready.responses if "error" in r] == [msg_id]
    with pytest.raises(LspError) as err:
        await ready.request("no/such/method", {}, timeout=5)
    assert err.value.code == -32601


async def test_valid_request_after_a_thousand_bad_messages_and_one_user_message(ready: LspClient) -> None:
    bad = [b"Content-Length: 5\r\n\r\n{{{{{", b"Bogus: header\r\n\r\n", frame(b"[1, 2, 3]"),
           frame(b'{"jsonrpc": "1.0", "id": 1}'), frame(b'{"jsonrpc": "2.0", "id": {}, "method": "x"}')]
    ready.write(b"".join(bad[i % len(bad)] for i in range(1000)), raw=True)
    await still_usable(ready)
    shown = [n for n in ready.notifications if n["method"] == "window/showMessage"]
    assert len(shown) == 1  # rate-limited: one message a minute at most
    assert "Traceback" not in json.dumps(ready.responses)


async def test_handler_failure_sends_no_traceback(ready: LspClient) -> None:
    open_doc(ready, "x = 1  # RAISE_IN_BACKEND\ny = \n")
    _, fut = inline(ready, 1, 4)
    with pytest.raises(LspError) as err:
        await asyncio.wait_for(fut, 5)
    assert err.value.code == -32603
    text = json.dumps(ready.responses)
    assert "Traceback" not in text and 'File \\"' not in text and "scripted failure" not in text
    await still_usable(ready)


async def test_lifecycle_before_initialize_and_after_shutdown(raw: LspClient) -> None:
    with pytest.raises(LspError) as err:
        await raw.request("codeassist/status", {}, timeout=5)
    assert err.value.code == -32002
    await raw.initialize()
    await raw.request("shutdown", None, timeout=5)
    with pytest.raises(LspError) as err:
        await raw.request("codeassist/status", {}, timeout=5)
    assert err.value.code == -32600
    raw.notify("exit")
    assert await asyncio.wait_for(raw.proc.wait(), 5) == 0


async def test_exit_without_shutdown_is_exit_code_1(ready: LspClient) -> None:
    ready.notify("exit")
    assert await asyncio.wait_for(ready.proc.wait(), 5) == 1  # the wait's timeout catches a hang


async def test_server_exits_when_the_editor_process_is_gone(raw: LspClient) -> None:
    editor = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(0.5)")
    await raw.initialize(process_id=editor.pid)
    await editor.wait()
    assert await asyncio.wait_for(raw.proc.wait(), 10) != 0


# The server as `codeassist lsp --backend fake` runs it, plus one request that reads the fake
# backend's counters: how many decode steps it ran, and how many of its generations were cancelled.
COUNTING_SERVER = textwrap.dedent("""
    import os, sys
    from codeassist.lsp.backends import FakeBackend
    from codeassist.lsp.cli import scripted_response
    from codeassist.lsp.server import CodeassistServer, serve_stdio
    from codeassist.lsp.settings import Settings

    fake = FakeBackend(scripted_response, steps=100_000, step_s=0.01)  # a generation of ~17 minutes
    server = CodeassistServer(Settings(backend="fake"), lambda settings: fake)

    @server.feature("test/fakeBackend")
    def counters(ls, params):
        return {"stepsRun": fake.steps_run, "cancelled": fake.cancelled, "requests": len(fake.requests)}

    code = serve_stdio(server)
    sys.stderr.flush()
    os._exit(code)
""")


async def counters(client: LspClient) -> dict[str, int]:
    result: dict[str, int] = await client.request("test/fakeBackend", {}, timeout=5)
    return result


async def test_status_answers_while_a_generation_runs_and_cancel_stops_it() -> None:
    client = await LspClient.start([sys.executable, "-c", COUNTING_SERVER])
    try:
        await client.initialize()
        open_doc(client, "import os\nx = \n")
        gen_id, gen = inline(client, 1, 4)
        async with asyncio.timeout(30):
            while (await counters(client))["stepsRun"] == 0:  # the generation has begun
                await asyncio.sleep(0.01)
        for _ in range(100):
            await client.request("codeassist/status", {}, timeout=5)
        assert not gen.done()  # every status answer came while the generation was still running
        client.notify("$/cancelRequest", {"id": gen_id})
        with pytest.raises(LspError) as err:
            await asyncio.wait_for(gen, 5)  # long before the generation would end
        assert err.value.code == -32800
        # the backend's own work stopped: its generation was cancelled, not left running
        async with asyncio.timeout(10):
            while (await counters(client))["cancelled"] == 0:
                await asyncio.sleep(0.01)
        stopped = await counters(client)
        assert stopped["cancelled"] == 1 and stopped["requests"] == 1
        assert 0 < stopped["stepsRun"] < 100_000
        await asyncio.sleep(0.2)  # twenty decode steps' time: a generation still running would step on
        assert (await counters(client))["stepsRun"] == stopped["stepsRun"]
    finally:
        await client.close()


@pytest.mark.parametrize(("encoding", "end"), [("utf-16", 10), ("utf-8", 16), ("utf-32", 9)])
async def test_positions_in_each_encoding(encoding: str, end: int) -> None:
    client = await LspClient.start(server_cmd("--backend", "fake"))
    try:
        result = await client.initialize(encodings=[encoding])
        assert result["capabilities"]["positionEncoding"] == encoding
        open_doc(client, "# ECHO\ns = '😀漢字'\n")
        # out of range: clamped to the end of the line, in the negotiated units
        res = await asyncio.wait_for(inline(client, 1, 999)[1], 5)
        assert res["items"][0]["range"]["start"] == {"line": 1, "character": end}
        # an incremental edit addressed in the negotiated units lands after the emoji
        after_emoji = {"utf-16": 7, "utf-8": 9, "utf-32": 6}[encoding]
        client.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": 2}, "contentChanges": [
            {"range": {"start": {"line": 1, "character": after_emoji}, "end": {"line": 1, "character": after_emoji}},
             "text": "Z"}]})
        res = await asyncio.wait_for(inline(client, 1, after_emoji + 1)[1], 5)
        assert res["items"][0]["insertText"].endswith("s = '\\U0001f600Z")
    finally:
        await client.close()


async def test_missing_model_still_answers_and_says_why(tmp_path: Path) -> None:
    client = await LspClient.start(server_cmd("--model", str(tmp_path / "missing.safetensors")))
    try:
        await client.initialize()
        status = await client.wait_ready(timeout=60)
        assert status["ready"] is False and status["lastReason"]
        assert "\n" not in status["lastReason"]
        open_doc(client, "x = \n")
        assert (await asyncio.wait_for(inline(client, 0, 4)[1], 5))["items"] == []
    finally:
        assert await client.close() == 0


async def test_tcp_transport_binds_loopback_and_serves_one_editor() -> None:
    proc = await asyncio.create_subprocess_exec(
        *server_cmd("--tcp", ":0", "--backend", "fake"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        host, port = line.rsplit(" ", 1)[-1].strip().rsplit(":", 1)
        assert host == "127.0.0.1"
        reader, writer = await asyncio.open_connection(host, int(port))

        async def call(msg_id: int, method: str, params: object) -> dict:
            writer.write(frame({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}))
            await writer.drain()
            header = await reader.readuntil(b"\r\n\r\n")
            length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            return json.loads(await reader.readexactly(length))

        assert "capabilities" in (await call(1, "initialize", {"processId": None, "capabilities": {}}))["result"]
        assert (await call(2, "codeassist/status", {}))["result"]["backend"] == "fake"
        await call(3, "shutdown", None)
        writer.write(frame({"jsonrpc": "2.0", "method": "exit"}))
        await writer.drain()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
