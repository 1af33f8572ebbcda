"""LSP base-protocol framing that cannot be desynchronised, flooded or hung.

pygls 2.1.1's reader loses the stream for good after one bad header and waits forever on a
huge Content-Length. This parser is fed raw bytes and yields whole message bodies or framing
errors. After any error it resynchronises on the next `Content-Length:` header, discarding what
lies between without storing it, so memory stays bounded by `max_body` and a later valid message
is always read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_BODY_BYTES = 64 * 1024 * 1024  # a didOpen of a large file still fits; 1 GiB does not
MAX_HEADER_BYTES = 8 * 1024

_HEADER_MARK = b"Content-Length:"
_CONTENT_LENGTH = re.compile(rb"Content-Length:[ \t]*(\d{1,19})[ \t]*", re.IGNORECASE)
_OTHER_HEADER = re.compile(rb"[A-Za-z][A-Za-z0-9-]*:[^\r\n]*")


@dataclass(frozen=True)
class Body:
    data: bytes


@dataclass(frozen=True)
class FramingError:
    reason: str  # one sentence, for the log


Event = Body | FramingError


class FrameParser:
    """Incremental parser: `feed(chunk)` returns the events completed by that chunk."""

    def __init__(self, max_body: int = MAX_BODY_BYTES, max_header: int = MAX_HEADER_BYTES) -> None:
        self.max_body = max_body
        self.max_header = max_header
        self._buf = bytearray()
        self._length: int | None = None  # Content-Length of the message whose headers are read
        self._in_body = False
        self._skipping = False  # after an error: discard until the next Content-Length header
        self._other_headers = False

    def feed(self, chunk: bytes) -> list[Event]:
        self._buf += chunk
        events: list[Event] = []
        while True:
            if self._skipping and not self._resync():
                return events
            if self._in_body:
                if self._length is None or len(self._buf) < self._length:
                    return events
                events.append(Body(bytes(self._buf[:self._length])))
                del self._buf[:self._length]
                self._in_body, self._length = False, None
                continue
            event = self._read_header_line()
            if event is None:
                return events
            if isinstance(event, FramingError):
                events.append(event)

    def _resync(self) -> bool:
        """Drop bytes up to the next Content-Length header; False when more input is needed."""
        i = self._buf.find(_HEADER_MARK)
        if i < 0:
            keep = len(_HEADER_MARK) - 1  # a header split across chunks
            if len(self._buf) > keep:
                del self._buf[:len(self._buf) - keep]
            return False
        del self._buf[:i]
        self._skipping = False
        self._length = None
        return True

    def _fail(self, reason: str) -> FramingError:
        self._skipping = True
        self._other_headers = False
        self._length = None
        self._in_body = False
        return FramingError(reason)

    def _read_header_line(self) -> FramingError | bool | None:
        """Consume one header line: None = need more input, True = consumed, or an error."""
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > self.max_header:
                return self._fail("a header line is longer than the limit")
            return None
        line = bytes(self._buf[:end]).rstrip(b"\r")
        del self._buf[:end + 1]
        if not line:
            if self._length is None:
                # blank lines between messages are tolerated; headers without a length are not
                return self._fail("a message had no Content-Length") if self._other_headers else True
            self._other_headers = False
            if self._length > self.max_body:
                size = self._length
                return self._fail(f"a message of {size} bytes is over the {self.max_body}-byte limit")
            self._in_body = True
            return True
        m = _CONTENT_LENGTH.fullmatch(line)
        if m:
            self._length = int(m.group(1))
            return True
        if _OTHER_HEADER.fullmatch(line) and not line.startswith((b"{", b"[")):
            self._other_headers = True  # Content-Type and friends
            return True
        return self._fail("a malformed header was skipped")
