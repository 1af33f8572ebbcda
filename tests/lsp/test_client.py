"""EditorClient (pygls's LanguageClient) drives the real server process as an editor does: the
fake backend answers, so this needs no model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from codeassist.lsp.client import EditorClient, JsonRpcException, uri_of


def server_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio", *extra]


async def test_the_editor_client_opens_edits_and_asks(tmp_path: Path) -> None:
    (tmp_path / "other.py").write_text("def helper():\n    return 1\n", encoding="utf-8")
    client = await EditorClient.start(server_cmd("--backend", "fake"))
    try:
        await client.initialize({"codeassist": {"maxTokens": 7}}, workspace=tmp_path)
        status = await client.wait_ready(timeout=60)
        assert status["ready"] is True and status["backend"] == "fake"
        uri = uri_of(tmp_path / "a.py")
        client.open(uri, "python", "x = 1\n")
        assert await client.inline(uri, 1, 0, invoked=True) == ["fake_completion()"]
        client.insert(uri, 2, 1, 0, "# ECHO")  # the fake backend echoes the line it was given
        assert await client.inline(uri, 1, 6, invoked=False) == ["  # seen # ECHO"]
        client.replace(uri, 3, "y = 2\n")
        assert await client.inline(uri, 1, 0, invoked=True) == ["fake_completion()"]
        with pytest.raises(JsonRpcException):
            await client.request("codeassist/noSuchMethod", {})
        client.close_document(uri)
        assert isinstance((await client.status()).get("p50Ms"), int | float | None)
    finally:
        code = await client.close()
    assert code == 0 and client.proc.returncode == 0
