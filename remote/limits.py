"""Pure ASGI middlewares: request ids and the last-resort error guard, API keys, the body cap.

Pure ASGI (not BaseHTTPMiddleware) so that the body cap answers 413 before the body is read
and so that streaming responses and disconnect detection pass through untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable, Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codeassist.remote.errors import error_body

log = logging.getLogger(__name__)

Rejector = Callable[[str], None]


def _ignore(reason: str) -> None:
    pass


OPEN_PATHS = frozenset({"/", "/health", "/ready"})  # liveness and readiness stay open


async def _send_error(send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = (),
                      code: str | None = None) -> None:
    body = error_body(status, message, code=code)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Give every request an id (X-Request-ID); turn any escaped exception into a generic 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s failed", request_id)
            if not started:
                await _send_error(send, 500, f"internal error (request id {request_id})",
                                  [(b"x-request-id", request_id.encode())])


def _digest(key: bytes) -> bytes:
    # comparing fixed-length digests keeps even the key's length out of the timing
    return hashlib.sha256(key).digest()


class APIKeyAuth:
    """`Authorization: Bearer KEY` on every path but the open ones, compared in constant time."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], on_reject: Rejector = _ignore) -> None:
        self.app = app
        self._digests = [_digest(k.encode()) for k in keys]
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._digests or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not self.is_authorized(dict(scope["headers"]).get(b"authorization", b"")):
            self.on_reject("unauthorized")
            await _send_error(send, 401, "a valid API key is required (Authorization: Bearer KEY)",
                              [(b"www-authenticate", b"Bearer")], code="invalid_api_key")
            return
        await self.app(scope, receive, send)

    def is_authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        given = _digest(token.strip())
        ok = False
        for d in self._digests:  # no early exit: every key is compared
            ok |= hmac.compare_digest(given, d)
        return ok and scheme.lower() == b"bearer"


class _BodyTooLarge(HTTPException):
    """Raised from receive(); an HTTPException so that FastAPI's body reader lets it through."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than the {max_bytes}-byte limit")


class BodyLimit:
    """413 for a body over the cap: from Content-Length before reading, else while it streams in.

    Before answering, what the client is still sending is read and dropped, up to `drain_bytes`
    (nginx's lingering close): a server that closes with the body unread makes the kernel reset
    the connection, and a client still writing (Python's urllib) sees that reset, not the 413.
    A client that asked `Expect: 100-continue` has sent nothing yet and is answered at once.
    """

    drain_bytes = 64 << 20

    def __init__(self, app: ASGIApp, max_bytes: int, on_reject: Rejector = _ignore) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                await _send_error(send, 400, "the Content-Length header is not a number")
                return
            if too_big:
                await self._drain(scope, receive, 0)
                await self._refuse(send)
                return
        seen = 0
        started = False
        over = False  # the cap was crossed; the rest of the body is still on its way
        done = False

        async def counting_receive() -> Message:
            nonlocal seen, over, done
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    over = True
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started, done
            if message["type"] == "http.response.start":
                started = True
                if over and not done:  # the app's error handler answers the 413: drain first
                    done = True
                    await self._drain(scope, receive, seen)
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                if not done:
                    await self._drain(scope, receive, seen)
                await self._refuse(send)
            else:
                self.on_reject("body_too_large")

    async def _drain(self, scope: Scope, receive: Receive, seen: int) -> int:
        """Read and drop the rest of the body, up to drain_bytes in all; returns the bytes read."""
        if dict(scope["headers"]).get(b"expect", b"").lower() == b"100-continue":
            return seen
        while seen <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return seen

    async def _refuse(self, send: Send) -> None:
        self.on_reject("body_too_large")
        await _send_error(send, 413, f"the request body is larger than the {self.max_bytes}-byte limit",
                          [(b"connection", b"close")])
