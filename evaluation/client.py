"""The editor side of the harness: pygls's LanguageClient on the server's stdio.

pygls frames, parses and matches the messages; this module adds what an evaluation needs on top:
start the server command, initialize with settings and an optional workspace folder, the
documents and inline completion requests an editor sends, `codeassist/status` as a plain dict,
waiting for the model, and a shutdown that never hangs. (The robustness tests keep the raw writer
of lsp/client.py: they send malformed bytes, which no client library does.)
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import cattrs
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient
from pygls.protocol import JsonRPCResponseMessage, default_converter

__all__ = ["EditorClient", "JsonRpcException", "uri_of"]

REQUEST_TIMEOUT_S = 30.0


def _converter() -> cattrs.Converter:
    """pygls's converter, except that results of methods it does not know (codeassist/status) stay
    plain JSON values: pygls would turn them into namedtuples, renaming keys that are not names."""
    converter: cattrs.Converter = default_converter()  # type: ignore[no-untyped-call]
    converter.register_structure_hook(JsonRPCResponseMessage, lambda obj, cls: cls(**obj))
    return converter


def uri_of(path: Path) -> str:
    return path.resolve().as_uri()


class EditorClient:
    def __init__(self, client: LanguageClient, proc: asyncio.subprocess.Process) -> None:
        self.client = client
        self.proc = proc
        # the server logs to stderr; read it, or a full pipe would stall the server
        self._stderr = asyncio.ensure_future(self._drain(proc.stderr))

    @classmethod
    async def start(cls, cmd: list[str]) -> EditorClient:
        client = LanguageClient("codeassist-eval", "1", converter_factory=_converter)
        await client.start_io(cmd[0], *cmd[1:])
        proc = client._server  # pygls keeps the process it started here, and offers no other handle
        assert proc is not None
        return cls(client, proc)

    @staticmethod
    async def _drain(stream: asyncio.StreamReader | None) -> None:
        while stream is not None and await stream.read(65536):
            pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def initialize(self, options: dict[str, Any], workspace: Path | None = None) -> None:
        """initialize (settings as initializationOptions; `workspace`: the folder opened), initialized."""
        uri = uri_of(workspace) if workspace is not None else None
        folders = [lsp.WorkspaceFolder(uri=uri, name=workspace.name)] if uri and workspace else None
        caps = lsp.ClientCapabilities(text_document=lsp.TextDocumentClientCapabilities(
            inline_completion=lsp.InlineCompletionClientCapabilities()))
        params = lsp.InitializeParams(capabilities=caps, process_id=None, root_uri=uri,
                                      workspace_folders=folders, initialization_options=options)
        await asyncio.wait_for(self.client.initialize_async(params), REQUEST_TIMEOUT_S)
        self.client.initialized(lsp.InitializedParams())

    async def request(self, method: str, params: Any = None, timeout: float = REQUEST_TIMEOUT_S) -> Any:
        """A request by name, its result as plain JSON values; raises JsonRpcException on an error."""
        return await asyncio.wait_for(self.client.protocol.send_request_async(method, params), timeout)

    async def status(self) -> dict[str, Any]:
        result = await self.request("codeassist/status", {})
        return result if isinstance(result, dict) else {}

    async def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        """Poll codeassist/status until the backend is ready (or says why it cannot be)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.status()
            if status.get("ready") or asyncio.get_running_loop().time() > deadline:
                return status
            if status.get("lastReason") and "loading" not in str(status.get("lastReason")):
                return status
            await asyncio.sleep(0.1)

    def open(self, uri: str, language: str, text: str, version: int = 1) -> None:
        self.client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            lsp.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))

    def replace(self, uri: str, version: int, text: str) -> None:
        """The whole document replaced by `text`."""
        self.client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [lsp.TextDocumentContentChangeWholeDocument(text=text)]))

    def insert(self, uri: str, version: int, line: int, character: int, text: str) -> None:
        """`text` typed at (line, character)."""
        at = lsp.Position(line=line, character=character)
        self.client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [lsp.TextDocumentContentChangePartial(range=lsp.Range(start=at, end=at), text=text)]))

    def close_document(self, uri: str) -> None:
        self.client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(uri=uri)))

    async def inline(self, uri: str, line: int, character: int, invoked: bool) -> list[str]:
        """The inline suggestions' texts at (line, character): invoked (as a shortcut asks, with the
        full time budget) or automatic (as typing asks)."""
        kind = lsp.InlineCompletionTriggerKind.Invoked if invoked else lsp.InlineCompletionTriggerKind.Automatic
        params = lsp.InlineCompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=line, character=character),
            context=lsp.InlineCompletionContext(trigger_kind=kind))
        result = await asyncio.wait_for(self.client.text_document_inline_completion_async(params),
                                        REQUEST_TIMEOUT_S)
        items = result.items if isinstance(result, lsp.InlineCompletionList) else (result or [])
        return [item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
                for item in items]

    async def close(self, timeout: float = 5.0) -> int:
        """shutdown + exit; the process's exit code (killed when it does not exit in `timeout`)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.shutdown_async(None), timeout)
            self.client.exit(None)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.stop(), timeout)  # type: ignore[no-untyped-call]
        self._stderr.cancel()
        return code
