"""End to end through pytest-lsp (a pygls client): the real server process with a real (tiny) model."""

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

pytestmark = pytest.mark.slow

URI = "file:///tmp/e2e.py"
TEXT = 'import os\n\n\ndef read_lines(path):\n    """Return the lines of a file."""\n    with open(path) as f:\n        \n'


async def start(*args: str) -> LanguageClient:
    cmd = [sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio", *args]
    client: LanguageClient = await ClientServerConfig(server_command=cmd).start()  # type: ignore[assignment]
    caps = types.ClientCapabilities(general=types.GeneralClientCapabilities(
        position_encodings=[types.PositionEncodingKind.Utf16]))
    result = await client.initialize_session(types.InitializeParams(
        capabilities=caps, initialization_options={"codeassist": {"maxTokens": 12}}))
    client.init_result = result  # type: ignore[attr-defined]
    return client


async def get_status(client: LanguageClient) -> dict[str, Any]:
    result = await client.protocol.send_request_async("codeassist/status", {})
    # pygls' client turns untyped results into named tuples
    return dict(result._asdict()) if hasattr(result, "_asdict") else dict(result)


async def wait_ready(client: LanguageClient) -> dict[str, Any]:
    for _ in range(600):
        status = await get_status(client)
        if status["ready"]:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"never ready: {status}")


@pytest.fixture
async def client(tiny_model_path: Path) -> AsyncIterator[LanguageClient]:
    c = await start("--model", str(tiny_model_path), "--device", "cpu")
    yield c
    await c.shutdown_session()
    await c.stop()


async def test_inline_and_classic_completion_with_a_real_model(client: LanguageClient) -> None:
    caps = client.init_result.capabilities  # type: ignore[attr-defined]
    assert caps.inline_completion_provider and caps.completion_provider
    assert caps.position_encoding == "utf-16"
    sync = caps.text_document_sync
    assert sync.change == types.TextDocumentSyncKind.Incremental
    status = await wait_ready(client)
    assert status["backend"] == "local" and status["device"] == "cpu"
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=URI, language_id="python", version=1, text=TEXT)))
    pos = types.Position(line=6, character=8)
    inline = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(URI), position=pos,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert isinstance(inline, types.InlineCompletionList)
    for item in inline.items:
        assert item.range == types.Range(pos, pos) and item.insert_text
    classic = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(URI), position=pos))
    assert isinstance(classic, types.CompletionList)
    status = await get_status(client)
    # the random tiny model may suggest nothing, but then the status says why
    assert status["p50Ms"] is not None
    assert bool(inline.items) or status["lastReason"]


async def test_bad_setting_is_reported_once_and_ignored(client: LanguageClient) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"codeassist": {"maxTokens": "lots"}}))
    await asyncio.wait_for(client.wait_for_notification("window/showMessage"), 10)
    assert any("maxTokens" in m.message for m in client.messages)
    assert (await get_status(client))["backend"] == "local"


async def test_cancel_request_is_answered_with_request_cancelled() -> None:
    client = await start("--backend", "fake", "--fake-delay-ms", "5000")
    try:
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=URI, language_id="python", version=1, text="x = \n")))
        fut = client.protocol.send_request("textDocument/inlineCompletion", types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(URI), position=types.Position(0, 4),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)),
            msg_id="slow-1")
        await asyncio.sleep(0.3)
        client.protocol.notify("$/cancelRequest", types.CancelParams(id="slow-1"))
        with pytest.raises(Exception) as err:
            await asyncio.wait_for(asyncio.wrap_future(fut), 3)  # well before the 5 s generation
        assert getattr(err.value, "code", None) == -32800
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_a_disabled_language_or_excluded_file_says_why(client: LanguageClient) -> None:
    await wait_ready(client)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"codeassist": {"languages": ["rust"]}}))
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=URI, language_id="python", version=1, text=TEXT)))
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(URI), position=types.Position(line=6, character=8),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))
    inline = await client.text_document_inline_completion_async(params)
    assert inline is None or not inline.items
    assert "off for python" in (await get_status(client))["lastReason"]
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"codeassist": {"languages": [], "exclude": ["/tmp/*"]}}))
    await client.text_document_inline_completion_async(params)
    assert "exclude" in (await get_status(client))["lastReason"]
