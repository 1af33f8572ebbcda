import asyncio
import json
import threading
from pathlib import Path

import httpx
import pytest

import codeassist.remote.client  # noqa: F401  (RemoteBackend imports it lazily; broken, it fails here)
from codeassist.lsp.backends import CompletionRequest, LocalBackend, RemoteBackend
from codeassist.lsp.context import build_context
from codeassist.lsp.prompt import prompt_for
from codeassist.model.stops import StopRules
from codeassist.remote.settings import RemoteSettings


def request(text: str, max_tokens: int = 8, stop: tuple[str, ...] = ()) -> CompletionRequest:
    ctx = build_context("file:///a.py", "python", text, len(text))
    return CompletionRequest(prompt_for(ctx, 128), max_tokens=max_tokens, stop=StopRules(stop_strings=stop))


async def test_local_backend_loads_in_background_and_heals(tiny_model_path: Path) -> None:
    from codeassist.model.engine import Engine, GenerationRequest, StopRules

    backend = LocalBackend(str(tiny_model_path), device="cpu")
    assert not backend.status().ready and "loading" in (backend.status().reason or "")
    backend.start()
    assert await asyncio.to_thread(backend.wait_ready, 60)
    status = backend.status()
    assert status.ready and status.context_tokens == 256 and status.device == "cpu"
    req = request("def f(values):\n    return val", max_tokens=6)
    assert req.prompt.forced == " val"
    got = await backend.complete(req)
    # the same generation straight from the engine begins with the healed text, which is removed
    engine = Engine.load(str(tiny_model_path), device="cpu")
    raw = engine.generate(GenerationRequest(prompt=req.prompt.ids, forced_prefix=b" val",
                                            stop=StopRules(max_new_tokens=6)))
    assert raw.text.startswith(" val")
    assert got.text == raw.text[len(" val"):]
    await backend.aclose()


async def test_cancel_stops_generation_within_a_step(tiny_model_path: Path) -> None:
    backend = LocalBackend(str(tiny_model_path), device="cpu")
    backend.start()
    assert await asyncio.to_thread(backend.wait_ready, 60)
    engine = backend._engine
    assert engine is not None
    results = []
    started = threading.Event()
    orig = engine.generate

    def recording(req, cancel=None):  # type: ignore[no-untyped-def]
        started.set()
        out = orig(req, cancel)
        results.append(out)
        return out

    engine.generate = recording  # type: ignore[method-assign]
    req = CompletionRequest(request("x = 1\n").prompt, max_tokens=200)
    task = asyncio.ensure_future(backend.complete(req))
    await asyncio.to_thread(started.wait, 10)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    follow = await backend.complete(request("y = 2\n", max_tokens=2))  # the worker is free again
    assert follow.stop_reason in ("max_tokens", "eos")
    assert results[0].stop_reason == "cancelled" and len(results[0].tokens) < 200
    await backend.aclose()


async def test_each_request_runs_on_the_cores_free_then(tiny_model_path: Path) -> None:
    """Threads are chosen before every request from the free cores (capped), and the generation
    runs with them; a fixed `threads` is kept whatever the cores say."""
    import torch

    before = torch.get_num_threads()
    free = iter([1, 2, 1, 9])  # the load's answer, then one per request
    seen: list[int] = []
    backend = LocalBackend(str(tiny_model_path), device="cpu", cores=lambda: next(free))
    backend.start()
    assert await asyncio.to_thread(backend.wait_ready, 60)
    engine = backend._engine
    assert engine is not None
    orig = engine.generate

    def recording(req, cancel=None):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return orig(req, cancel)

    engine.generate = recording  # type: ignore[method-assign]
    try:
        for _ in range(3):
            await backend.complete(request("x = 1\n", max_tokens=2))
        assert seen == [2, 1, 4]  # 9 free cores: capped at MAX_THREADS

        fixed = LocalBackend(str(tiny_model_path), device="cpu", threads=1, cores=lambda: 2)
        fixed._engine = engine
        await fixed.complete(request("x = 1\n", max_tokens=2))
        assert seen[-1] == 1
        await fixed.aclose()
    finally:
        await backend.aclose()
        torch.set_num_threads(before)


async def test_missing_model_says_why_in_one_sentence(tmp_path: Path) -> None:
    backend = LocalBackend(str(tmp_path / "nope.safetensors"), device="cpu")
    backend.start()
    assert not await asyncio.to_thread(backend.wait_ready, 60)
    status = backend.status()
    assert not status.ready and status.reason and "\n" not in status.reason and "Traceback" not in status.reason
    got = await backend.complete(request("x = "))
    assert got.text == "" and got.reason == status.reason
    await backend.aclose()


async def test_remote_backend_delegates_to_the_client() -> None:
    seen = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(json.loads(r.content))
        return httpx.Response(200, json={"choices": [{"text": "compute(1)"}]})

    backend = RemoteBackend(RemoteSettings(url="http://127.0.0.1:9", api="openai"), httpx.MockTransport(handler))
    assert backend.status().ready
    got = await backend.complete(request("import os\nx = "))
    assert got.text == "compute(1)"
    assert seen[0]["prompt"].endswith("x = ")
    failing = RemoteBackend(RemoteSettings(url="http://127.0.0.1:9", api="openai"),
                            httpx.MockTransport(lambda r: httpx.Response(503)))
    bad = await failing.complete(request("x = "))
    assert bad.text == "" and bad.reason and "503" in bad.reason
    assert not RemoteBackend(RemoteSettings()).status().ready
    await backend.aclose()
    await failing.aclose()


async def test_the_stop_rules_reach_the_engine_with_the_requests_budget(tiny_model_path: Path) -> None:
    """BLOCK mode's predicates (dedent, next line) go to the engine, which stops while decoding."""
    from codeassist.model.engine import Engine, GenerationRequest

    engine = Engine.load(str(tiny_model_path), device="cpu")
    seen: list[GenerationRequest] = []
    orig = engine.generate

    def recording(req, cancel=None):  # type: ignore[no-untyped-def]
        seen.append(req)
        return orig(req, cancel)

    engine.generate = recording  # type: ignore[method-assign]
    rules = StopRules(stop_strings=("\n\n\n",), dedent_line_prefix="    ", suffix_line="return total")
    req = CompletionRequest(request("def f(x):\n    ").prompt, max_tokens=5, stop=rules, time_budget_s=9.0)
    LocalBackend._generate(engine, req, threading.Event())
    assert seen[0].stop == StopRules(max_new_tokens=5, stop_strings=("\n\n\n",), time_budget_s=9.0,
                                     dedent_line_prefix="    ", suffix_line="return total")
