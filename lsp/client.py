"""A minimal LSP client over a subprocess's stdio, as an editor drives the server.

Used by `codeassist eval`, the benchmark and the robustness tests (which also need to send raw,
malformed bytes, which no real client library will do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from codeassist.lsp.framing import FrameParser, FramingError
from codeassist.model.errors import CodeassistError

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
