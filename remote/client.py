"""The HTTP client of the language server's remote backend (lsp/backends.py imports it lazily).

One call, `complete(prefix, suffix, ...)`, spoken in one of three dialects:
- "codeassist": our server's /v1/completions, asking it to fit the prompt to its context
  (`truncate_prompt_tokens: -1`, so an editor's window never earns a 400);
- "openai": any OpenAI-compatible /v1/completions (vLLM, TGI, llama.cpp, Ollama);
- "llamacpp": llama.cpp's /infill.
Every call has a deadline (timeout_ms); cancelling the awaiting task cancels the HTTP request.
Failures raise RemoteError, whose str() is one sentence for the status line.

A busy server (429, or 503 while it loads or drains) says in Retry-After how long to stay away.
An editor asks on every keystroke, so the client honours it: until then every call fails at
once, without a request, and the language server answers from its fallback if it has one.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

__all__ = ["APIS", "RemoteClient", "RemoteError", "RemoteSettings"]

APIS = ("codeassist", "openai", "llamacpp")
MAX_OPENAI_STOPS = 4  # OpenAI's limit; servers that follow it refuse more
MAX_RETRY_AFTER_S = 600  # a longer Retry-After is capped: a misconfigured server must not mute us for hours


@dataclass(frozen=True)
class RemoteSettings:
    url: str
    api: str = "codeassist"  # "codeassist" | "openai" | "llamacpp"
    api_key: str | None = None
    model: str | None = None
    timeout_ms: int = 2000

    def __repr__(self) -> str:  # the key stays out of logs
        return (f"RemoteSettings(url={self.url!r}, api={self.api!r}, api_key={'***' if self.api_key else None}, "
                f"model={self.model!r}, timeout_ms={self.timeout_ms})")


class RemoteError(Exception):
    """The remote server could not give a completion; str() is one sentence."""


class RemoteClient:
    def __init__(self, settings: RemoteSettings, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if settings.api not in APIS:
            raise RemoteError(f"unknown remote API {settings.api!r}; use codeassist, openai or llamacpp")
        if not settings.url.startswith(("http://", "https://")):
            raise RemoteError(f"the remote URL {settings.url!r} must start with http:// or https://")
        self.settings = settings
        base = settings.url.rstrip("/")
        if base.endswith("/v1"):  # people paste OpenAI base URLs
            base = base[:-3]
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        seconds = max(settings.timeout_ms, 1) / 1000
        self._timeout_s = seconds
        self._http = httpx.AsyncClient(base_url=base, headers=headers, transport=transport,
                                       timeout=httpx.Timeout(seconds, connect=min(seconds, 1.0)),
                                       trust_env=False)
        self._clock = clock
        self._retry_at = -math.inf  # clock() before which the server asked not to be called ...
        self._busy = ""  # ... and what it said

    async def complete(self, prefix: str, suffix: str, *, max_tokens: int, temperature: float,
                       stop: list[str]) -> str:
        wait_s = self._retry_at - self._clock()
        if wait_s > 0:
            raise RemoteError(f"{self._busy}; next try in {math.ceil(wait_s)} s")
        path, body = self._request(prefix, suffix, max_tokens, temperature, stop)
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._http.post(path, json=body)
        except TimeoutError:
            raise RemoteError(f"the completion server at {self.settings.url} did not answer within "
                              f"{self.settings.timeout_ms} ms") from None
        except httpx.TimeoutException:
            raise RemoteError(f"the completion server at {self.settings.url} did not answer within "
                              f"{self.settings.timeout_ms} ms") from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the completion server at {self.settings.url} "
                              f"({type(exc).__name__})") from None
        return self._parse(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _request(self, prefix: str, suffix: str, max_tokens: int, temperature: float,
                 stop: list[str]) -> tuple[str, dict[str, Any]]:
        s = self.settings
        if s.api == "llamacpp":
            return "/infill", {"input_prefix": prefix, "input_suffix": suffix, "n_predict": max_tokens,
                               "temperature": temperature, "stop": list(stop), "cache_prompt": True}
        body: dict[str, Any] = {"prompt": prefix, "max_tokens": max_tokens, "temperature": temperature,
                                "stop": list(stop)[:MAX_OPENAI_STOPS] or None}
        if suffix:
            body["suffix"] = suffix
        if s.model:
            body["model"] = s.model
        if s.api == "codeassist":
            body["truncate_prompt_tokens"] = -1
        return "/v1/completions", body

    def _parse(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            message = _describe_status(response, self.settings.url)
            delay = retry_after_s(response) if response.status_code in (429, 503) else None
            if delay is None:
                raise RemoteError(message)
            self._retry_at, self._busy = self._clock() + delay, message
            raise RemoteError(f"{message}; next try in {math.ceil(delay)} s")
        try:
            data = response.json()
            if self.settings.api == "llamacpp":
                return str(data["content"])
            return str(data["choices"][0]["text"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise RemoteError(f"the completion server at {self.settings.url} sent an answer that is not "
                              f"a {self.settings.api} completion") from None


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds the server asked to wait (Retry-After: seconds or an HTTP date), capped; None if unsaid."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value) if value.isdigit() else parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


def _describe_status(response: httpx.Response, url: str) -> str:
    if response.status_code == 401:
        return f"the completion server at {url} refused the API key (401)"
    message = ""
    try:
        payload = response.json()
        if isinstance(payload, dict):
            err = payload.get("error", payload.get("detail", ""))
            message = str(err.get("message", "")) if isinstance(err, dict) else str(err)
    except (ValueError, json.JSONDecodeError):
        pass
    message = " ".join(message.split())[:200].rstrip(".")
    suffix = f": {message}" if message else ""
    return f"the completion server at {url} answered {response.status_code}{suffix}"
