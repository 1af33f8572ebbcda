"""`codeassist serve` as a process, with a request still generating: the drain timeout expiring
ends the process, and a second SIGTERM during a drain stops it at once."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from codeassist.model.checkpoint import save_model
from codeassist.model.config import get_preset
from codeassist.model.gpt import GPT
from tests.remote.test_serve_command import free_port, serve_cmd, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # wide enough that a few hundred tokens take seconds on a CPU
    config = dataclasses.replace(get_preset("tiny"), block_size=1024, n_embd=384, n_head=6)
    model = GPT(config)
    model.init_weights(0)
    path = tmp_path_factory.mktemp("drain") / "wide.safetensors"
    save_model(model, path, provenance={"data": "random"})
    return path


class Serving:
    """A `codeassist serve` process and one streaming request to it, read in a thread."""

    def __init__(self, model: Path, drain_timeout_s: float) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            serve_cmd("--model", str(model), "--port", str(port), "--log-level", "warning", "--threads", "1",
                      "--request-timeout", "600", "--drain-timeout", str(drain_timeout_s), "--max-tokens-limit", "1000"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.failures: list[Exception] = []
        self.first = threading.Event()
        self.reader = threading.Thread(target=self._stream, daemon=True)

    def wait_ready(self) -> None:
        wait_ready(self.proc, self.url)

    def _stream(self) -> None:
        body = {"prompt": "def f(x):\n", "max_tokens": self.max_tokens, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        try:
            with httpx.stream("POST", self.url + "/v1/completions", json=body, timeout=600) as r:
                for line in r.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.first.set()
        except httpx.HTTPError as exc:
            self.failures.append(exc)

    def start_request(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.reader.start()
        assert self.first.wait(60), "no token came back"
        assert self.lines[0].startswith("data: "), self.lines

    def wait_draining(self) -> None:
        deadline = time.monotonic() + 30  # the wait's bound catches a server that never drains
        while httpx.get(self.url + "/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "SIGTERM did not start draining"
            time.sleep(0.01)

    def finished_in_full(self) -> bool:
        return bool(self.lines) and self.lines[-1] == "data: [DONE]" and \
            json.loads(self.lines[-2].removeprefix("data: "))["usage"]["completion_tokens"] == self.max_tokens

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        _, err = self.proc.communicate()
        return err


@pytest.fixture
def serving(wide_model: Path) -> Iterator[list[Serving]]:
    started: list[Serving] = []
    yield started
    for s in started:
        s.stop()


def start(serving: list[Serving], model: Path, drain_timeout_s: float) -> Serving:
    s = Serving(model, drain_timeout_s)
    serving.append(s)
    s.wait_ready()
    return s


def test_the_drain_timeout_expiring_ends_the_process(serving: list[Serving], wide_model: Path) -> None:
    s = start(serving, wide_model, drain_timeout_s=0.5)
    s.start_request(max_tokens=900)  # many seconds of work: it cannot finish within the drain
    s.proc.send_signal(signal.SIGTERM)
    _, err = s.proc.communicate(timeout=60)
    assert s.proc.returncode == 0, err
    assert "drain timeout: 1 requests still in flight" in err
    s.reader.join(30)
    assert not s.reader.is_alive() and not s.finished_in_full()  # the request was cut, not finished


def test_a_second_sigterm_stops_at_once(serving: list[Serving], wide_model: Path) -> None:
    s = start(serving, wide_model, drain_timeout_s=600)
    # a few seconds of work: a server that went on draining, or waited out uvicorn's graceful
    # shutdown (5 s) after the second signal, would finish it
    s.start_request(max_tokens=150)
    s.proc.send_signal(signal.SIGTERM)
    s.wait_draining()
    assert s.proc.poll() is None and not s.finished_in_full()
    s.proc.send_signal(signal.SIGTERM)
    _, err = s.proc.communicate(timeout=60)
    assert s.proc.returncode == 0, err
    s.reader.join(30)
    assert not s.reader.is_alive() and not s.finished_in_full(), s.lines[-2:]
