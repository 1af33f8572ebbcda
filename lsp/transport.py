"""The message loop over stdio or TCP, replacing pygls' reader (see framing.py for why).

Everything that ends the loop (the `exit` notification, end of input, the editor's process
gone) puts None into one inbox, so nothing waits on a read that will never finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from codeassist.lsp.framing import FrameParser, FramingError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
WATCH_INTERVAL_S = 1.0

Inbox = asyncio.Queue[bytes | None]


class StdoutWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()

    def close(self) -> None:
        self._out.flush()


class StreamWriterAdapter:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    def close(self) -> None:
        self._writer.close()


async def pump_messages(inbox: Inbox, on_body: Callable[[bytes], None],
                        on_error: Callable[[str], None], parser: FrameParser | None = None) -> None:
    """Feed chunks to the parser until None (stop) or b"" (end of input)."""
    parser = parser or FrameParser()
    while True:
        chunk = await inbox.get()
        if not chunk:
            return
        for event in parser.feed(chunk):
            if isinstance(event, FramingError):
                on_error(event.reason)
            else:
                on_body(event.data)
            await asyncio.sleep(0)  # let responses and other tasks run between messages


def start_stdin_pump(inbox: Inbox, stdin: BinaryIO | None = None) -> None:
    """A daemon thread reads stdin: a blocked read never keeps the process from exiting."""
    loop = asyncio.get_running_loop()
    fd = (stdin or sys.stdin.buffer).fileno()

    def pump() -> None:
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except OSError:
                chunk = b""
            loop.call_soon_threadsafe(inbox.put_nowait, chunk)
            if not chunk:
                return

    threading.Thread(target=pump, name="codeassist-stdin", daemon=True).start()


async def pump_stream(reader: asyncio.StreamReader, inbox: Inbox) -> None:
    while True:
        try:
            chunk = await reader.read(CHUNK)
        except (ConnectionError, OSError):
            chunk = b""
        await inbox.put(chunk)
        if not chunk:
            return


def is_process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to someone else
    return True


async def watch_process(pid: int, on_gone: Callable[[], Any],
                        interval_s: float = WATCH_INTERVAL_S) -> None:
    """The editor died without telling us: stop (LSP `processId`)."""
    while True:
        await asyncio.sleep(interval_s)
        if not is_process_alive(pid):
            log.warning("the editor's process %d is gone; exiting", pid)
            result = on_gone()
            if isinstance(result, Awaitable):
                await result
            return
