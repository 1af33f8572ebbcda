"""The real server under uvicorn on 127.0.0.1: the seed's API and the OpenAI-compatible API."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import httpx
import openai
import pytest

from codeassist.model.engine import Engine
from tests.remote.conftest import Live, tiny_engine


def test_root_health_and_ready(shared_server: Live) -> None:
    with shared_server.client() as c:
        root = c.get("/").json()
        assert root["service"] == "codeassist" and root["status"] == "ok" and root["version"]
        assert c.get("/health").json() == {"status": "ok", "gpu_available": False, "model_loaded": True}
        assert c.get("/ready").status_code == 200


def test_the_seeds_curl_example(shared_server: Live) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed (Debian: apt-get install curl; `make test-deps` does it)")
    out = subprocess.run(
        [curl, "-s", "-X", "POST", f"{shared_server.url}/complete", "-H", "Content-Type: application/json",
         "-d", '{"code": "def fibonacci(n):", "max_tokens": 50}'],
        capture_output=True, text=True, timeout=60, check=True).stdout
    body = json.loads(out)
    assert set(body) == {"completion", "full_code"}
    assert body["full_code"] == "def fibonacci(n):" + body["completion"]


def test_complete_with_a_suffix_fills_the_middle(shared_server: Live) -> None:
    with shared_server.client() as c:
        r = c.post("/complete", json={"code": "def f(x):\n    ", "suffix": "\n\nprint(f(2))\n",
                                      "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200
    body = r.json()
    assert body["full_code"] == "def f(x):\n    " + body["completion"] + "\n\nprint(f(2))\n"


def test_the_openai_client_completes(shared_server: Live) -> None:
    client = openai.OpenAI(base_url=shared_server.url + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    assert model == "tiny"
    out = client.completions.create(model=model, prompt="import os\n", max_tokens=6, temperature=0,
                                    extra_body={"ignore_eos": True})
    assert out.object == "text_completion" and len(out.choices) == 1
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 6
    again = client.completions.create(model=model, prompt="import os\n", max_tokens=6, temperature=0,
                                      extra_body={"ignore_eos": True})
    assert again.choices[0].text == out.choices[0].text  # greedy is deterministic
    client.close()


def test_the_openai_client_streams_the_same_text(shared_server: Live) -> None:
    client = openai.OpenAI(base_url=shared_server.url + "/v1", api_key="unused", max_retries=0)
    kw = {"model": "tiny", "prompt": "def main():\n", "max_tokens": 8, "temperature": 0.0,
          "extra_body": {"ignore_eos": True}}
    whole = client.completions.create(**kw).choices[0].text  # type: ignore[call-overload]
    pieces, finishes = [], []
    for chunk in client.completions.create(stream=True, stream_options={"include_usage": True}, **kw):  # type: ignore[call-overload]
        for choice in chunk.choices:
            pieces.append(choice.text)
            finishes.append(choice.finish_reason)
        if chunk.usage is not None:
            assert chunk.usage.completion_tokens == 8
    assert "".join(pieces) == whole
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    client.close()


def test_n_choices_and_stop_strings(shared_server: Live) -> None:
    with shared_server.client() as c:
        base = c.post("/v1/completions", json={"prompt": "x = 1\n", "max_tokens": 12, "temperature": 0,
                                               "ignore_eos": True}).json()["choices"][0]["text"]
        stop = base[3:6]
        r = c.post("/v1/completions", json={"prompt": "x = 1\n", "max_tokens": 12, "temperature": 0, "n": 3,
                                            "stop": [stop], "ignore_eos": True})
    choices = r.json()["choices"]
    assert [ch["index"] for ch in choices] == [0, 1, 2]
    for ch in choices:
        assert ch["text"] == base[:base.index(stop)] and ch["finish_reason"] == "stop"


def test_metrics_expose_latency_queue_rejections_and_tokens(shared_server: Live) -> None:
    with shared_server.client() as c:
        c.post("/v1/completions", json={"prompt": "a", "max_tokens": 3, "ignore_eos": True})
        c.post("/v1/completions", json={"prompt": "a", "max_tokens": 0})
        text = c.get("/metrics").text
    for name in ("codeassist_time_to_first_token_seconds_bucket", "codeassist_request_latency_seconds_count",
                 "codeassist_time_per_output_token_seconds_sum", "codeassist_requests_queued",
                 "codeassist_requests_running", 'codeassist_requests_rejected_total{reason="invalid"}',
                 "codeassist_prompt_tokens_total", "codeassist_generated_tokens_total"):
        assert name in text, name
    assert shared_server.metric("codeassist_generated_tokens_total") >= 3


def test_ready_is_503_while_the_model_loads(serve) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()

    def slow_load() -> Engine:
        release.wait(20)
        return tiny_engine()

    live = serve(load=slow_load, wait_ready=False)
    with live.client() as c:
        assert c.get("/ready").status_code == 503
        assert c.get("/health").json()["model_loaded"] is False
        r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert r.status_code == 503 and "Retry-After" in r.headers
        release.set()
        deadline = time.monotonic() + 20
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_unknown_model_is_404_naming_the_field(shared_server: Live) -> None:
    r = httpx.post(shared_server.url + "/v1/completions", json={"model": "gpt-9", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
