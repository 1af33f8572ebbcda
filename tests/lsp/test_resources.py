"""The server takes the cores that are free and gives freed memory back when requests pause."""

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from codeassist.lsp import resources
from codeassist.lsp.backends import FakeBackend, LocalBackend
from codeassist.lsp.resources import CoreWatch, HeapTrimmer, free_cores
from codeassist.lsp.server import CodeassistServer, default_backend_factory
from codeassist.lsp.settings import Settings


def _readings(monkeypatch: Any, system: list[tuple[int, int]], own: list[int], cpus: int) -> None:
    """free_cores sees these /proc/stat (busy, total) and /proc/self jiffies, in order."""
    monkeypatch.setattr(resources, "_cpu_jiffies", lambda: system.pop(0))
    monkeypatch.setattr(resources, "_own_jiffies", lambda: own.pop(0))
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)


@pytest.mark.parametrize(("others_busy", "own_busy", "free"), [
    (0, 0, 4),  # idle machine
    (100, 0, 3),  # another process kept one of four cores busy
    (100, 100, 3),  # ... and this process's own work does not count against it
    (0, 200, 4),  # this process alone was busy: all cores are ours
    (390, 0, 1),  # every core busy: still one thread
])
def test_free_cores_subtracts_other_processes_busy_time(monkeypatch: Any, others_busy: int, own_busy: int,
                                                        free: int) -> None:
    # a window of 100 ticks on 4 cores: 400 jiffies in all
    _readings(monkeypatch, [(1000, 5000), (1000 + others_busy + own_busy, 5400)], [50, 50 + own_busy], cpus=4)
    assert free_cores(0.1, sleep=lambda s: None) == free


def test_a_core_watch_answers_for_the_time_since_its_last_call_without_waiting(monkeypatch: Any) -> None:
    # made at (0 busy, 0 total); then a window where another process took one of 2 cores, then
    # no tick at all (the last answer stands), then an idle window
    _readings(monkeypatch, [(0, 0), (100, 200), (100, 200), (100, 400)], [0, 0, 0, 0], cpus=2)
    watch = CoreWatch()
    assert (watch(), watch(), watch()) == (1, 1, 2)


def test_free_cores_without_proc_falls_back_to_the_load_average(monkeypatch: Any) -> None:
    monkeypatch.setattr(resources, "_cpu_jiffies", lambda: None)
    monkeypatch.setattr("codeassist.model.threads.free_cores", lambda: 7)
    assert free_cores(0.1, sleep=lambda s: pytest.fail("no window without /proc")) == 7


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.exists("/proc/stat"),
                    reason="needs two cores and /proc to keep one busy")
def test_a_process_spinning_on_one_core_leaves_fewer_free_cores() -> None:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert free_cores(0.5) <= (os.cpu_count() or 1) - 1
    finally:
        spin.kill()
        spin.wait()


def test_the_servers_local_backend_chooses_its_threads_per_request() -> None:
    # no thread count fixed at start-up: LocalBackend asks the free cores before each request
    # (tests/lsp/test_backends.py runs that)
    backend = default_backend_factory(Settings(backend="local"))
    assert isinstance(backend, LocalBackend) and backend.threads is None


async def test_the_heap_is_trimmed_once_requests_pause(monkeypatch: Any) -> None:
    trimmer = HeapTrimmer(idle_s=0.05)
    calls: list[int] = []
    trimmer._trim = lambda: calls.append(1)
    for _ in range(5):  # requests in quick succession: no trim between them
        trimmer.request_done()
        await asyncio.sleep(0.01)
    assert calls == []
    await asyncio.sleep(0.2)
    assert calls == [1] and trimmer.trims == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_malloc_trim_is_found_and_runs_on_glibc() -> None:
    import platform

    trimmer = HeapTrimmer()
    assert trimmer.available == (platform.libc_ver()[0] == "glibc")
    trimmer.trim_now()
    assert trimmer.trims == int(trimmer.available)


async def test_settings_that_change_the_backend_go_through_the_pipeline() -> None:
    made: list[FakeBackend] = []

    def factory(settings: Settings) -> FakeBackend:
        made.append(FakeBackend())
        return made[-1]

    server = CodeassistServer(Settings(backend="fake"), factory)
    assert server.backend is server.pipeline.backend is made[0]
    server.apply_settings({"codeassist": {"maxTokens": 9}})
    assert server.pipeline.settings.max_tokens == 9 and len(made) == 1
    server.apply_settings({"codeassist": {"model": "other"}})
    assert len(made) == 2 and server.backend is server.pipeline.backend is made[1]
    await asyncio.sleep(0)  # the old backend's aclose runs
