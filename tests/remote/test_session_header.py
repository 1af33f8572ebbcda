"""The editor session id (X-Codeassist-Session) reaches the real server on loopback: logged with
the request id, counted in /metrics; a malformed one is ignored, never an error."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable

import pytest

from codeassist.remote.client import SESSION_ID, RemoteClient, RemoteSettings
from codeassist.remote.session import MAX_CHARS, RecentSessions, session_id
from tests.remote.conftest import Live

SID = str(uuid.uuid4())


def session_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "codeassist.remote.session"]


def test_the_header_reaches_the_server_with_the_request_id(serve: Callable[..., Live],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="codeassist.remote.session")
    live = serve()
    with live.client(headers={"X-Codeassist-Session": SID}) as http:
        openai = http.post("/v1/completions", json={"prompt": "def add(a, b):", "max_tokens": 3})
        seed = http.post("/complete", json={"code": "import os\n", "max_tokens": 3})
    assert openai.status_code == 200 and seed.status_code == 200
    lines = session_lines(caplog)
    for response, path in ((openai, "/v1/completions"), (seed, "/complete")):
        rid = response.headers["x-request-id"]
        assert f"request {rid} session {SID}: {path}" in lines
    assert live.metric('codeassist_session_requests_total{header="valid"}') == 2
    assert live.metric("codeassist_sessions_recent") == 1


async def test_the_language_servers_client_sends_its_session_to_the_server(
        serve: Callable[..., Live], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="codeassist.remote.session")
    live = serve()
    client = RemoteClient(RemoteSettings(url=live.url, timeout_ms=20_000))
    try:
        for _ in range(2):  # two keystrokes, one session
            text = await client.complete("def add(a, b):\n    ", "", max_tokens=2, temperature=0.0, stop=[])
            assert isinstance(text, str)
    finally:
        await client.aclose()
    assert session_id({"x-codeassist-session": SESSION_ID}) == SESSION_ID  # the client's id is valid here
    assert sum(f"session {SESSION_ID}: /v1/completions" in line for line in session_lines(caplog)) == 2
    assert live.metric('codeassist_session_requests_total{header="valid"}') == 2
    assert live.metric("codeassist_sessions_recent") == 1


@pytest.mark.parametrize("bad", ["a" * (MAX_CHARS + 1), "two words", "id,other", "café", ""])
def test_a_malformed_id_is_ignored_and_the_request_served(serve: Callable[..., Live], bad: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="codeassist.remote.session")
    live = serve()
    with live.client() as http:
        r = http.post("/complete", json={"code": "x = 1\n", "max_tokens": 2},
                      headers={"X-Codeassist-Session": bad.encode()})  # type: ignore[dict-item]
        plain = http.post("/complete", json={"code": "x = 1\n", "max_tokens": 2})
    assert r.status_code == 200 and plain.status_code == 200
    assert live.metric('codeassist_session_requests_total{header="ignored"}') == 1
    assert live.metric('codeassist_session_requests_total{header="absent"}') == 1
    assert live.metric('codeassist_session_requests_total{header="valid"}') == 0
    assert live.metric("codeassist_sessions_recent") == 0
    assert all(re.fullmatch(r"request \w+ session -: /complete", line) for line in session_lines(caplog))


def test_two_sessions_are_counted_apart(shared_server: Live) -> None:
    before = shared_server.metric("codeassist_sessions_recent")
    with shared_server.client() as http:
        for sid in ("editor-a", "editor-b", "editor-a"):
            r = http.post("/complete", json={"code": "y = 2\n", "max_tokens": 1},
                          headers={"X-Codeassist-Session": sid})
            assert r.status_code == 200
    assert shared_server.metric("codeassist_sessions_recent") == before + 2


def test_session_id_accepts_token_characters_only() -> None:
    assert session_id({"x-codeassist-session": SID}) == SID
    assert session_id({"x-codeassist-session": "A.b_c~d-9"}) == "A.b_c~d-9"
    assert session_id({"x-codeassist-session": "x" * MAX_CHARS}) == "x" * MAX_CHARS
    for bad in ("x" * (MAX_CHARS + 1), "a b", "a/b", "a\nb", ""):
        assert session_id({"x-codeassist-session": bad}) is None
    assert session_id({}) is None


def test_recent_sessions_forget_after_the_window_and_stay_bounded() -> None:
    now = [0.0]
    recent = RecentSessions(window_s=10, max_ids=3, clock=lambda: now[0])
    recent.see("a")
    now[0] = 5
    recent.see("b")
    assert recent.count() == 2
    now[0] = 12  # "a" was last seen 12 s ago
    assert recent.count() == 1
    recent.see("b")
    for sid in ("c", "d", "e"):
        recent.see(sid)
    assert recent.count() == 3  # "b" dropped for room
    now[0] = 100
    assert recent.count() == 0
