"""The language server's remote backend end to end: a real language server process (pytest-lsp)
asking a real team server (uvicorn on loopback), and the same against a dead address."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import torch
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from codeassist.model import tokenizer as tok
from codeassist.model.engine import Engine
from tests.conftest import make_tiny
from tests.remote.conftest import Live

pytestmark = pytest.mark.slow

URI = "file:///tmp/remote_e2e.py"
TEXT = "def area(r):\n    return\n"
POS = types.Position(line=1, character=10)  # after "    return"
WORD = " x"
# Token healing backs the prompt off to before " return" and lets the model spell it out: this
# model then picks " returns" (it extends the word at the cursor), and " x" after it. Without
# healing the prompt would end in " return" and the model would say " x x x x".
HEALED = "s x x x"  # maxTokens 4: " returns" (less the " return" typed) and three " x"


class FixedHead(torch.nn.Module):
    """An output layer with fixed preferences, so the suggestion is known in advance."""

    def __init__(self, scores: dict[int, float], vocab: int) -> None:
        super().__init__()
        self.scores = scores
        self.vocab = vocab

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*x.shape[:-1], self.vocab, dtype=x.dtype, device=x.device)
        for token, score in self.scores.items():
            logits[..., token] = score
        return logits


def scripted_engine() -> Engine:
    """Always " x", except while token healing must first spell out the cursor's " return": then
    " returns", the best of the tokens that begin with it."""
    model = make_tiny()
    (word,) = tok.encode(WORD)
    (returns,) = tok.encode(" returns")
    model.lm_head = FixedHead({word: 10.0, returns: 5.0}, model.config.vocab_size)
    return Engine(model, torch.device("cpu"), name="scripted")


async def start_lsp(remote: dict[str, Any]) -> LanguageClient:
    cmd = [sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio"]
    client: LanguageClient = await ClientServerConfig(server_command=cmd).start()  # type: ignore[assignment]
    options = {"codeassist": {"backend": "remote", "remote": remote, "maxTokens": 4}}
    await client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities(),
                                                           initialization_options=options))
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=URI, language_id="python", version=1, text=TEXT)))
    return client


async def inline(client: LanguageClient) -> list[str]:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(URI), position=POS,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    return [str(i.insert_text) for i in items]


async def status(client: LanguageClient) -> dict[str, Any]:
    result = await client.protocol.send_request_async("codeassist/status", {})
    return dict(result._asdict()) if hasattr(result, "_asdict") else dict(result)


@pytest.fixture
async def lsp() -> AsyncIterator[Callable[[dict[str, Any]], Any]]:
    clients: list[LanguageClient] = []

    async def start(remote: dict[str, Any]) -> LanguageClient:
        c = await start_lsp(remote)
        clients.append(c)
        return c

    yield start
    for c in clients:
        await c.shutdown_session()
        await c.stop()


async def test_the_language_server_completes_through_a_live_team_server(serve, lsp) -> None:  # type: ignore[no-untyped-def]
    live: Live = serve(load=scripted_engine)
    client = await lsp({"url": live.url, "api": "codeassist", "timeoutMs": 10000})
    texts = await inline(client)
    assert texts == [HEALED], (texts, (await status(client))["lastReason"])
    st = await status(client)
    assert st["backend"] == "remote" and not st["lastReason"]
    assert await asyncio.to_thread(live.metric, "codeassist_generated_tokens_total") >= 1


async def test_the_openai_dialect_reaches_the_same_server(serve, lsp) -> None:  # type: ignore[no-untyped-def]
    live: Live = serve(load=scripted_engine)
    client = await lsp({"url": live.url + "/v1", "api": "openai", "model": "scripted", "timeoutMs": 10000})
    texts = await inline(client)
    assert texts == [HEALED]


async def test_against_a_dead_server_it_answers_within_the_timeout_with_a_reason(lsp) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = await lsp({"url": f"http://127.0.0.1:{port}", "timeoutMs": 60000})  # the longest allowed
    # answered long before the 60 s timeout: a refused connection does not wait for it
    assert await asyncio.wait_for(inline(client), 30) == []  # (the first also pays lazy imports)
    assert await asyncio.wait_for(inline(client), 30) == []
    st = await status(client)
    assert "cannot reach" in st["lastReason"], st
