"""The compose set-up's nginx front (deploy/nginx.conf), run for real in front of two real servers
on loopback: every keystroke of a session reaches the same replica, sessions spread over both,
clients without the header stick by address, and a draining replica's 503 is served by the other.
Needs nginx (Debian: apt-get install nginx-light)."""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.remote.conftest import Live, start_server

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
SESSIONS = [f"editor-session-{i:02d}" for i in range(31)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_conf(tmp: Path, replicas: list[Live], port: int) -> str:
    """deploy/nginx.conf with the compose names replaced by the live servers' loopback ports."""
    text = CONF.read_text()
    servers = re.findall(r"^(\s*server )([\w.-]+:\d+)", text, re.M)
    assert len(servers) == len(replicas) == 2
    for (_, address), live in zip(servers, replicas, strict=True):
        text = text.replace(f"server {address} ", f"server {live.url.removeprefix('http://')} ")
    assert "listen 8080;" in text
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    temp = " ".join(f"{kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                    "scgi"))
    text = text.replace("http {", f"http {{\n    access_log off;\n    {temp}", 1)
    return f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} warn;\n" + text


@pytest.fixture
def front(tmp_path: Path) -> Iterator[tuple[str, list[Live]]]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("no nginx for the compose front's test (Debian: apt-get install nginx-light)")
    replicas = [start_server(), start_server()]
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(local_conf(tmp_path, replicas, port))
    check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
                            stderr=subprocess.DEVNULL)  # its errors go to tmp_path/error.log
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", replicas
    finally:
        proc.terminate()
        proc.wait(10)
        for live in replicas:
            live.stop()


def complete(http: httpx.Client, session: str | None) -> None:
    headers = {"X-Codeassist-Session": session} if session else {}
    r = http.post("/complete", json={"code": "def f(x):\n", "max_tokens": 1}, headers=headers)
    assert r.status_code == 200, r.text


def sessions(live: Live) -> int:
    return int(live.metric("codeassist_sessions_recent"))


def test_each_session_sticks_to_one_replica_and_sessions_spread(front: tuple[str, list[Live]]) -> None:
    url, (a, b) = front
    with httpx.Client(base_url=url, timeout=30) as http:
        for keystroke in range(3):  # three keystrokes of every session, in a new order each time
            for sid in random.Random(keystroke).sample(SESSIONS, len(SESSIONS)):
                complete(http, sid)
    # a session seen by both replicas would count on both: the sum says each stayed on one
    assert sessions(a) + sessions(b) == len(SESSIONS)
    assert sessions(a) > 0 and sessions(b) > 0
    requests = [live.metric('codeassist_session_requests_total{header="valid"}') for live in (a, b)]
    assert requests == [3 * sessions(a), 3 * sessions(b)]


def test_a_client_without_the_header_sticks_by_address(front: tuple[str, list[Live]]) -> None:
    url, replicas = front
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(6):
            complete(http, None)
    absent = sorted(live.metric('codeassist_session_requests_total{header="absent"}') for live in replicas)
    assert absent == [0, 6]


def test_a_draining_replicas_sessions_are_served_by_the_other(front: tuple[str, list[Live]]) -> None:
    url, (a, b) = front
    with httpx.Client(base_url=url, timeout=30) as http:
        for sid in SESSIONS:
            complete(http, sid)
        on_a = sessions(a)
        assert 0 < on_a < len(SESSIONS)
        a.state.start_draining()  # as on SIGTERM: a answers 503 to new work
        for sid in SESSIONS:
            complete(http, sid)  # 200 every one: nginx passed a's 503s to b
    assert sessions(b) == len(SESSIONS)
    assert a.metric('codeassist_requests_rejected_total{reason="not_ready"}') >= 1
