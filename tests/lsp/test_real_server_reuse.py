"""The real language server process on a real model: KV prefix reuse while typing, cancellation
stopping the engine, and the int8 default model staying int8.

The server runs as `codeassist lsp --stdio` runs it (the same settings, backend factory and
stdio loop; see lsp/cli.py), plus one extra request, `test/engineTrace`, that reads what its
engine did: each generation's stop reason, token count and reused tokens, the decode steps run,
the model's module types, and how many matmuls ran the int8 kernel or the dequantized fallback.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from codeassist.lsp.client import LspClient, LspError

pytestmark = pytest.mark.slow

TRACED_SERVER = textwrap.dedent("""
    import collections, os, sys, time
    from dataclasses import replace
    import torch
    from codeassist.lsp.server import CodeassistServer, default_backend_factory, serve_stdio
    from codeassist.lsp.settings import Settings
    from codeassist.model import engine as engine_mod, quant_layers as quantized

    model, step_s = sys.argv[1], float(sys.argv[2])
    trace = {"results": [], "steps": 0, "modules": {}, "int8Calls": 0, "referenceCalls": 0}
    Engine = engine_mod.Engine

    generate = Engine.generate
    def traced_generate(self, request, cancel=None):
        res = generate(self, request, cancel)
        trace["results"].append({"stopReason": res.stop_reason, "tokens": len(res.tokens),
                                 "maxTokens": request.stop.max_new_tokens, "reused": res.reused_tokens,
                                 "stepsAtEnd": trace["steps"]})
        return res
    Engine.generate = traced_generate

    def traced_step(step):
        def run(self, *args):
            time.sleep(step_s)  # a slower model, so a cancel arrives mid-generation
            out = step(self, *args)
            trace["steps"] += 1
            return out
        return run
    Engine.decode_one_token = traced_step(Engine.decode_one_token)
    Engine.score_tokens = traced_step(Engine.score_tokens)

    load = Engine.load.__func__
    def traced_load(cls, *args, **kw):
        engine = load(cls, *args, **kw)
        trace["modules"] = dict(collections.Counter(type(m).__name__ for m in engine.model.modules()))
        return engine
    Engine.load = classmethod(traced_load)

    reference = quantized._reference_linear
    def counting_reference(layer, x):
        trace["referenceCalls"] += 1
        return reference(layer, x)
    quantized._reference_linear = counting_reference
    ops = torch.ops.quantized
    class CountingOps:
        def __getattr__(self, name):
            return getattr(ops, name)
        def linear_dynamic(self, *args):
            trace["int8Calls"] += 1
            return ops.linear_dynamic(*args)
    torch.ops.quantized = CountingOps()

    server = CodeassistServer(replace(Settings(), model=model, device="cpu"), default_backend_factory)

    @server.feature("test/engineTrace")
    def engine_trace(ls, params):
        return trace

    code = serve_stdio(server)
    sys.stderr.flush()
    os._exit(code)
