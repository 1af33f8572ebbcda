"""Each remote dialect against a real HTTP server on 127.0.0.1 that checks the exact request:
path, JSON body, headers (the session id for affinity, the API key), and answers as that server
family does (the templates' text is checked against the model cards in tests/model)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from codeassist.model.fim_templates import TEMPLATES
from codeassist.remote.client import (
    SESSION_HEADER,
    SESSION_ID,
    RemoteClient,
    RemoteError,
    RemoteSettings,
    resolve_template,
    trim_at_stops,
)
from tests.model.test_fim_templates import CARDS

PREFIX = "def area(r):\n    return "
SUFFIX = "\n\nprint(area(2))\n"
LINE_STOPS = ["\n"]
BLOCK_STOPS = ["\n\n\n", "\ndef ", "\nclass ", "\nif __name__", "\n@", "print(area(2))"]  # as lsp/pipeline


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeServer:
    """Records every request; `answer(seen)` gives (status, JSON) for it."""

    answer: Callable[[Seen], tuple[int, Any]]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def fake() -> Iterator[Callable[[Callable[[Seen], tuple[int, Any]]], FakeServer]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[Seen], tuple[int, Any]]) -> FakeServer:
        state = FakeServer(answer)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                seen = Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw))
                state.seen.append(seen)
                status, payload = state.answer(seen)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.server_address[1]}"
        return state

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def openai_answer(text: str) -> Callable[[Seen], tuple[int, Any]]:
    return lambda seen: (200, {"id": "cmpl-1", "object": "text_completion", "model": "m",
                               "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]})


async def ask(client: RemoteClient, stop: list[str] | None = None, suffix: str = SUFFIX) -> str:
    try:
        return await client.complete(PREFIX, suffix, max_tokens=16, temperature=0.0,
                                     stop=LINE_STOPS if stop is None else stop)
    finally:
        await client.aclose()


def assert_headers(seen: Seen, api_key: str | None = None) -> None:
    assert seen.method == "POST"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers[SESSION_HEADER.lower()] == SESSION_ID
    assert seen.headers.get("authorization") == (f"Bearer {api_key}" if api_key else None)


# -- the template a setting names -----------------------------------------------------------------

@pytest.mark.parametrize(("setting", "model", "want"), [
    ("auto", "Qwen/Qwen2.5-Coder-1.5B", "qwen"),
    ("auto", "qwen2.5-coder:1.5b-base", "qwen"),
    ("auto", "deepseek-ai/deepseek-coder-1.3b-base", "deepseek"),
    ("auto", "bigcode/starcoder2-3b", "starcoder"),
    ("auto", "codellama/CodeLlama-7b-hf", "codellama"),
    ("auto", "my-model", None),
    ("auto", None, None),
    ("none", "Qwen/Qwen2.5-Coder-1.5B", None),
    ("starcoder", "Qwen/Qwen2.5-Coder-1.5B", "starcoder"),
])
def test_auto_picks_the_family_the_served_name_says(setting: str, model: str | None, want: str | None) -> None:
    got = resolve_template(setting, model)
    assert (got.name if got else None) == want


def test_trim_at_stops_cuts_at_the_earliest_stop() -> None:
    assert trim_at_stops("a\nb<|endoftext|>c", ["<|endoftext|>", "\n"]) == "a"
    assert trim_at_stops("abc", ["x", ""]) == "abc"


# -- each dialect: the exact request -------------------------------------------------------------

async def test_codeassist_dialect(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(openai_answer("3.14 * r * r\nmore"))
    client = RemoteClient(RemoteSettings(url=server.url, api_key="k-1", model="Qwen/Qwen2.5-Coder-1.5B"))
    assert await ask(client) == "3.14 * r * r"  # the stop holds here too
    (seen,) = server.seen
    assert seen.path == "/v1/completions"
    # our server builds its own FIM prompt: no template, even for a model name that says qwen
    assert seen.body == {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 16, "temperature": 0.0,
                         "stop": ["\n"], "model": "Qwen/Qwen2.5-Coder-1.5B", "truncate_prompt_tokens": -1}
    assert_headers(seen, "k-1")


@pytest.mark.parametrize("api", ["codeassist", "openai"])
async def test_block_modes_dedent_stop_goes_to_our_server_only(fake, api: str) -> None:  # type: ignore[no-untyped-def]
    server = fake(openai_answer("3.14 * r * r"))
    client = RemoteClient(RemoteSettings(url=server.url, api=api, template="none"))
    try:
        await client.complete(PREFIX, SUFFIX, max_tokens=16, temperature=0.0, stop=BLOCK_STOPS,
                              healed="", dedent_line_prefix="    return ")
    finally:
        await client.aclose()
    (seen,) = server.seen
    if api == "codeassist":  # our extensions: the server stops at the dedent as it decodes
        assert seen.body["dedent_line_prefix"] == "    return " and seen.body["healed_prefix"] == ""
    else:  # other servers are never sent them (post-processing applies the dedent rule)
        assert "dedent_line_prefix" not in seen.body and "healed_prefix" not in seen.body


@pytest.mark.parametrize("template", sorted(CARDS))
async def test_openai_dialect_with_a_template_sends_the_raw_fim_prompt_and_no_suffix_field(
        fake, template: str) -> None:  # type: ignore[no-untyped-def]
    fim = TEMPLATES[template]
    server = fake(openai_answer("3.14 * r * r" + fim.stops[0] + "junk"))
    client = RemoteClient(RemoteSettings(url=server.url + "/v1", api="openai", model="served", template=template))
    assert await ask(client) == "3.14 * r * r"  # cut at the template's stop here, whatever the server did
    (seen,) = server.seen
    assert seen.path == "/v1/completions"
    assert seen.body == {"prompt": CARDS[template].format(prefix=PREFIX, suffix=SUFFIX), "max_tokens": 16,
                         "temperature": 0.0, "stop": ["\n", *fim.stops], "model": "served"}
    assert_headers(seen)


async def test_a_template_with_a_repository_layout_sends_the_files_in_it(fake) -> None:  # type: ignore[no-untyped-def]
    """Qwen's raw prompt: the other files in its repository layout before the FIM prompt, and the
    same files as comments (which the prefix begins with) left out; a template without the layout
    keeps the comments in its prefix."""
    from codeassist.model.prompting import RepoContext

    repo = RepoContext("proj", (("util.py", "def area2(r):\n    return 2"),), "main.py")
    comments = "# Compare this snippet from util.py:\n# def area2(r):\n#     return 2\n"
    for template in ("qwen", "starcoder"):
        server = fake(openai_answer("3.14 * r * r"))
        client = RemoteClient(RemoteSettings(url=server.url + "/v1", api="openai", model="served", template=template))
        try:
            await client.complete(comments + PREFIX, SUFFIX, max_tokens=16, temperature=0.0, stop=LINE_STOPS,
                                  repo=repo, context=comments)
        finally:
            await client.aclose()
        (seen,) = server.seen
        card = CARDS[template].format(prefix=PREFIX, suffix=SUFFIX)
        if template == "qwen":
            assert seen.body["prompt"] == ("<|repo_name|>proj\n<|file_sep|>util.py\ndef area2(r):\n    return 2\n"
                                           "<|file_sep|>main.py\n" + card)
        else:
            assert seen.body["prompt"] == CARDS[template].format(prefix=comments + PREFIX, suffix=SUFFIX)


async def test_openai_dialect_auto_template_from_the_model_name(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(openai_answer("3.14"))
    client = RemoteClient(RemoteSettings(url=server.url, api="openai", model="Qwen/Qwen2.5-Coder-0.5B"))
    assert await ask(client) == "3.14"
    assert server.seen[0].body["prompt"] == f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"
    assert "suffix" not in server.seen[0].body


async def test_openai_dialect_without_a_template_sends_the_suffix_field(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(openai_answer("3.14"))
    client = RemoteClient(RemoteSettings(url=server.url, api="openai", model="Qwen/Qwen2.5-Coder-1.5B",
                                         template="none", api_key="sk-2"))
    assert await ask(client) == "3.14"
    (seen,) = server.seen
    assert seen.path == "/v1/completions"
    assert seen.body == {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 16, "temperature": 0.0,
                         "stop": ["\n"], "model": "Qwen/Qwen2.5-Coder-1.5B"}
    assert_headers(seen, "sk-2")


async def test_llamacpp_dialect_speaks_infill(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(lambda seen: (200, {"content": "3.14 * r * r", "stop": True}))
    client = RemoteClient(RemoteSettings(url=server.url, api="llamacpp", model="Qwen/Qwen2.5-Coder-1.5B"))
    assert await ask(client, stop=BLOCK_STOPS) == "3.14 * r * r"
    (seen,) = server.seen
    assert seen.path == "/infill"
    # llama.cpp applies the model's FIM tokens itself: no template, and its stop list has no limit
    assert seen.body == {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 16, "temperature": 0.0,
                         "stop": BLOCK_STOPS, "cache_prompt": True}
    assert_headers(seen)


async def test_ollama_dialect_speaks_api_generate_with_suffix(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(lambda seen: (200, {"model": "qwen2.5-coder:1.5b-base", "response": "3.14 * r * r",
                                      "done": True, "done_reason": "stop"}))
    client = RemoteClient(RemoteSettings(url=server.url, api="ollama", model="qwen2.5-coder:1.5b-base",
                                         api_key="o-3"))
    assert await ask(client) == "3.14 * r * r"
    (seen,) = server.seen
    assert seen.path == "/api/generate"
    # Ollama's template puts the suffix in place; the family's stops keep its markers out of the text
    assert seen.body == {"model": "qwen2.5-coder:1.5b-base", "prompt": PREFIX, "suffix": SUFFIX,
                         "stream": False, "raw": False,
                         "options": {"num_predict": 16, "temperature": 0.0,
                                     "stop": ["\n", *TEMPLATES["qwen"].stops]}}
    assert_headers(seen, "o-3")


async def test_ollama_with_a_named_template_sends_it_raw(fake) -> None:  # type: ignore[no-untyped-def]
    # a model imported from our GGUF export has no FIM template in its Modelfile: ours goes raw
    server = fake(lambda seen: (200, {"model": "mine", "response": "3.14 * r * r<|endoftext|>x", "done": True}))
    client = RemoteClient(RemoteSettings(url=server.url, api="ollama", model="mine", template="codeassist"))
    assert await ask(client) == "3.14 * r * r"
    (seen,) = server.seen
    assert seen.path == "/api/generate"
    assert seen.body == {"model": "mine", "prompt": CARDS["codeassist"].format(prefix=PREFIX, suffix=SUFFIX),
                         "stream": False, "raw": True,
                         "options": {"num_predict": 16, "temperature": 0.0, "stop": ["\n", "<|endoftext|>"]}}
    assert_headers(seen)


async def test_ollama_without_a_model_name_is_one_sentence() -> None:
    with pytest.raises(RemoteError, match=r"needs codeassist\.remote\.model") as err:
        RemoteClient(RemoteSettings(url="http://127.0.0.1:11434", api="ollama"))
    assert "\n" not in str(err.value)


async def test_ollama_errors_are_one_sentence(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(lambda seen: (404, {"error": "model 'qwen9' not found, try pulling it first"}))
    client = RemoteClient(RemoteSettings(url=server.url, api="ollama", model="qwen9"))
    with pytest.raises(RemoteError) as err:
        await ask(client)
    assert str(err.value) == (f"the completion server at {server.url} answered 404: "
                              "model 'qwen9' not found, try pulling it first")


# -- stops: never silently cut -------------------------------------------------------------------

def refuse_long_stop_lists(seen: Seen) -> tuple[int, Any]:
    if len(seen.body.get("stop") or []) > 4:  # as OpenAI and our own server answer
        return 400, {"error": {"message": "stop takes at most 4 non-empty strings", "type": "invalid_request_error",
                               "param": "stop", "code": None}}
    return openai_answer("area = 3.14 * r * r\nprint(area(2))\nmore")(seen)


@pytest.mark.parametrize("api", ["codeassist", "openai"])
async def test_a_server_that_refuses_long_stop_lists_is_asked_again_with_four_and_the_rest_holds(
        fake, api: str) -> None:  # type: ignore[no-untyped-def]
    server = fake(refuse_long_stop_lists)
    client = RemoteClient(RemoteSettings(url=server.url, api=api, template="none"))
    try:
        got = await client.complete(PREFIX, SUFFIX, max_tokens=16, temperature=0.0, stop=BLOCK_STOPS)
        # the sixth stop (the next line of code) was not sent the second time, yet it holds
        assert got == "area = 3.14 * r * r\n"
        assert [s.body["stop"] for s in server.seen] == [BLOCK_STOPS, BLOCK_STOPS[:4]]
        # the limit is remembered: the next call asks once
        await client.complete(PREFIX, SUFFIX, max_tokens=16, temperature=0.0, stop=BLOCK_STOPS)
        assert len(server.seen) == 3 and server.seen[2].body["stop"] == BLOCK_STOPS[:4]
    finally:
        await client.aclose()


async def test_a_server_that_takes_long_stop_lists_gets_all_of_them(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(openai_answer("area = 3.14 * r * r"))
    client = RemoteClient(RemoteSettings(url=server.url, api="openai", model="Qwen/Qwen2.5-Coder-1.5B"))
    await ask(client, stop=BLOCK_STOPS)
    (seen,) = server.seen  # vLLM has no limit: one request with the block stops and Qwen's
    assert seen.body["stop"] == [*BLOCK_STOPS, *TEMPLATES["qwen"].stops]


async def test_stops_are_sent_once_each_and_never_empty(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(openai_answer("x"))
    client = RemoteClient(RemoteSettings(url=server.url, api="openai", template="starcoder"))
    await ask(client, stop=["\n", "", "\n", "<|endoftext|>"])
    assert server.seen[0].body["stop"] == ["\n", "<|endoftext|>", "<file_sep>", "<fim_prefix>"]


async def test_a_refusal_about_something_else_is_not_retried(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(lambda seen: (400, {"error": {"message": "max_tokens is too large", "param": "max_tokens"}}))
    client = RemoteClient(RemoteSettings(url=server.url, api="openai", template="none"))
    with pytest.raises(RemoteError, match="max_tokens is too large"):
        await ask(client, stop=BLOCK_STOPS)
    assert len(server.seen) == 1


# -- the session id: one per language-server process ---------------------------------------------

async def test_every_dialect_sends_the_same_session_id(fake) -> None:  # type: ignore[no-untyped-def]
    server = fake(lambda seen: (200, {"choices": [{"text": "x"}], "content": "x", "response": "x"}))
    for api in ("codeassist", "openai", "llamacpp", "ollama"):
        await ask(RemoteClient(RemoteSettings(url=server.url, api=api, model="m")))
    assert {s.headers[SESSION_HEADER.lower()] for s in server.seen} == {SESSION_ID}
    assert re.fullmatch(r"[0-9a-f]{32}", SESSION_ID)


def test_each_process_has_its_own_session_id() -> None:
    code = "from codeassist.remote.client import SESSION_ID; print(SESSION_ID)"
    ids = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip() for _ in range(2)}
    assert len(ids | {SESSION_ID}) == 3


def test_unknown_template_is_one_sentence() -> None:
    with pytest.raises(RemoteError, match="unknown FIM template 'llama'") as err:
        RemoteClient(RemoteSettings(url="http://x", api="openai", template="llama"))
    assert "\n" not in str(err.value)


# -- through the real language server: the settings the editor sends pick the dialect -----------

@pytest.mark.slow
async def test_the_language_server_speaks_the_dialect_its_settings_name(fake) -> None:  # type: ignore[no-untyped-def]
    from lsprotocol import types
    from pytest_lsp import ClientServerConfig, LanguageClient

    def answer(seen: Seen) -> tuple[int, Any]:
        if seen.path == "/api/generate":
            return 200, {"model": "qwen2.5-coder:1.5b-base", "response": " 3.14 * r * r", "done": True}
        return openai_answer(" 3.14 * r * r<|endoftext|>print(")(seen)

    server = fake(answer)
    uri, text = "file:///tmp/dialects.py", "def area(r):\n    return\n"
    cmd = [sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio"]
    client: LanguageClient = await ClientServerConfig(server_command=cmd).start()  # type: ignore[assignment]
    vllm = {"url": server.url + "/v1", "api": "openai", "model": "Qwen/Qwen2.5-Coder-1.5B", "timeoutMs": 10000}
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={"codeassist": {"backend": "remote", "remote": vllm, "maxTokens": 8}}))
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=text)))

        async def inline() -> list[str]:
            result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri), position=types.Position(line=1, character=10),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
            items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
            return [str(i.insert_text) for i in items]

        assert await inline() == [" 3.14 * r * r"]  # Qwen's <|endoftext|> stop held
        first = server.seen[-1]
        assert first.path == "/v1/completions" and "suffix" not in first.body
        assert first.body["prompt"].startswith("<|fim_prefix|>def area(r):\n")
        assert first.body["prompt"].endswith("<|fim_middle|>") and "<|fim_suffix|>" in first.body["prompt"]
        assert set(TEMPLATES["qwen"].stops) <= set(first.body["stop"])

        ollama = {**vllm, "url": server.url, "api": "ollama", "model": "qwen2.5-coder:1.5b-base"}
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"codeassist": {"backend": "remote", "remote": ollama, "maxTokens": 8}}))
        for _ in range(100):  # the notification has no answer: ask until the new backend answers
            await inline()
            if server.seen[-1].path == "/api/generate":
                break
        second = server.seen[-1]
        assert second.path == "/api/generate" and second.body["model"] == "qwen2.5-coder:1.5b-base"
        assert second.body["prompt"].startswith("def area(r):\n") and second.body["raw"] is False
        assert {first.headers[SESSION_HEADER.lower()]} == {s.headers[SESSION_HEADER.lower()] for s in server.seen}
        assert first.headers[SESSION_HEADER.lower()] != SESSION_ID  # the server process made its own
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_a_server_that_refuses_the_suffix_field_says_which_setting_fixes_it(fake) -> None:  # type: ignore[no-untyped-def]
    # vLLM's answer when the prompt comes with a suffix and no template was recognised from the name
    server = fake(lambda seen: (400, {"object": "error", "message": "suffix is not currently supported",
                                      "type": "BadRequestError", "param": None, "code": 400}))
    client = RemoteClient(RemoteSettings(url=server.url, api="openai", model="my-finetune"))
    with pytest.raises(RemoteError) as err:
        await ask(client)
    assert str(err.value) == (f"the completion server at {server.url} answered 400: suffix is not currently "
                              "supported (the server takes no suffix: set codeassist.remote.template to the "
                              "model's family, for example qwen)")
