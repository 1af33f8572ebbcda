"""The real server under uvicorn on 127.0.0.1 (a free port), in a thread, with a tiny model."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import torch

from codeassist.model.engine import Engine
from codeassist.model.gpt import GPT
from codeassist.remote.app import ServerState, create_app
from codeassist.remote.server import DrainingServer, build_server
from codeassist.remote.settings import ServerSettings
from tests.conftest import make_tiny


class SlowGPT(GPT):
    """The tiny model, sleeping before every decode step: makes queues and time limits testable."""

    delay_s = 0.0

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        time.sleep(self.delay_s)
        return super().forward(*args, **kwargs)


def tiny_engine(delay_s: float = 0.0, seed: int = 0) -> Engine:
    model = make_tiny(seed)
    if delay_s:
        slow = SlowGPT(model.config)
        slow.load_state_dict(model.state_dict())
        slow.delay_s = delay_s
        model = slow.eval()
    return Engine(model, torch.device("cpu"), name="tiny")


@dataclasses.dataclass
class Live:
    url: str
    server: DrainingServer
    thread: threading.Thread

    @property
    def state(self) -> ServerState:
        return self.server.state

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def metric(self, name: str, headers: dict[str, str] | None = None) -> float:
        """The value of one sample line of /metrics (labels included in name), 0 if absent."""
        text = httpx.get(self.url + "/metrics", headers=headers, timeout=10).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_server(settings: ServerSettings | None = None,
                 load: Callable[[], Engine] = tiny_engine, wait_ready: bool = True) -> Live:
    settings = settings or ServerSettings(port=0)
    app = create_app(settings, load)
    server = build_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    live = Live(f"http://127.0.0.1:{port}", server, thread)
    while wait_ready and not live.state.loaded:
        if time.monotonic() > deadline or live.state.load_error:
            raise RuntimeError(f"the model did not load: {live.state.load_error}")
        time.sleep(0.01)
    return live


@pytest.fixture
def serve() -> Iterator[Callable[..., Live]]:
    """start_server(...) with every server stopped at the end of the test."""
    started: list[Live] = []

    def start(settings: ServerSettings | None = None, load: Callable[[], Engine] = tiny_engine,
              wait_ready: bool = True) -> Live:
        live = start_server(settings, load, wait_ready)
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[Live]:
    """One default server for the tests that only read."""
    live = start_server()
    yield live
    live.stop()