""")

URI = "file:///tmp/real_server.py"


async def start(model: str, options: dict[str, Any], step_s: float = 0.0) -> LspClient:
    client = await LspClient.start([sys.executable, "-c", TRACED_SERVER, model, str(step_s)])
    await client.initialize({"codeassist": options})
    status = await client.wait_ready()
    assert status["ready"], status
    return client


@pytest.fixture
async def clients() -> AsyncIterator[list[LspClient]]:
    started: list[LspClient] = []
    yield started
    for c in started:
        await c.close()


async def engine_trace(client: LspClient) -> dict[str, Any]:
    trace: dict[str, Any] = await client.request("test/engineTrace", {}, timeout=10)
    return trace


def open_doc(client: LspClient, text: str) -> None:
    client.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python",
                                                            "version": 1, "text": text}})


def change(client: LspClient, text: str, version: int) -> None:
    client.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": version},
                                             "contentChanges": [{"text": text}]})


def inline(client: LspClient, text: str, invoked: bool = False) -> tuple[int, asyncio.Future[Any]]:
    """An inline request at the end of `text` (automatic, as while typing, unless invoked)."""
    lines = text.split("\n")
    return client.send_request("textDocument/inlineCompletion", {
        "textDocument": {"uri": URI}, "position": {"line": len(lines) - 1, "character": len(lines[-1])},
        "context": {"triggerKind": 1 if invoked else 2}})


async def type_chars(client: LspClient, text: str, chars: str, version: int) -> str:
    """Type `chars` one at a time after `text`, asking for a completion after each, as an editor does."""
    for ch in chars:
        text += ch
        version += 1
        change(client, text, version)
        await asyncio.wait_for(inline(client, text)[1], 60)
    return text


async def test_typing_reuses_the_kv_cache_and_prefix_reuse_false_turns_it_off(
        clients: list[LspClient], tiny_model_path: Path) -> None:
    # no suggestion cache, so that every keystroke reaches the engine
    client = await start(str(tiny_model_path), {"maxTokens": 6, "cache": False})
    clients.append(client)
    text = "import os\n\n\ndef area(width, height):\n    return width"
    open_doc(client, text)
    warm_up = len((await engine_trace(client))["results"])  # the backend's own warm-up generation
    text = await type_chars(client, text, " * heigh", version=1)
    typed = (await engine_trace(client))["results"][warm_up:]
    assert len(typed) == 8
    reused = [r["reused"] for r in typed]
    assert min(reused[1:]) > 0, reused  # each keystroke reuses the prompt before it
    client.notify("workspace/didChangeConfiguration", {"settings": {"codeassist": {"prefixReuse": False}}})
    before = len((await engine_trace(client))["results"])
    text = await type_chars(client, text + "t\n\n\ndef volume(a, b, c):\n    return a", " * b", version=20)
    off = (await engine_trace(client))["results"][before:]
    assert len(off) == 4 and [r["reused"] for r in off] == [0, 0, 0, 0]
    client.notify("workspace/didChangeConfiguration", {"settings": {"codeassist": {"prefixReuse": True}}})
    before = len((await engine_trace(client))["results"])
    await type_chars(client, text, " * c", version=40)
    on_again = (await engine_trace(client))["results"][before:]
    assert len(on_again) == 4 and min(r["reused"] for r in on_again[1:]) > 0


async def test_cancel_request_stops_the_engine(clients: list[LspClient], tiny_model_path: Path) -> None:
    # 20 ms a decode step and 500 tokens allowed: a generation left running would take 10 s
    client = await start(str(tiny_model_path), {"maxTokens": 500, "timeBudgetMs": 30000, "cache": False,
                                                "multiline": "always"}, step_s=0.02)
    clients.append(client)
    text = "import os\n\n\ndef area(width, height):\n    return width * "
    open_doc(client, text)
    warm_up = await engine_trace(client)
    gen_id, gen = inline(client, text, invoked=True)
    async with asyncio.timeout(30):
        while (await engine_trace(client))["steps"] < warm_up["steps"] + 3:  # the generation has begun
            await asyncio.sleep(0.01)
    client.notify("$/cancelRequest", {"id": gen_id})
    with pytest.raises(LspError) as err:
        await asyncio.wait_for(gen, 10)
    assert err.value.code == -32800
    at_reply = (await engine_trace(client))["steps"]
    async with asyncio.timeout(10):  # the engine's generate returns...
        while len((trace := await engine_trace(client))["results"]) == len(warm_up["results"]):
            await asyncio.sleep(0.01)
    (cancelled,) = trace["results"][len(warm_up["results"]):]
    # ... because of the cancel, after at most the step that was running when the reply went out
    assert cancelled["stopReason"] == "cancelled", cancelled
    assert cancelled["tokens"] < cancelled["maxTokens"] == 500
    assert cancelled["stepsAtEnd"] <= at_reply + 1
    assert (await engine_trace(client))["steps"] == cancelled["stepsAtEnd"]  # and nothing ran after it


async def test_the_default_model_runs_as_int8_in_the_server(clients: list[LspClient]) -> None:
    client = await start("default", {"maxTokens": 4, "cache": False})
    clients.append(client)
    loaded = await engine_trace(client)
    modules = loaded["modules"]
    assert modules.get("Int8Linear") == 24 and modules.get("Int8Embedding") == 1 and modules.get("TiedHead") == 1
    assert "Linear" not in modules  # no float linear layer left
    text = "def read_lines(path):\n    with open(path) as f:\n        return "
    open_doc(client, text)
    await asyncio.wait_for(inline(client, text, invoked=True)[1], 60)
    after = await engine_trace(client)
    assert len(after["results"]) > len(loaded["results"])
    assert after["int8Calls"] > loaded["int8Calls"] and after["referenceCalls"] == 0
