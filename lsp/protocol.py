"""pygls' protocol with the holes that an editor falls into closed.

Measured on pygls 2.1.1 (RELIABILITY.md): invalid params got no answer, requests before
`initialize` were served, requests after `shutdown` were dropped unanswered, `exit` without
`shutdown` returned 0, and handler exceptions sent the Python traceback to the client. Every
message now enters through `handle_body`, which answers each of those cases per the LSP spec.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_NOT_INITIALIZED = -32002
REQUEST_CANCELLED = -32800

USER_MESSAGE_INTERVAL_S = 60.0


class MessageLimiter:
    """At most one message to the user per interval; the rest go to the log only."""

    def __init__(self, interval_s: float = USER_MESSAGE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def allow(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        return True


class HardenedProtocol(LanguageServerProtocol):
    """Lifecycle per spec, -32602 for invalid params, no tracebacks on the wire."""

    def __init__(self, server: Any, converter: Any) -> None:
        super().__init__(server, converter)
        self.initialized = False
        self.exit_code: int | None = None  # set by `exit`; the transport stops when it is set
        self.on_exit: Callable[[int], None] | None = None
        self.user_messages = MessageLimiter()

    # -- entry point ---------------------------------------------------------------------------

    def handle_body(self, body: bytes) -> None:
        """One framed message: parse, check lifecycle, deserialise, dispatch. Never raises."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            self.report_bad_input("a message was not valid JSON")
            self._send_error(None, PARSE_ERROR, "Parse error: the message is not valid JSON")
            return
        if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
            msg_id = data.get("id") if isinstance(data, dict) else None
            self.report_bad_input("a message was not a JSON-RPC 2.0 object")
            self._send_error(_valid_id(msg_id), INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
            return
        try:
            self._dispatch(data)
        except Exception:
            log.exception("unexpected error while handling a message")

    def _dispatch(self, data: dict[str, Any]) -> None:
        method = data.get("method")
        is_request = "id" in data and isinstance(method, str)
        msg_id = _valid_id(data.get("id"))
        if is_request and msg_id is None:
            self._send_error(None, INVALID_REQUEST, "Invalid Request: the id must be a string or an integer")
            return
        if method == types.EXIT:
            self._exit()
            return
        if is_request and self._shutdown:
            self._send_error(msg_id, INVALID_REQUEST, "Invalid Request: the server is shutting down")
            return
        if not self.initialized and method not in (types.INITIALIZE, None):
            if is_request:
                self._send_error(msg_id, SERVER_NOT_INITIALIZED, "Server not initialized")
            return  # notifications before initialize are dropped (spec)
        if method == types.INITIALIZE and self.initialized and is_request:
            self._send_error(msg_id, INVALID_REQUEST, "Invalid Request: initialize was already sent")
            return
        try:
            message = self.structure_message(data)
        except Exception:
            if is_request:
                self._send_error(msg_id, INVALID_PARAMS, f"Invalid params for {method}")
            else:
                log.warning("dropped a %s notification with invalid params", method)
            return
        if method == types.INITIALIZE:
            self.initialized = True
        self.handle_message(message)

    def _exit(self) -> None:
        self.exit_code = 0 if self._shutdown else 1
        if self.on_exit is not None:
            self.on_exit(self.exit_code)

    # -- what pygls did wrong ------------------------------------------------------------------

    def _send_response(self, msg_id: Any, result: Any | None = None,
                       error: types.ResponseError | None = None) -> None:
        if error is not None:
            error = _scrub(error)
        super()._send_response(msg_id, result, error)

    def _send_error(self, msg_id: int | str | None, code: int, message: str) -> None:
        # built by hand: lsprotocol's ResponseErrorMessage cannot carry a null id
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    def report_bad_input(self, reason: str) -> None:
        log.warning("%s", reason)
        self.show_user_message(f"codeassist: {reason}; it was ignored.", types.MessageType.Warning)

    def show_user_message(self, text: str, kind: types.MessageType = types.MessageType.Error) -> None:
        """window/showMessage, rate-limited to one a minute; everything also goes to the log."""
        if self.writer is None or not self.initialized or not self.user_messages.allow():
            return
        self.notify(types.WINDOW_SHOW_MESSAGE, types.ShowMessageParams(type=kind, message=text))


def _scrub(error: types.ResponseError) -> types.ResponseError:
    """One line, no traceback: internal errors say only that the log has the details."""
    if error.code == INTERNAL_ERROR:
        return types.ResponseError(code=INTERNAL_ERROR, message="Internal error; the server log has the details")
    first = (error.message or "").strip().splitlines()
    return types.ResponseError(code=error.code, message=first[0][:300] if first else "error")


def _valid_id(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    return value if isinstance(value, int | str) else None


__all__ = ["HardenedProtocol", "JsonRpcException", "MessageLimiter"]
