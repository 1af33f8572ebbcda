"""End to end through pytest-lsp (a pygls client): the real server process.

The completion, settings and disabled-language tests run it on a real model (the tiny random one
of `tiny_model_path`); the cancel test runs it on the deterministic fake backend (`--backend fake`).
"""

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from codeassist.lsp.context import build_context
from codeassist.lsp.prompt import prompt_for
from codeassist.model.engine import Engine, GenerationRequest, StopRules

pytestmark = pytest.mark.slow

URI = "file:///tmp/e2e.py"
TEXT = 'import os\n\n\ndef read_lines(path):\n    """Return the lines of a file."""\n    with open(path) as f:\n        \n'
MAX_TOKENS = 12
# Where the tiny random model suggests visible text. (At TEXT's cursor it suggests only spaces,
# which the post-processing rightly drops, so an empty answer there would prove nothing.)
ASSIGN_URI, ASSIGN = "file:///tmp/e2e_assign.py", "x = \n"


async def start(*args: str) -> LanguageClient:
    cmd = [sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio", *args]
    client: LanguageClient = await ClientServerConfig(server_command=cmd).start()  # type: ignore[assignment]
    caps = types.ClientCapabilities(general=types.GeneralClientCapabilities(
        position_encodings=[types.PositionEncodingKind.Utf16]))
    result = await client.initialize_session(types.InitializeParams(
        capabilities=caps, initialization_options={"codeassist": {
            "maxTokens": MAX_TOKENS, "timeBudgetMs": 30000}}))  # no budget cut: the output is deterministic
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


def model_continuation(model_path: Path, text: str, offset: int) -> str:
    """What the model itself writes at the cursor: a greedy run in this process, on the prompt the
    server builds, with no stop strings and no post-processing (the server may only cut it)."""
    engine = Engine.load(str(model_path), device="cpu")
    ctx = build_context(ASSIGN_URI, "python", text, offset)
    prompt = prompt_for(ctx, engine.config.block_size - MAX_TOKENS)
    result = engine.generate(GenerationRequest(prompt=prompt.ids, forced_prefix=prompt.forced.encode(),
                                               stop=StopRules(max_new_tokens=MAX_TOKENS)))
    assert result.text.startswith(prompt.forced)
    return result.text[len(prompt.forced):]


async def test_inline_and_classic_completion_with_a_real_model(client: LanguageClient,
                                                               tiny_model_path: Path) -> None:
    caps = client.init_result.capabilities  # type: ignore[attr-defined]
    assert caps.inline_completion_provider and caps.completion_provider
    assert caps.position_encoding == "utf-16"
    sync = caps.text_document_sync
    assert sync.change == types.TextDocumentSyncKind.Incremental
    reference = asyncio.ensure_future(asyncio.to_thread(model_continuation, tiny_model_path, ASSIGN, 4))
    status = await wait_ready(client)
    assert status["backend"] == "local" and status["device"] == "cpu"
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=ASSIGN_URI, language_id="python", version=1, text=ASSIGN)))
    pos = types.Position(line=0, character=4)  # after "x = "
    expected = await reference
    assert expected.strip()
    inline = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(ASSIGN_URI), position=pos,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert isinstance(inline, types.InlineCompletionList)
    status = await get_status(client)
    assert len(inline.items) == 1, status["lastReason"]
    (item,) = inline.items
    text = str(item.insert_text)
    # the model's own words (post-processing may only shorten them), inserted at the cursor
    assert text.strip() and expected.startswith(text), (text, expected)
    assert item.range == types.Range(pos, pos)
    classic = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(ASSIGN_URI), position=pos,
        context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked)))
    assert isinstance(classic, types.CompletionList)
    (entry,) = classic.items
    assert entry.text_edit is not None and entry.text_edit.new_text == text  # no word typed before the cursor
    assert entry.text_edit.range == types.Range(pos, pos)  # type: ignore[union-attr]
    assert entry.label == text.strip()
    status = await get_status(client)
    assert status["p50Ms"] is not None and status["lastReason"] is None


async def test_bad_setting_is_reported_once_and_ignored(client: LanguageClient) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"codeassist": {"maxTokens": "lots", "temperature": "hot"}}))  # two bad values
    await asyncio.wait_for(client.wait_for_notification("window/showMessage"), 10)
    # a request after the change: every message the change caused has arrived before its answer
    assert (await get_status(client))["backend"] == "local"
    assert len(client.messages) == 1, [m.message for m in client.messages]
    assert "maxTokens" in client.messages[0].message


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
