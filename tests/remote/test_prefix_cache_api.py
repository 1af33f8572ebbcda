"""Prefix caching over HTTP: usage.prompt_tokens_details.cached_tokens, /metrics, the serve flags."""

from __future__ import annotations

import json

from codeassist.remote.cli import settings_from_args
from codeassist.remote.settings import ServerSettings, SettingsError
from tests.remote.conftest import Live
from tests.remote.test_prefix_cache import SOURCE


def complete(live: Live, prompt: str, stream: bool = False) -> tuple[str, dict[str, object]]:
    body = {"prompt": prompt, "max_tokens": 8, "temperature": 0, "ignore_eos": True, "stream": stream,
            "stream_options": {"include_usage": True}}
    with live.client() as c:
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        if not stream:
            return r.json()["choices"][0]["text"], r.json()["usage"]
        chunks = [json.loads(line.removeprefix("data: ")) for line in r.text.splitlines()
                  if line.startswith("data: {")]
        return "".join(ch["choices"][0]["text"] for ch in chunks if ch["choices"]), chunks[-1]["usage"]


def test_cached_tokens_in_usage_and_hits_in_metrics(serve) -> None:  # type: ignore[no-untyped-def]
    warm: Live = serve(ServerSettings(port=0))  # on by default
    cold: Live = serve(ServerSettings(port=0, prefix_cache_mb=0))
    windows = [SOURCE[:-9], SOURCE[:-6], SOURCE[:-3]]
    out_warm = [complete(warm, w, stream=i == 2) for i, w in enumerate(windows)]
    out_cold = [complete(cold, w) for w in windows]
    assert [t for t, _ in out_warm] == [t for t, _ in out_cold]
    cached = [u["prompt_tokens_details"]["cached_tokens"] for _, u in out_warm]  # type: ignore[index]
    assert cached[0] == 0 and cached[1] > 40 and cached[2] > 40  # streamed usage carries it too
    assert all(u["prompt_tokens_details"]["cached_tokens"] == 0 for _, u in out_cold)  # type: ignore[index]
    assert warm.metric("codeassist_prefix_cache_lookups_total") == 3
    assert warm.metric("codeassist_prefix_cache_hits_total") == 2
    assert warm.metric("codeassist_prefix_cache_reused_tokens_total") == cached[1] + cached[2]
    assert warm.metric("codeassist_prefix_cache_bytes") > 0
    assert cold.metric("codeassist_prefix_cache_hits_total") == 0


def test_serve_flags_set_the_cache_and_the_chunk() -> None:
    import argparse

    from codeassist.remote.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    s = settings_from_args(parser.parse_args(["--prefix-cache-mb", "0", "--prefill-chunk", "64"]))
    assert s.prefix_cache_mb == 0 and s.prefill_chunk_tokens == 64
    assert settings_from_args(parser.parse_args([])).prefix_cache_mb == 256
    for bad in (["--prefix-cache-mb", "-1"], ["--prefill-chunk", "0"]):
        try:
            settings_from_args(parser.parse_args(bad))
            raise AssertionError(f"{bad} accepted")
        except SettingsError as exc:
            assert "\n" not in str(exc)
