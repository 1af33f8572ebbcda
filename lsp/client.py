"""Clients of the language server over a subprocess's stdio, as an editor drives it.

- `EditorClient`: pygls's LanguageClient (it frames, parses and matches the messages) with what
  driving the server needs on top: start the server command, initialize with settings and an
  optional workspace folder, open and edit documents, ask for inline completions,
  `codeassist/status` as a plain dict, wait for the model, and a shutdown that never hangs. The
  demo uses it, and so can the evaluation harness.
- `LspClient`: a raw writer and reader, for the robustness tests, which send malformed bytes no
  client library will send (and for callers not yet moved to EditorClient).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import cattrs
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient
from pygls.protocol import JsonRPCResponseMessage, default_converter

from codeassist.lsp.framing import FrameParser, FramingError
from codeassist.model.errors import CodeassistError

__all__ = ["EditorClient", "JsonRpcException", "LspClient", "LspError", "frame", "uri_of"]

REQUEST_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)


class LspError(CodeassistError):
    """The server answered a request with an error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def frame(payload: dict[str, Any] | bytes) -> bytes:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class LspClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.notifications: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []  # every response, including unsolicited ones
        self._pending: dict[int | str, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, cmd: list[str], env: dict[str, str] | None = None,
                    stderr: int | None = asyncio.subprocess.DEVNULL) -> LspClient:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        parser = FrameParser()
        while True:
            chunk = await self.proc.stdout.read(65536)
            if not chunk:
                break
            for event in parser.feed(chunk):
                if isinstance(event, FramingError):
                    log.error("the server sent a bad frame: %s", event.reason)
                    continue
                self._dispatch(json.loads(event.data))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the server closed its output"))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "method" in msg:
            if "id" in msg:  # a request from the server: answer it so it never waits
                self.write({"jsonrpc": "2.0", "id": msg["id"], "result": None})
            else:
                self.notifications.append(msg)
            return
        self.responses.append(msg)
        fut = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
        if fut is None or fut.done():
            return
        if "error" in msg:
            fut.set_exception(LspError(msg["error"].get("code", 0), msg["error"].get("message", "")))
        else:
            fut.set_result(msg.get("result"))

    def write(self, payload: dict[str, Any] | bytes, raw: bool = False) -> None:
        assert self.proc.stdin is not None
        data = payload if raw and isinstance(payload, bytes) else frame(payload)
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.proc.stdin.write(data)

    def send_request(self, method: str, params: Any = None) -> tuple[int, asyncio.Future[Any]]:
        self._next_id += 1
        msg_id = self._next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        self.write({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id, fut

    async def request(self, method: str, params: Any = None, timeout: float = 30.0) -> Any:
        _, fut = self.send_request(method, params)
        return await asyncio.wait_for(fut, timeout)

    def notify(self, method: str, params: Any = None) -> None:
        self.write({"jsonrpc": "2.0", "method": method, "params": params})

    async def initialize(self, options: dict[str, Any] | None = None, encodings: list[str] | None = None,
                         process_id: int | None = None, workspace: Path | None = None) -> Any:
        """`workspace`: the folder opened in the editor (rootUri and workspaceFolders)."""
        caps: dict[str, Any] = {"textDocument": {"inlineCompletion": {}}}
        if encodings:
            caps["general"] = {"positionEncodings": encodings}
        params: dict[str, Any] = {"processId": process_id, "rootUri": None, "capabilities": caps,
                                  "initializationOptions": options}
        if workspace is not None:
            uri = workspace.resolve().as_uri()
            params |= {"rootUri": uri, "workspaceFolders": [{"uri": uri, "name": workspace.name}]}
        result = await self.request("initialize", params)
        self.notify("initialized", {})
        return result

    async def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        """Poll codeassist/status until the backend is ready (or says why it cannot be)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status: dict[str, Any] = await self.request("codeassist/status", {})
            if status.get("ready") or asyncio.get_running_loop().time() > deadline:
                return status
            if status.get("lastReason") and "loading" not in str(status.get("lastReason")):
                return status
            await asyncio.sleep(0.1)

    async def close(self, timeout: float = 5.0) -> int:
        """shutdown + exit; the process's exit code."""
        with contextlib.suppress(Exception):
            await self.request("shutdown", None, timeout=timeout)
            self.notify("exit")
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        self._reader.cancel()
        return code


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
    async def start(cls, cmd: list[str], env: dict[str, str] | None = None) -> EditorClient:
        client = LanguageClient("codeassist-client", "1", converter_factory=_converter)
        await client.start_io(cmd[0], *cmd[1:], env=env)
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
