"""The language server shares the user's machine: it takes the cores that are free and gives
back the memory it no longer uses.

Cores: `free_cores` samples /proc/stat over a short window and subtracts this process's own CPU
time, so a build or a test run started a moment ago counts at once (the load average of
model/threads.py needs a minute to see it). Where /proc is missing it falls back to that.

Memory: glibc keeps freed memory in its heaps. A prefill of a few hundred tokens frees tens of
megabytes of activations; glibc then raises its mmap threshold and serves the next large
tensors from the heap, so the resident size grows with each new prompt shape (471 MB after 20
requests, 534 MB after 200). `HeapTrimmer` gives the freed pages back with malloc_trim(0) once
the server has been idle for a moment, off the event loop; a trim costs about 2 ms, never on a
request's path. A fixed mmap threshold would bound it too, but costs a prefill of 860 tokens
about 100 ms more CPU in page faults (measured), so it is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable
from pathlib import Path

TRIM_IDLE_S = 0.5  # after the last request, before the heap is trimmed
SAMPLE_S = 0.2  # the window free_cores looks at


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def process_jiffies(pid: int | str = "self") -> int | None:
    """A process's user + system jiffies so far (all its threads), or None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    return int(fields[11]) + int(fields[12])


def _own_jiffies() -> int | None:
    return process_jiffies()


class CoreWatch:
    """Cores that other processes left idle since the previous call (or since it was made):
    cheap enough to ask before every request, never waits. At least 1."""

    def __init__(self) -> None:
        self._system, self._own = _cpu_jiffies(), _own_jiffies()
        self._free = 1

    @property
    def measures(self) -> bool:
        """False where /proc is missing: the answer is then the load average's."""
        return self._system is not None and self._own is not None

    def __call__(self) -> int:
        n = os.cpu_count() or 1
        system, own = _cpu_jiffies(), _own_jiffies()
        if system is None or own is None or self._system is None or self._own is None:
            from codeassist.model.threads import free_cores as by_load_average

            return by_load_average()
        if system[1] > self._system[1]:  # else no tick has passed: keep the last answer
            others = max(0, (system[0] - self._system[0]) - (own - self._own))  # other processes' busy jiffies
            busy_cores = others / (system[1] - self._system[1]) * n  # total jiffies grow n per tick
            self._free = max(1, min(n, int(n - busy_cores + 0.5)))
            self._system, self._own = system, own
        return self._free


def free_cores(window_s: float = SAMPLE_S, sleep: Callable[[float], None] = time.sleep) -> int:
    """Cores that other processes leave idle over the next `window_s` seconds; at least 1."""
    watch = CoreWatch()
    if watch.measures:
        sleep(window_s)
    return watch()


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl and macOS have no malloc_trim)
        trim: Callable[[int], object] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


class HeapTrimmer:
    """Trim the C heap once the server has been idle for `idle_s` after a request (glibc only;
    elsewhere a no-op). The trim runs in a worker thread: ctypes releases the GIL."""

    def __init__(self, idle_s: float = TRIM_IDLE_S) -> None:
        self.idle_s = idle_s
        self.trims = 0
        self._trim = _malloc_trim()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def available(self) -> bool:
        return self._trim is not None

    def trim_now(self) -> None:
        if self._trim is not None:
            self._trim()
            self.trims += 1

    def request_done(self) -> None:
        """Call after each request on the event loop: (re)starts the idle timer."""
        if self._trim is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.idle_s, self._idle)

    def _idle(self) -> None:
        self._timer = None
        with contextlib.suppress(RuntimeError):  # the loop is closing
            asyncio.get_running_loop().run_in_executor(None, self.trim_now)
