"""Every limit of the team server, each on by default and each tested against the real server."""

from __future__ import annotations

import concurrent.futures
import logging
import time

import httpx
import pytest

from codeassist.model.engine import Engine
from codeassist.remote import generation, scheduler
from codeassist.remote.batch import BatchState
from codeassist.remote.settings import ServerSettings, SettingsError
from tests.remote.conftest import Live, tiny_engine

KEY = "sk-team-0123456789abcdef"
LONG = {"prompt": "def f(x):\n", "max_tokens": 200, "ignore_eos": True, "temperature": 0}


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_api_keys_guard_everything_but_liveness_and_readiness(serve, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    live: Live = serve(ServerSettings(port=0, api_keys=("other-key", KEY)))
    body = {"prompt": "x", "max_tokens": 2}
    with live.client() as c:
        for path in ("/", "/health", "/ready"):
            assert c.get(path).status_code == 200, path
        for path in ("/metrics", "/v1/models"):
            assert c.get(path).status_code == 401, path
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert c.post("/v1/completions", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/completions", json=body, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
        assert c.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}x"}).status_code == 401
        ok = c.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        assert c.post("/complete", json={"code": "x", "max_tokens": 2},
                      headers={"Authorization": "Bearer other-key"}).status_code == 200
    assert live.metric('codeassist_requests_rejected_total{reason="unauthorized"}',
                       {"Authorization": f"Bearer {KEY}"}) >= 4
    assert KEY not in caplog.text and "other-key" not in caplog.text


def test_body_over_the_cap_is_413_before_parsing(serve) -> None:  # type: ignore[no-untyped-def]
    live: Live = serve(ServerSettings(port=0, max_body_bytes=2000))
    big = {"prompt": "x" * 5000, "max_tokens": 2}
    with live.client() as c:
        r = c.post("/v1/completions", json=big)
        assert r.status_code == 413 and "2000-byte" in r.json()["error"]["message"]

        def chunks():  # type: ignore[no-untyped-def]
            yield b'{"prompt": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'", "max_tokens": 2}'

        r = c.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"prompt": "x", "max_tokens": "many"}, 422, "max_tokens"),
    ({"prompt": "x", "max_tokens": 0}, 422, "max_tokens"),
    ({"prompt": "x", "temperature": 9}, 422, "temperature"),
    ({"prompt": "x", "top_p": 0}, 422, "top_p"),
    ({"max_tokens": 3}, 422, "prompt"),
    ({"prompt": 5}, 422, "prompt"),
    ({"prompt": "x", "stop": [chr(97 + i) for i in range(17)]}, 400, "stop"),  # at most 16
    ({"prompt": "x", "stop": ["a", ""]}, 400, "stop"),
    ({"prompt": "x = 1", "healed_prefix": "2"}, 400, "healed_prefix"),
    ({"prompt": "x", "n": 50}, 400, "n"),
    ({"prompt": "x", "echo": True}, 400, "echo"),
    ({"prompt": "x", "logprobs": 3}, 400, "logprobs"),
    ({"prompt": ["a", "b"]}, 400, "prompt"),
    ({"prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
])
def test_invalid_parameters_name_the_field(shared_server: Live, body: dict[str, object], status: int,
                                           param: str) -> None:
    r = httpx.post(shared_server.url + "/v1/completions", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_bad_bodies_are_4xx_never_500(shared_server: Live) -> None:
    with shared_server.client() as c:
        assert c.post("/v1/completions", content=b"{not json").status_code == 400
        assert c.post("/v1/completions", content=b"[1, 2]", headers={"Content-Type": "application/json"}).status_code < 500
        assert c.post("/complete", json={"max_tokens": 5}).json()["error"]["param"] == "code"
        assert c.post("/complete", json={"code": "x", "top_k": -1}).json()["error"]["param"] == "top_k"
        assert c.post("/complete", json={"code": "x", "bogus": 1}).json()["error"]["param"] == "bogus"
        for junk in (b"", b"null", b'{"prompt": null}', "\u00ff".encode("latin-1")):
            r = c.post("/v1/completions", content=junk, headers={"Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (junk, r.status_code)
        lone_surrogate = c.post("/v1/completions", content=b'{"prompt": "\\ud800", "max_tokens": 2}',
                                headers={"Content-Type": "application/json"})
        assert lone_surrogate.status_code < 500


def test_prompt_plus_max_tokens_over_the_context_is_400(shared_server: Live) -> None:
    long_prompt = "x = 1\n" * 200  # ~600 tokens; the tiny model's context is 256
    with shared_server.client() as c:
        r = c.post("/v1/completions", json={"prompt": long_prompt, "max_tokens": 10})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert c.post("/complete", json={"code": long_prompt}).status_code == 400
        # an editor asks the server to keep what fits (vLLM's truncate_prompt_tokens = -1)
        fitted = c.post("/v1/completions", json={"prompt": long_prompt, "max_tokens": 10, "truncate_prompt_tokens": -1})
        assert fitted.status_code == 200
        assert fitted.json()["usage"]["prompt_tokens"] + 10 <= 256


def test_a_full_queue_answers_429_with_retry_after_and_admitted_requests_finish(serve) -> None:  # type: ignore[no-untyped-def]
    live: Live = serve(ServerSettings(port=0, max_batch=1, max_queue=1), load=lambda: tiny_engine(0.02))
    body = {"prompt": "x", "max_tokens": 15, "ignore_eos": True}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: httpx.post(live.url + "/v1/completions", json=body, timeout=30), range(6)))
    codes = sorted(r.status_code for r in results)
    assert set(codes) == {200, 429} and codes.count(200) >= 2
    for r in results:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
        else:
            assert r.json()["usage"]["completion_tokens"] == 15
    assert live.metric('codeassist_requests_rejected_total{reason="queue_full"}') == codes.count(429)


class FakeClock:
    """The server's `time` module where deadlines are set and checked, with a clock that moves only
    when the model runs: one second for every forward pass."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def test_the_per_request_time_limit_cuts_generation(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    monkeypatch.setattr(generation, "time", clock)  # the request's deadline
    monkeypatch.setattr(scheduler, "time", clock)  # the check after every token

    def ticking_engine() -> Engine:
        engine = tiny_engine()
        engine.model.lm_head.register_forward_hook(lambda *_: setattr(clock, "now", clock.now + 1.0))
        return engine

    live: Live = serve(ServerSettings(port=0, request_timeout_s=4.5), load=ticking_engine)
    r = httpx.post(live.url + "/v1/completions", json=LONG, timeout=30)
    assert r.status_code == 200
    assert r.json()["choices"][0]["finish_reason"] == "length"
    # token k comes out of the k-th forward pass, at second k: the 5th is the first at or past 4.5 s
    assert r.json()["usage"]["completion_tokens"] == 5
    assert live.metric('codeassist_sequences_finished_total{reason="time"}') == 1
    # (a request whose limit passes while it waits for a row: test_scheduler.py)


def test_no_cors_unless_configured(serve, shared_server: Live) -> None:  # type: ignore[no-untyped-def]
    origin = {"Origin": "https://evil.example"}
    r = httpx.get(shared_server.url + "/v1/models", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(shared_server.url + "/v1/completions",
                        headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    live: Live = serve(ServerSettings(port=0, cors_origins=("https://ide.example",)))
    ok = httpx.get(live.url + "/v1/models", headers={"Origin": "https://ide.example"})
    assert ok.headers["access-control-allow-origin"] == "https://ide.example"
    assert "access-control-allow-origin" not in httpx.get(live.url + "/v1/models", headers=origin).headers
    # a browser client may send the editor-session header the replicas are routed by
    pre_ok = httpx.options(live.url + "/v1/completions",
                           headers={"Origin": "https://ide.example", "Access-Control-Request-Method": "POST",
                                    "Access-Control-Request-Headers": "x-codeassist-session"})
    assert pre_ok.status_code == 200
    assert "x-codeassist-session" in pre_ok.headers["access-control-allow-headers"].lower()


def test_wildcard_origins_with_credentials_and_open_binds_without_keys_are_refused() -> None:
    with pytest.raises(SettingsError, match="wildcard"):
        ServerSettings(cors_origins=("*",), cors_credentials=True)
    with pytest.raises(SettingsError, match="without API keys"):
        ServerSettings(host="0.0.0.0")
    assert ServerSettings(host="0.0.0.0", api_keys=(KEY,)).host == "0.0.0.0"
    assert ServerSettings().host == "127.0.0.1"  # loopback unless asked


def test_the_serve_command_binds_loopback_by_default() -> None:
    import argparse

    from codeassist.remote.cli import add_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from_args(parser.parse_args([]))
    assert settings.host == "127.0.0.1" and settings.api_keys == ()
    assert settings.max_queue > 0 and settings.max_body_bytes > 0 and settings.request_timeout_s > 0


def test_a_model_error_is_a_generic_500_with_a_request_id_and_the_next_request_works(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    live: Live = serve()
    real = BatchState.decode
    fail = {"on": True}

    def flaky(self: BatchState):  # type: ignore[no-untyped-def]
        if fail["on"]:
            fail["on"] = False
            raise RuntimeError("CUDA error: secret internals at /srv/model.py line 42")
        return real(self)

    monkeypatch.setattr(BatchState, "decode", flaky)
    body = {"prompt": "x", "max_tokens": 4, "ignore_eos": True}
    with live.client() as c:
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 500
        assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
        assert r.headers["x-request-id"]
        assert c.post("/v1/completions", json=body).status_code == 200


def test_an_exception_in_a_route_never_leaks_a_traceback(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    live: Live = serve()

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("internal detail /home/secret")

    monkeypatch.setattr(generation, "build_prompt", broken)
    r = httpx.post(live.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert r.status_code == 500 and "secret" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] in r.json()["error"]["message"]


def test_a_client_that_disconnects_frees_its_slot(serve) -> None:  # type: ignore[no-untyped-def]
    live: Live = serve(ServerSettings(port=0, max_batch=1), load=lambda: tiny_engine(0.02))
    with httpx.Client(timeout=30) as c, c.stream("POST", live.url + "/v1/completions", json={**LONG, "stream": True}) as r:
        next(r.iter_lines())  # the first token arrived; now walk away
    wait_for(lambda: live.metric('codeassist_sequences_finished_total{reason="cancelled"}') == 1)
    # a non-streaming client that gives up (client timeout) frees its row too
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(live.url + "/v1/completions", json=LONG, timeout=0.3)
    wait_for(lambda: live.metric('codeassist_sequences_finished_total{reason="cancelled"}') == 2)
    wait_for(lambda: live.state.scheduler.in_flight == 0)
    r2 = httpx.post(live.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
    assert r2.status_code == 200
