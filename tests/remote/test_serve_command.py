"""`codeassist serve` as a process: refused settings exit with one line; SIGTERM drains, then exit 0."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from codeassist.model.checkpoint import save_model
from codeassist.model.config import get_preset
from codeassist.model.gpt import GPT

pytestmark = pytest.mark.slow


def serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "codeassist.cli", "serve", *args]


def test_wildcard_cors_with_credentials_is_refused_at_start_up() -> None:
    r = subprocess.run(serve_cmd("--cors-origin", "*", "--cors-credentials"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert "wildcard" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_public_bind_without_keys_and_a_missing_model_are_refused(tmp_path: Path) -> None:
    r = subprocess.run(serve_cmd("--host", "0.0.0.0"), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "API keys" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(serve_cmd("--model", str(tmp_path / "nope.safetensors")), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[str], url: str, timeout_s: float = 90) -> None:
    """Until `url`/ready answers 200; fails if the server exits first (with its stderr) or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the server exited before it was ready: {err[-2000:]}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.1)


def test_sigterm_drains_in_flight_requests_then_exits_0(tmp_path: Path) -> None:
    # wide enough that 80 tokens take a while on a CPU, so the request is in flight at SIGTERM
    config = dataclasses.replace(get_preset("tiny"), block_size=1024, n_embd=384, n_head=6)
    model = GPT(config)
    model.init_weights(0)
    path = tmp_path / "wide.safetensors"
    save_model(model, path, provenance={"data": "random"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(serve_cmd("--model", str(path), "--port", str(port), "--log-level", "warning",
                                      "--request-timeout", "600", "--drain-timeout", "600",
                                      "--threads", "1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CODEASSIST_DEBUG": ""})
    try:
        wait_ready(proc, url)
        lines: list[str] = []
        failures: list[Exception] = []
        first = threading.Event()

        def stream() -> None:
            body = {"prompt": "def f(x):\n", "max_tokens": 80, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            try:
                with httpx.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
                    for line in r.iter_lines():
                        if line:
                            lines.append(line)
                            first.set()
            except httpx.HTTPError as exc:
                failures.append(exc)

        reader = threading.Thread(target=stream)
        reader.start()
        assert first.wait(30)
        proc.send_signal(signal.SIGTERM)
        # draining has begun once /ready says so (the wait's bound catches a server that never drains)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "SIGTERM did not start draining"
            time.sleep(0.01)
        refused = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=5)
        assert refused.status_code == 503
        reader.join(600)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert not failures, failures
    assert lines[-1] == "data: [DONE]"
    usage = json.loads(lines[-2].removeprefix("data: "))["usage"]
    assert usage["completion_tokens"] == 80  # the in-flight request finished in full
