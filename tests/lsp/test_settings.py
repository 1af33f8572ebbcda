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


def test_the_keys_the_server_reads() -> None:
    """The contract's names (ARCHITECTURE.md), derived from the dataclasses, as the extension reads them."""
    from codeassist.lsp.settings import SETTING_CHOICES, SETTING_KEYS

    assert set(SETTING_KEYS) == {
        "backend", "model", "device", "maxTokens", "temperature", "debounceMs", "multiline", "languages", "exclude",
        "context.maxPromptTokens", "context.openFiles", "context.repository", "timeBudgetMs", "cache", "prefixReuse",
        "copy", "remote.url", "remote.api", "remote.apiKey", "remote.model", "remote.timeoutMs",
        "remote.fallbackLocal", "remote.template"}
    assert SETTING_CHOICES["backend"] == ("local", "remote")
    assert SETTING_CHOICES["multiline"] == ("auto", "always", "never")
    assert "device" not in SETTING_CHOICES


def test_types_are_strict_and_ranges_inclusive() -> None:
    """JSON as sent: a string is not a number, a number not a bool, a string not a list."""
    bad = {"maxTokens": "5", "debounceMs": 1.5, "cache": 1, "model": 3, "languages": "python",
           "exclude": ["*.md", 3], "timeBudgetMs": 49, "context": {"openFiles": 33}}
    s, warnings = parse_settings(bad)
    assert s == Settings() and len(warnings) == len(bad)
    assert "codeassist.context.openFiles has an invalid value 33; the default is kept" in warnings
    s, warnings = parse_settings({"maxTokens": 512, "temperature": 2, "debounceMs": 0, "timeBudgetMs": 50,
                                  "cache": False, "languages": ["go"], "context": {"openFiles": 0}})
    assert warnings == []
    assert (s.max_tokens, s.temperature, s.debounce_ms, s.time_budget_ms, s.cache, s.languages, s.open_files) == (
        512, 2.0, 0, 50, False, ("go",), 0)
    assert isinstance(s.temperature, float)


def test_a_change_keeps_the_values_it_does_not_name() -> None:
    base, _ = parse_settings({"maxTokens": 10, "remote": {"url": "http://127.0.0.1:1", "apiKey": "k"}})
    s, warnings = parse_settings({"temperature": 0.5, "remote": {"timeoutMs": 900}, "maxTokens": 0}, base)
    assert len(warnings) == 1 and "maxTokens" in warnings[0]
    assert (s.max_tokens, s.temperature) == (10, 0.5)  # an invalid value keeps what it had
    assert (s.remote.url, s.remote.api_key, s.remote.timeout_ms) == ("http://127.0.0.1:1", "k", 900)


def test_dotted_and_nested_keys_are_the_same_setting() -> None:
    dotted, w1 = parse_settings({"remote.url": "http://a", "context.openFiles": 2, "remote": {"model": "m"}})
    nested, w2 = parse_settings({"remote": {"url": "http://a", "model": "m"}, "context": {"openFiles": 2}})
    assert w1 == w2 == [] and dotted == nested
    assert (dotted.remote.url, dotted.remote.model, dotted.open_files) == ("http://a", "m", 2)


def test_a_remote_that_is_not_an_object_keeps_its_default() -> None:
    s, warnings = parse_settings({"remote": "http://a", "maxTokens": 7})
    assert s.remote == Settings().remote and s.max_tokens == 7
    assert warnings == ["codeassist.remote has an invalid value 'http://a'; the default is kept"]


def test_the_api_key_stays_out_of_the_settings_repr() -> None:
    s, _ = parse_settings({"remote": {"apiKey": "k-secret-123"}})
    assert s.remote.api_key == "k-secret-123" and "k-secret-123" not in repr(s)


def test_values_the_command_line_set_are_not_checked_again() -> None:
    """`codeassist lsp --backend fake` (tests, benchmarks) is no editor setting, and must survive one."""
    from dataclasses import replace

    s, warnings = parse_settings({"maxTokens": 9, "backend": "cloud"}, replace(Settings(), backend="fake"))
    assert (s.backend, s.max_tokens) == ("fake", 9) and len(warnings) == 1


def test_parsing_leaves_the_given_object_as_it_was() -> None:
    raw = {"remote": {"api": "grpc", "url": "http://a"}, "maxTokens": "x"}
    parse_settings(raw)
    assert raw == {"remote": {"api": "grpc", "url": "http://a"}, "maxTokens": "x"}
