"""remote.api and remote.template: parsed from the editor's settings, bad values refused in one
sentence that names the choices, and carried to the client the backend makes."""

import json

import httpx

from codeassist.lsp.backends import CompletionRequest, RemoteBackend
from codeassist.lsp.prompt import Prompt
from codeassist.lsp.settings import Settings, parse_settings
from codeassist.remote.settings import RemoteSettings


def test_template_and_ollama_are_parsed() -> None:
    s, warnings = parse_settings({"codeassist": {"backend": "remote", "remote": {
        "url": "http://127.0.0.1:11434", "api": "ollama", "model": "qwen2.5-coder:1.5b-base", "template": "qwen"}}})
    assert warnings == []
    assert (s.remote.api, s.remote.template, s.remote.model) == ("ollama", "qwen", "qwen2.5-coder:1.5b-base")
    assert Settings().remote.template == "auto"
    for name in ("auto", "qwen", "deepseek", "starcoder", "santacoder", "codellama", "none"):
        assert parse_settings({"remote.template": name})[0].remote.template == name


def test_bad_template_or_api_is_one_sentence_naming_the_choices() -> None:
    s, warnings = parse_settings({"remote": {"template": "llama3", "api": "grpc"}})
    assert s == Settings()
    assert len(warnings) == 2 and all("\n" not in w and w.endswith("the default is kept") for w in warnings)
    template_warning = next(w for w in warnings if "template" in w)
    assert template_warning == ("codeassist.remote.template has an invalid value 'llama3' (use auto, codeassist, "
                                "qwen, deepseek, starcoder, santacoder, codellama, none); the default is kept")
    assert "ollama" in next(w for w in warnings if "remote.api" in w)
    assert parse_settings({"remote": {"template": 3}})[1] != []


async def test_the_backend_hands_the_template_to_the_client() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"text": "x<file_sep>y"}]})

    config = RemoteSettings(url="http://127.0.0.1:9", api="openai", model="anything", template="starcoder")
    backend = RemoteBackend(config, transport=httpx.MockTransport(handler))
    request = CompletionRequest(Prompt(ids=(1,), forced="", prefix="a = ", suffix="\n", fim=True), max_tokens=4)
    result = await backend.complete(request)
    await backend.aclose()
    assert result.text == "x"
    assert seen[0]["prompt"] == "<fim_prefix>a = <fim_suffix>\n<fim_middle>" and "suffix" not in seen[0]


async def test_the_template_auto_picked_is_logged(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    caplog.set_level(logging.INFO, logger="codeassist.lsp.backends")
    backend = RemoteBackend(RemoteSettings(url="http://127.0.0.1:9", api="openai", model="deepseek-coder-1.3b"),
                            transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"choices": [{"text": ""}]})))
    request = CompletionRequest(Prompt(ids=(1,), forced="", prefix="a", suffix="", fim=False), max_tokens=1)
    await backend.complete(request)
    await backend.aclose()
    assert ("remote backend: openai API at http://127.0.0.1:9, model deepseek-coder-1.3b, FIM template deepseek "
            "(from the model's name)") in caplog.messages
