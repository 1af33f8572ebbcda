"""The editor session id (`X-Codeassist-Session`): read, checked, counted.

The language server's remote backend sends one id per editor session (a uuid4 made once per
language-server process). A load balancer in front of several replicas routes by it with
consistent hashing (deploy/), so a user's keystrokes reach the replica whose prefix cache holds
their previous prompt. Here the server only reads it: it is logged with the request id, and
/metrics counts the requests that carry one and the distinct sessions seen lately, which is how
an operator sees that affinity works (with it, the replicas' session counts add up to the number
of users; without it, every replica sees nearly every user).

A malformed id (too long, or characters outside an HTTP token's letters, digits and `-._~`) is
ignored, never an error: a completion must not fail over a routing hint.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request

    from codeassist.remote.metrics import ServerMetrics

log = logging.getLogger(__name__)

HEADER = "x-codeassist-session"
MAX_CHARS = 128
_VALID = re.compile(rf"[A-Za-z0-9._~-]{{1,{MAX_CHARS}}}")


def session_id(headers: Mapping[str, str]) -> str | None:
    """The request's session id, or None when the header is absent or malformed."""
    value = headers.get(HEADER)
    if value is None or not _VALID.fullmatch(value):
        return None
    return value


def note(request: Request, metrics: ServerMetrics) -> str | None:
    """Count and log a completion request's session id (with its request id); returns the id."""
    sid = metrics.note_session(request.headers)
    log.info("request %s session %s: %s", getattr(request.state, "request_id", "-"), sid or "-",
             request.url.path)
    return sid


class RecentSessions:
    """Distinct session ids seen within the last `window_s`, bounded to `max_ids` (oldest dropped)."""

    def __init__(self, window_s: float = 300.0, max_ids: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.max_ids = max_ids
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> last seen, oldest first
        self._lock = threading.Lock()

    def see(self, sid: str) -> None:
        with self._lock:
            self._seen[sid] = self._clock()
            self._seen.move_to_end(sid)
            while len(self._seen) > self.max_ids:
                self._seen.popitem(last=False)

    def count(self) -> int:
        with self._lock:
            cutoff = self._clock() - self.window_s
            while self._seen:
                oldest = next(iter(self._seen.values()))
                if oldest >= cutoff:
                    break
                self._seen.popitem(last=False)
            return len(self._seen)
