from codeassist.lsp.settings import Settings, parse_settings


def test_keys_from_architecture_are_parsed() -> None:
    s, warnings = parse_settings({"codeassist": {
        "backend": "remote", "model": "mine", "device": "cpu", "maxTokens": 32, "temperature": 0.2,
        "debounceMs": 10, "multiline": "never", "languages": ["python"], "exclude": ["*.md"],
        "context": {"maxPromptTokens": 512, "openFiles": 2},
        "remote": {"url": "http://127.0.0.1:8000", "api": "openai", "apiKey": "k", "model": "m", "timeoutMs": 900}}})
    assert warnings == []
    assert (s.backend, s.model, s.max_tokens, s.multiline, s.max_prompt_tokens, s.open_files) == (
        "remote", "mine", 32, "never", 512, 2)
    assert s.remote.url == "http://127.0.0.1:8000" and s.remote.api == "openai" and s.remote.timeout_ms == 900
    assert s.is_enabled_for("python", "/x/a.py") and not s.is_enabled_for("go", "/x/a.go")
    assert not s.is_enabled_for("python", "/x/README.md")


def test_bad_values_keep_defaults_with_one_warning_each() -> None:
    s, warnings = parse_settings({"maxTokens": "many", "backend": "cloud", "temperature": True,
                                  "context.maxPromptTokens": 10**9, "unknownKey": 1})
    assert s == Settings()
    assert len(warnings) == 4 and all(w.count(".") >= 1 and "default" in w for w in warnings)


def test_not_an_object() -> None:
    s, warnings = parse_settings(["x"])
    assert s == Settings() and len(warnings) == 1
    assert parse_settings(None) == (Settings(), [])
