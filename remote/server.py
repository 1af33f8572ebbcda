"""uvicorn, taught to drain: SIGTERM (or Ctrl+C) marks the server not ready, refuses new work
with 503, lets in-flight requests finish (up to the drain timeout), then exits 0. When the drain
timeout expires, or a second signal comes, it stops at once: uvicorn's own graceful wait for open
connections (up to 5 s more, generating all the while) is skipped.

Plain uvicorn stops accepting at once and, after shutting down, re-raises the signal, so the
process dies by SIGTERM instead of exiting 0; Kubernetes counts that as a failure.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from codeassist.remote.app import ServerState

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self._drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # not recorded in _captured_signals: uvicorn would re-raise it after shutdown
        if self._drain_deadline is not None:  # a second signal: stop now
            self.should_exit = True
            self.force_exit = True
            return
        log.info("signal %s: draining (%d in flight)", signal.Signals(sig).name, self.state.scheduler.in_flight)
        self.state.start_draining()
        self._drain_deadline = time.monotonic() + self.state.settings.drain_timeout_s

    async def on_tick(self, counter: int) -> bool:
        if self.state.load_error:
            return True  # nothing to serve: exit, so the failure is seen (and a pod restarts)
        if self._drain_deadline is not None:
            idle = self.state.scheduler.in_flight == 0
            if idle or time.monotonic() >= self._drain_deadline:
                if not idle:
                    log.warning("drain timeout: %d requests still in flight", self.state.scheduler.in_flight)
                    self.force_exit = True  # the drain's time is up: no further wait for connections
                return True
        return await super().on_tick(counter)


def build_server(app: FastAPI, host: str, port: int, log_level: str = "warning") -> DrainingServer:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            server_header=False, timeout_graceful_shutdown=5, lifespan="on")
    state = app.state.server
    assert isinstance(state, ServerState)
    return DrainingServer(config, state)
