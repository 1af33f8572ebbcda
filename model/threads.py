"""How many CPU threads an in-process model should use.

Measured on a 2-core machine (shared/notes): two torch threads help int8 when both cores are
idle, but when another process is busy (the editor, a build) two-thread decoding collapses
2-20x while one thread loses nothing. So use only the cores that are free, and at least one.
"""

from __future__ import annotations

import os


def free_cores() -> int:
    """Cores not busy over the last minute, by the load average; at least 1."""
    n = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 1
    return max(1, min(n, int(n - busy + 0.5)))


def pick_threads(requested: int | None = None) -> int:
    """`requested` when given (> 0), else the free cores, capped at 4 (batch-1 decode gains little more)."""
    if requested and requested > 0:
        return requested
    return min(4, free_cores())
