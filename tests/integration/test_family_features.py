"""Every engine feature for every open family, end to end through the product's entry points.

Each test runs once per family (qwen2, llama, gpt_bigcode) on a complete tiny Hugging Face folder
(tests/families_fixture.py): `Engine.load(folder)` with `complete`, token healing, stop strings
and the end-of-text stop, KV prefix reuse, prompt-lookup speculation; `codeassist quantize`
int8/int4 then `Engine.load` of the file; the language server over stdio; the team server with
concurrent requests; and `codeassist complete`. Issue 15, item 4.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from codeassist.model.completion import build_prompt, complete
from codeassist.model.engine import Engine, GenerationRequest, GenerationResult, StopRules
from codeassist.model.fim_templates import TEMPLATES
from codeassist.model.hf_tokenizer import HFTokenizer
from codeassist.model.speculative import SpeculationParams
from tests.families_fixture import TinyFolder, build_folder, hf_decode
from tests.integration.team_server import TeamServer

PREFIX = "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n        lines = f.read"
SUFFIX = "\n    return lines\n\n\nprint(read_lines('x'))\n"
MAX = 16


def load(tiny: TinyFolder) -> Engine:
    return Engine.load(str(tiny.path), device="cpu")


def spy(engine: Engine) -> list[GenerationRequest]:
    """The requests the engine is asked to generate, in order (the engine still runs them)."""
    seen: list[GenerationRequest] = []
    generate = engine.generate

    def recording(request: GenerationRequest, cancel: threading.Event | None = None) -> GenerationResult:
        seen.append(request)
        return generate(request, cancel)

    engine.generate = recording  # type: ignore[method-assign]
    return seen


def greedy(engine: Engine, prompt: tuple[int, ...], forced: bytes = b"", n: int = MAX, stop: tuple[str, ...] = (),
           stop_on_eos: bool = True, speculation: SpeculationParams | None = None) -> GenerationResult:
    req = GenerationRequest(prompt=prompt, forced_prefix=forced,
                            stop=StopRules(max_new_tokens=n, stop_strings=stop, stop_on_eos=stop_on_eos),
                            speculation=speculation or SpeculationParams())
    return engine.generate(req)


# -- the engine, loaded from the folder ------------------------------------------------------------


def test_fim_completion_uses_the_family_template(tiny: TinyFolder) -> None:
    engine = load(tiny)
    assert isinstance(engine.tokenizer, HFTokenizer) and engine.tokenizer.template is TEMPLATES[tiny.template]
    asked = spy(engine)
    text, result = complete(engine, PREFIX, SUFFIX, max_new_tokens=MAX, stop=())
    (req,) = asked
    assert req.forced_prefix and PREFIX.encode().endswith(req.forced_prefix)
    healed = PREFIX.encode()[: -len(req.forced_prefix)].decode()
    ids = list(req.prompt)
    if tiny.template == "deepseek":  # DeepSeek-Coder's prompts begin with its BOS
        assert ids[0] == engine.tokenizer.bos_id
        ids = ids[1:]
    assert hf_decode(tiny.path, ids) == TEMPLATES[tiny.template].build(healed, SUFFIX)
    assert result.prompt_tokens == len(req.prompt)
    assert result.text.encode().startswith(req.forced_prefix)
    assert text == result.text[len(req.forced_prefix.decode()):]
    assert result.tokens and result.stop_reason in ("max_tokens", "eos")
    # the text is the tokens' own bytes, read by the tokenizers library
    assert hf_decode(tiny.path, result.tokens) == result.text


def test_token_healing_forces_the_cut_word(tiny: TinyFolder) -> None:
    engine = load(tiny)
    tk = engine.tokenizer
    prefix = "def main():\n    value = compu"
    prompt = build_prompt(prefix, "", 200, tokenizer=tk)
    last = prompt.forced_prefix  # healed back to the word's start, as the editor heals
    assert last.strip() == b"compu" and prefix.encode().endswith(last)
    assert tk.decode(list(prompt.ids)) + last.decode() == prefix  # left to right: the prefix less the healed word
    result = greedy(engine, prompt.ids, prompt.forced_prefix, stop_on_eos=False)
    assert result.text.encode().startswith(prompt.forced_prefix)
    # the first tokens spell the forced text out (a token may run past it), never something else
    spelled = b"".join(tk.token_bytes(t) for t in result.tokens)
    assert spelled.startswith(prompt.forced_prefix)
    # without healing the prompt holds the healed word's tokens and nothing is forced
    unhealed = build_prompt(prefix, "", 200, heal=False, tokenizer=tk)
    assert len(unhealed.ids) == len(prompt.ids) + len(tk.encode(last.decode())) and unhealed.forced_prefix == b""
    text, _ = complete(engine, prefix, "", max_new_tokens=MAX, stop=())
    assert text == result.text[len(last.decode()):]


def test_stop_strings_and_the_end_of_text_stop(tiny: TinyFolder) -> None:
    engine = load(tiny)
    tk = engine.tokenizer
    prompt = build_prompt(PREFIX, SUFFIX, 200, tokenizer=tk)
    free = greedy(engine, prompt.ids, prompt.forced_prefix, n=24, stop_on_eos=False)
    assert len(free.tokens) == 24 and free.stop_reason == "max_tokens"
    assert not any(tk.is_special(t) for t in free.tokens), "specials are masked without the eos stop"
    # a stop string taken from the middle of the free text: the output is cut before its first match
    body = free.text[len(prompt.forced_prefix.decode()):]
    assert len(body) >= 6, body
    stop = body[len(body) // 2: len(body) // 2 + 2]
    cut = free.text.find(stop, len(prompt.forced_prefix.decode()))
    stopped = greedy(engine, prompt.ids, prompt.forced_prefix, n=24, stop=(stop,), stop_on_eos=False)
    assert stopped.stop_reason == "stop" and stopped.text == free.text[:cut]
    assert stopped.tokens == free.tokens[:len(stopped.tokens)]
    # the end-of-text stop: make the model's end token score just above a token greedy picks at
    # step 12, so greedy picks the end token there (or earlier, where that token was also best)
    target = free.tokens[12]
    head = engine.model.get_parameter("lm_head.weight")
    with torch.no_grad():
        head[tk.eot_id] = head[target] * 1.001
    engine.reset_prefix()
    ended = greedy(engine, prompt.ids, prompt.forced_prefix, n=24)
    assert ended.stop_reason == "eos", (ended.stop_reason, ended.tokens, free.tokens)
    assert len(ended.tokens) <= free.tokens.index(target)
    assert ended.tokens == free.tokens[:len(ended.tokens)] and tk.eot_id not in ended.tokens
    # with the stop switched off the end token is masked: the free run again
    engine.reset_prefix()
    assert greedy(engine, prompt.ids, prompt.forced_prefix, n=24, stop_on_eos=False).tokens == free.tokens


def test_prefix_reuse_across_keystrokes_equals_a_cold_engine(tiny: TinyFolder) -> None:
    engine = load(tiny)
    first = complete(engine, PREFIX, SUFFIX, max_new_tokens=MAX, stop=())[1]
    assert first.reused_tokens == 0
    typed = PREFIX + "lines()"  # the user typed on
    warm_text, warm = complete(engine, typed, SUFFIX, max_new_tokens=MAX, stop=())
    assert warm.reused_tokens > 0
    cold_text, cold = complete(load(tiny), typed, SUFFIX, max_new_tokens=MAX, stop=())
    assert cold.reused_tokens == 0
    assert warm.tokens == cold.tokens and warm_text == cold_text and warm.prompt_tokens == cold.prompt_tokens


def test_prompt_lookup_speculation_equals_plain_greedy(tiny: TinyFolder) -> None:
    engine = load(tiny)
    tk = engine.tokenizer
    # a prompt the output can copy from: the same lines twice
    lines = "    x = self.value + other.value\n    y = self.name + other.name\n"
    prompt = build_prompt("class A:\n  def f(self, other):\n" + lines + lines + "    x = self", "", 200,
                          tokenizer=tk)
    plain = greedy(engine, prompt.ids, prompt.forced_prefix, n=32, stop_on_eos=False)
    engine.reset_prefix()
    fast = greedy(engine, prompt.ids, prompt.forced_prefix, n=32, stop_on_eos=False,
                  speculation=SpeculationParams(method="prompt_lookup", num_draft=4, ngram_min=1))
    assert fast.tokens == plain.tokens and fast.text == plain.text
    assert fast.drafted_tokens > 0 and fast.verify_steps > 0, "no draft was proposed: the test proves nothing"


@pytest.mark.gpu
def test_cuda_bf16_completes_with_healing_and_prefix_reuse(tiny: TinyFolder) -> None:
    """A GPU check: Engine.load on CUDA defaults to bf16; FIM + healing and prefix reuse hold there."""
    if not torch.cuda.is_available():
        pytest.skip("GPU check: needs CUDA; run it on a machine with a GPU (pytest -m gpu)")
    engine = Engine.load(str(tiny.path), device="cuda")
    assert engine.dtype == torch.bfloat16 and engine.device.type == "cuda"
    text, first = complete(engine, PREFIX, SUFFIX, max_new_tokens=MAX, stop=())
    forced = first.text[:len(first.text) - len(text)]  # the healed text the output began with
    assert first.tokens and forced and PREFIX.endswith(forced)
    typed = PREFIX + "lines()"
    warm = complete(engine, typed, SUFFIX, max_new_tokens=MAX, stop=())[1]
    cold = complete(Engine.load(str(tiny.path), device="cuda"), typed, SUFFIX, max_new_tokens=MAX, stop=())[1]
    assert warm.reused_tokens > 0 and warm.tokens == cold.tokens


# -- codeassist quantize, then Engine.load and the team server on the file ------------------------


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantize_cli_file_carries_the_tokenizer_and_completes_as_in_memory(
        tiny: TinyFolder, method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.cli.main import main
    from codeassist.model.checkpoint import read_info
    from codeassist.model.families import load_pretrained
    from codeassist.quantization.quantize import quantize

    out = tmp_path / f"{tiny.family}-{method}.safetensors"
    assert main(["quantize", str(tiny.path), "--method", method, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    info = read_info(out)
    assert (info.family, info.scheme, info.tokenizer) == (tiny.family, method, "hf")
    loaded = Engine.load(out, device="cpu")
    folder_tok = HFTokenizer.from_folder(tiny.path)
    assert loaded.tokenizer.to_metadata() == folder_tok.to_metadata()
    assert isinstance(loaded.tokenizer, HFTokenizer) and loaded.tokenizer.template is TEMPLATES[tiny.template]
    float_model, _ = load_pretrained(tiny.path)
    q = quantize(float_model, method)
    built = Engine(q.build(float_model), torch.device("cpu"), torch.float32, tokenizer=folder_tok)
    a = complete(loaded, PREFIX, SUFFIX, max_new_tokens=MAX, stop=())
    b = complete(built, PREFIX, SUFFIX, max_new_tokens=MAX, stop=())
    assert a[1].tokens == b[1].tokens and a[0] == b[0]
    # the team server (in a thread, on loopback) serves the file: its FIM answer is the engine's text
    from tests.remote.conftest import start_server

    live = start_server(load=lambda: Engine.load(out, device="cpu"))
    try:
        r = httpx.post(live.url + "/v1/completions", json={"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": MAX,
                                                           "temperature": 0, "ignore_eos": True}, timeout=60)
    finally:
        live.stop()
    assert r.status_code == 200, r.text
    prompt = build_prompt(PREFIX, SUFFIX, 1 << 30, tokenizer=loaded.tokenizer)
    loaded.reset_prefix()
    want = greedy(loaded, prompt.ids, prompt.forced_prefix, stop_on_eos=False)
    assert r.json()["usage"]["prompt_tokens"] == len(prompt.ids)
    assert r.json()["choices"][0]["text"] == want.text[len(prompt.forced_prefix.decode()):]


# -- codeassist complete --------------------------------------------------------------------------


def test_complete_cli_prints_the_engine_completion(tiny: TinyFolder, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.cli.main import main

    source = tmp_path / "lines.py"
    source.write_text(PREFIX + SUFFIX)
    line = PREFIX.count("\n") + 1
    col = len(PREFIX.split("\n")[-1]) + 1
    assert main(["complete", str(source), "--line", str(line), "--col", str(col), "--model", str(tiny.path),
                 "--device", "cpu", "--threads", "1", "--max-tokens", str(MAX), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    torch.set_num_threads(1)
    text, result = complete(load(tiny), PREFIX, SUFFIX, max_new_tokens=MAX)
    assert printed["completion"] == text and printed["prompt_tokens"] == result.prompt_tokens
    assert printed["tokens"] == len(result.tokens) > 0


# -- the language server over stdio --------------------------------------------------------------


@pytest.mark.slow
async def test_language_server_answers_inline_completion(tiny_folders: dict[str, TinyFolder]) -> None:
    """Every family's folder in its own `codeassist lsp --stdio`, the sessions side by side: a server
    spends about 5 s of CPU starting, which they spend at once on two cores."""
    results = await asyncio.gather(*(inline_completion_session(tiny) for tiny in tiny_folders.values()),
                                   return_exceptions=True)
    for family, result in zip(tiny_folders, results, strict=True):
        if isinstance(result, BaseException):
            raise AssertionError(f"the {family} folder's language server") from result


async def inline_completion_session(tiny: TinyFolder) -> None:
    from lsprotocol import types
    from pytest_lsp import ClientServerConfig, LanguageClient

    cmd = [sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio"]
    client: LanguageClient = await ClientServerConfig(server_command=cmd).start()  # type: ignore[assignment]
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={"codeassist": {"model": str(tiny.path), "device": "cpu", "maxTokens": 12,
                                                   "timeBudgetMs": 30000}}))

        async def status() -> dict[str, Any]:
            got = await client.protocol.send_request_async("codeassist/status", {})  # type: ignore[no-untyped-call]
            return dict(got._asdict()) if hasattr(got, "_asdict") else dict(got)

        for _ in range(1200):
            st = await status()
            if st["ready"] or (isinstance(st["lastReason"], str) and "loading" not in st["lastReason"]):
                break
            await asyncio.sleep(0.1)
        assert st["ready"], st
        assert st["backend"] == "local" and st["model"] == tiny.path.name and st["device"] == "cpu"
        uri, text = "file:///tmp/lines.py", PREFIX + SUFFIX
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=text)))
        line = PREFIX.count("\n")
        pos = types.Position(line=line, character=len(PREFIX.split("\n")[-1]))
        inline = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=pos,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        assert inline is None or isinstance(inline, (types.InlineCompletionList, list))
        st = await status()
        assert st["p50Ms"] is not None, st  # the request ran through the model
        assert st["lastReason"] is None or "error" not in str(st["lastReason"]).lower(), st
        # the next keystroke (a character the suggestion did not start with, so the model runs again)
        # reuses the first request's keys and values
        shown = str(inline.items[0].insert_text) if isinstance(inline, types.InlineCompletionList) and inline.items \
            else ""
        typed = "q" if shown.startswith("z") else "z"
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(pos, pos), text=typed)]))
        after = types.Position(line=pos.line, character=pos.character + 1)
        await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=after,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        st = await status()
        assert st["reusedTokens"] and st["reusedTokens"] > 0, st
        assert not client.error, client.error
    finally:
        await client.shutdown_session()
        await client.stop()  # type: ignore[no-untyped-call]


def test_language_server_prompt_budget_is_the_engine_context(tiny: TinyFolder, tmp_path: Path) -> None:
    from codeassist.lsp import backends
    from codeassist.model.engine import MAX_CONTEXT

    # a model trained on more positions than the engine caches (Qwen2.5-Coder: 32768, cache 4096)
    long = build_folder(tmp_path / tiny.family, tiny.family, positions=2 * MAX_CONTEXT)
    backend = backends.LocalBackend(str(long.path), "cpu", threads=1)
    backend.start()
    assert backend.wait_ready(300), backend.status().reason
    engine = Engine.load(str(long.path), device="cpu")
    assert engine.context_tokens == MAX_CONTEXT
    # the pipeline budgets its prompt as context_tokens - maxTokens (lsp/pipeline.py)
    assert backend.status().context_tokens == engine.context_tokens


# -- codeassist serve ---------------------------------------------------------------------------


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_team_server_text_stream_decodes_as_the_tokenizer(tiny: TinyFolder) -> None:
    from codeassist.model.textstream import TextStream

    tk = HFTokenizer.from_folder(tiny.path)
    byte_ids = {tk.token_bytes(i): i for i in range(tk.n_vocab) if len(tk.token_bytes(i)) == 1}
    # a stray byte a random (or confused) model may emit, then U+05FC's two bytes in two tokens
    ids = [byte_ids[b"\xff"], byte_ids[b"\xd7"], byte_ids[b"\xbc"]]
    stream = TextStream(tokenizer=tk)
    shown = "".join(stream.push(i) for i in ids) + stream.finish()
    assert shown == hf_decode(tiny.path, ids) == tk.decode(ids) == "\ufffd\u05fc"


@pytest.mark.slow
def test_team_server_batches_concurrent_requests_and_fills_in_the_middle(
        tiny: TinyFolder, team_servers: dict[str, TeamServer]) -> None:
    server = team_servers[tiny.family]  # `codeassist serve --model <folder>`, started with the module (conftest)
    url = server.url
    try:
        server.wait_ready()
        n = 48
        prompts = ["def add(a, b):\n    return a", "class Reader:\n    def __init__(self, path):\n        self."]

        def ask(prompt: str, suffix: str | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}
            if suffix is not None:
                body["suffix"] = suffix
            r = httpx.post(url + "/v1/completions", json=body, timeout=300)
            assert r.status_code == 200, r.text
            return dict(r.json())

        alone = [ask(p) for p in prompts]
        steps0, tokens0 = metric(url, "codeassist_batch_steps_total"), metric(url, "codeassist_generated_tokens_total")
        together: list[dict[str, Any]] = [{}, {}]
        barrier = threading.Barrier(2)

        def run(i: int) -> None:
            barrier.wait()
            together[i] = ask(prompts[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        steps = metric(url, "codeassist_batch_steps_total") - steps0
        tokens = metric(url, "codeassist_generated_tokens_total") - tokens0
        assert tokens == 2 * n
        assert steps < 2 * n - 1, f"{steps} decode steps for {tokens} tokens: the requests did not share a batch"
        for a, b in zip(alone, together, strict=True):
            assert a["choices"][0]["text"] == b["choices"][0]["text"]
            assert (a["usage"]["prompt_tokens"], a["usage"]["completion_tokens"]) == (
                b["usage"]["prompt_tokens"], b["usage"]["completion_tokens"])
        # fill-in-the-middle: the server's prompt is the family's template, its text the engine's
        engine = load(tiny)
        prompt = build_prompt(PREFIX, SUFFIX, 1 << 30, tokenizer=engine.tokenizer)
        ids = list(prompt.ids[1:] if tiny.template == "deepseek" else prompt.ids)
        healed = PREFIX.encode()[: -len(prompt.forced_prefix)].decode()
        assert hf_decode(tiny.path, ids) == TEMPLATES[tiny.template].build(healed, SUFFIX)
        fim = ask(PREFIX, SUFFIX)
        assert fim["usage"]["prompt_tokens"] == len(prompt.ids)
        want = greedy(engine, prompt.ids, prompt.forced_prefix, n=n, stop_on_eos=False)
        assert fim["choices"][0]["text"] == want.text[len(prompt.forced_prefix.decode()):]
        # streamed, the same text
        body = {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": n, "temperature": 0, "ignore_eos": True,
                "stream": True}
        pieces: list[str] = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=300) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    pieces.extend(c["text"] for c in json.loads(line[6:])["choices"])
        assert "".join(pieces) == fim["choices"][0]["text"]
        # the next keystroke reuses the server's cached prefix and gives a cold engine's text
        typed = PREFIX + "lines()"
        again = ask(typed, SUFFIX)
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, again["usage"]
        cold = build_prompt(typed, SUFFIX, 1 << 30, tokenizer=engine.tokenizer)
        engine.reset_prefix()
        want = greedy(engine, cold.ids, cold.forced_prefix, n=n, stop_on_eos=False)
        assert again["choices"][0]["text"] == want.text[len(cold.forced_prefix.decode()):]
    finally:
        server.stop()
