"""The HTTP client of the language server's remote backend (lsp/backends.py imports it lazily).

One call, `complete(prefix, suffix, ...)`, spoken in one of four dialects. The language server
sends what its prompt builder made (model/prompting.py): the context (other files' snippets) and
the prefix as one text, and the healed part at its end.
- "codeassist": our server's /v1/completions, asking it to fit the prompt to its context
  (`truncate_prompt_tokens: -1`, so an editor's window never earns a 400), with the healed text
  in `healed_prefix` (our extension), so the server heals exactly where the editor did, and in
  BLOCK mode the dedent stop in `dedent_line_prefix` (ours too), so the block ends as it is decoded;
- "openai": any OpenAI-compatible /v1/completions (vLLM, TGI, llama.cpp's server). With a FIM
  template (`remote.template`, model/fim_templates.py) the prompt is the family's raw FIM text and
  no `suffix` field is sent (vLLM and TGI refuse it); with template "none" the suffix goes in the
  OpenAI `suffix` field, for servers that implement it;
- "llamacpp": llama.cpp's /infill (the server applies the model's FIM tokens);
- "ollama": Ollama's /api/generate with `suffix` (Ollama applies the model's own template). A
  template named in the setting (not `auto`) is sent raw instead (`raw: true`), for a model whose
  Modelfile has no FIM template, such as one imported from `codeassist export --format gguf`.

Stops always hold: every stop string is sent, and the answer is also cut at the first one here,
since a server may ignore some. A server that refuses the list (OpenAI's and TGI's limit is 4;
ours takes 16) is asked again at once with the first four (the list is ordered most decisive
first), this client remembers the limit, and the rest are applied here, never dropped.

Every request carries `X-Codeassist-Session`, one id per language-server process, so a team
server behind a load balancer can route one editor's keystrokes to the replica that holds its
prefix cache. Every call has a deadline (timeout_ms); cancelling the awaiting task cancels the
HTTP request. Failures raise RemoteError, whose str() is one sentence for the status line.

A busy server (429, or 503 while it loads or drains) says in Retry-After how long to stay away.
An editor asks on every keystroke, so the client honours it: until then every call fails at
once, without a request, and the language server answers from its fallback if it has one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

from codeassist.model.fim_templates import TEMPLATE_NAMES, FimTemplate, for_model_name, get_template
from codeassist.remote.schema import CompletionRequest
from codeassist.remote.settings import APIS, RemoteSettings  # the one remote-settings type

if TYPE_CHECKING:
    from codeassist.model.prompting import RepoContext

__all__ = ["APIS", "SESSION_HEADER", "SESSION_ID", "RemoteClient", "RemoteError", "RemoteSettings",
           "resolve_template", "trim_at_stops"]

log = logging.getLogger(__name__)

LIMITED_STOPS = 4  # OpenAI's and TGI's limit: asked again with this many when a server refuses more
MAX_RETRY_AFTER_S = 600  # a longer Retry-After is capped: a misconfigured server must not mute us for hours
SESSION_HEADER = "X-Codeassist-Session"
SESSION_ID = uuid.uuid4().hex  # one editor session: made once per language-server process


class RemoteError(Exception):
    """The remote server could not give a completion; str() is one sentence."""


def resolve_template(name: str, model: str | None) -> FimTemplate | None:
    """The FIM template a setting names: `auto` is the family `model`'s name says (None: none)."""
    if name == "none":
        return None
    if name == "auto":
        return for_model_name(model or "")
    if name not in TEMPLATE_NAMES:
        raise RemoteError(f"unknown FIM template {name!r}; use {', '.join(TEMPLATE_NAMES)}")
    return get_template(name)


def trim_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string (the text itself if none occurs)."""
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


class RemoteClient:
    def __init__(self, settings: RemoteSettings, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if settings.api not in APIS:
            raise RemoteError(f"unknown remote API {settings.api!r}; use {', '.join(APIS)}")
        if not settings.url.startswith(("http://", "https://")):
            raise RemoteError(f"the remote URL {settings.url!r} must start with http:// or https://")
        if settings.api == "ollama" and not settings.model:
            raise RemoteError("the ollama API needs codeassist.remote.model, the name Ollama serves "
                              "(for example qwen2.5-coder:1.5b-base)")
        self.settings = settings
        # our server and llama.cpp's /infill build the FIM prompt themselves; Ollama from its Modelfile
        self.template = resolve_template(settings.template, settings.model) \
            if settings.api in ("openai", "ollama") else None
        base = settings.url.rstrip("/")
        if base.endswith("/v1"):  # people paste OpenAI base URLs
            base = base[:-3]
        headers = {SESSION_HEADER: SESSION_ID}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        seconds = max(settings.timeout_ms, 1) / 1000
        self._timeout_s = seconds
        self._http = httpx.AsyncClient(base_url=base, headers=headers, transport=transport,
                                       timeout=httpx.Timeout(seconds, connect=min(seconds, 1.0)),
                                       trust_env=False)
        self._clock = clock
        self._retry_at = -math.inf  # clock() before which the server asked not to be called ...
        self._busy = ""  # ... and what it said
        self._max_stops: int | None = None  # set once the server refused a longer stop list

    async def complete(self, prefix: str, suffix: str, *, max_tokens: int, temperature: float,
                       stop: list[str], healed: str | None = None, repo: RepoContext | None = None,
                       context: str = "", dedent_line_prefix: str | None = None) -> str:
        """The text after `prefix` (the cursor). `healed`: the end of `prefix` that the prompt
        builder healed ("" for none), for our server to honour; None lets the server heal.
        `repo`: other files of the repository; a raw template with a repository layout (Qwen's)
        sends them in it, before the FIM prompt, instead of `context` (the same files as comments,
        which `prefix` begins with). `dedent_line_prefix`: BLOCK mode's dedent stop, which our server
        applies as it decodes (other servers are not sent it; post-processing applies it after)."""
        wait_s = self._retry_at - self._clock()
        if wait_s > 0:
            raise RemoteError(f"{self._busy}; next try in {math.ceil(wait_s)} s")
        stops = [s for s in dict.fromkeys([*stop, *(self.template.stops if self.template else ())]) if s]
        deadline = time.monotonic() + self._timeout_s  # one deadline for the call, a retry included
        layout = ""
        if repo is not None and repo.files and self.template is not None and self.template.repo_name:
            layout = self.template.repo_context(repo.name, repo.files) + self.template.current_file(repo.path)
            prefix = prefix[len(context):] if context and prefix.startswith(context) else prefix
        fields = (prefix, suffix, max_tokens, temperature, healed, layout, dedent_line_prefix)
        response = await self._post(*fields, stops, deadline)
        if self._max_stops is None and len(stops) > LIMITED_STOPS and _refuses_stops(response):
            self._max_stops = LIMITED_STOPS  # this server's limit; the rest are applied here
            log.info("%s takes at most %d stop strings: the others are applied by the client",
                     self.settings.url, LIMITED_STOPS)
            response = await self._post(*fields, stops, deadline)
        return trim_at_stops(self._parse(response), stops)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, prefix: str, suffix: str, max_tokens: int, temperature: float, healed: str | None,
                    layout: str, dedent: str | None, stops: list[str], deadline: float) -> httpx.Response:
        sent = stops[:self._max_stops] if self._max_stops is not None else stops
        path, body = self._request(prefix, suffix, max_tokens, temperature, sent, healed, layout, dedent)
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                return await self._http.post(path, json=body)
        except (TimeoutError, httpx.TimeoutException):
            raise RemoteError(f"the completion server at {self.settings.url} did not answer within "
                              f"{self.settings.timeout_ms} ms") from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the completion server at {self.settings.url} "
                              f"({type(exc).__name__})") from None

    def _request(self, prefix: str, suffix: str, max_tokens: int, temperature: float,
                 stop: list[str], healed: str | None = None, layout: str = "",
                 dedent: str | None = None) -> tuple[str, dict[str, Any]]:
        s = self.settings
        if s.api == "llamacpp":
            return "/infill", {"input_prefix": prefix, "input_suffix": suffix, "n_predict": max_tokens,
                               "temperature": temperature, "stop": stop, "cache_prompt": True}
        if s.api == "ollama":
            options = {"num_predict": max_tokens, "temperature": temperature, "stop": stop}
            if self.template is not None and s.template != "auto":  # the user's template, sent verbatim
                return "/api/generate", {"model": s.model, "prompt": layout + self.template.build(prefix, suffix),
                                         "stream": False, "raw": True, "options": options}
            return "/api/generate", {"model": s.model, "prompt": prefix, "suffix": suffix, "stream": False,
                                     "raw": False, "options": options}
        ours = s.api == "codeassist"
        fields: dict[str, Any] = {"prompt": prefix, "max_tokens": max_tokens, "temperature": temperature,
                                  "stop": stop or None}
        if self.template is not None:
            # the raw FIM text, after the repository layout if any; no suffix field: vLLM and TGI refuse it
            fields["prompt"] = layout + self.template.build(prefix, suffix)
        elif suffix:
            fields["suffix"] = suffix
        if s.model:
            fields["model"] = s.model
        if ours:
            fields["truncate_prompt_tokens"] = -1
        if ours and healed is not None:  # our extensions: other servers are never sent them
            fields["healed_prefix"] = healed
        if ours and dedent is not None:
            fields["dedent_line_prefix"] = dedent
        # the wire contract's model (remote/schema.py) checks the body; only the fields set are sent
        body = CompletionRequest(**fields).model_dump(exclude_unset=True)
        return "/v1/completions", body

    def _parse(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            message = _describe_status(response, self.settings.url)
            if self.template is None and self.settings.api == "openai" and response.status_code in (400, 422) \
                    and "suffix" in _error_message(response).lower():  # vLLM, TGI: no suffix field
                message += (" (the server takes no suffix: set codeassist.remote.template to the model's family, "
                            "for example qwen)")
            delay = retry_after_s(response) if response.status_code in (429, 503) else None
            if delay is None:
                raise RemoteError(message)
            self._retry_at, self._busy = self._clock() + delay, message
            raise RemoteError(f"{message}; next try in {math.ceil(delay)} s")
        try:
            data = response.json()
            if self.settings.api == "llamacpp":
                return str(data["content"])
            if self.settings.api == "ollama":
                return str(data["response"])
            return str(data["choices"][0]["text"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise RemoteError(f"the completion server at {self.settings.url} sent an answer that is not "
                              f"a {self.settings.api} completion") from None


def _refuses_stops(response: httpx.Response) -> bool:
    """A 400 (OpenAI, ours) or 422 (TGI's validation) whose error is about the stop list."""
    if response.status_code not in (400, 422):
        return False
    error = _error_payload(response)
    param = error.get("param") if isinstance(error, dict) else None
    return param == "stop" or "stop" in _error_message(response).lower()


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


def _error_payload(response: httpx.Response) -> Any:
    """The error of an OpenAI-style ({"error": {"message", "param"}}), TGI or Ollama ({"error": "..."}),
    older vLLM ({"object": "error", "message"}) or FastAPI ({"detail": ...}) body; "" when there is none."""
    try:
        payload = response.json()
    except (ValueError, json.JSONDecodeError):
        return ""
    if not isinstance(payload, dict):
        return ""
    if "error" not in payload and "detail" not in payload and payload.get("object") == "error":
        return payload
    return payload.get("error", payload.get("detail", ""))


def _error_message(response: httpx.Response) -> str:
    err = _error_payload(response)
    return str(err.get("message", "")) if isinstance(err, dict) else str(err)


def _describe_status(response: httpx.Response, url: str) -> str:
    if response.status_code == 401:
        return f"the completion server at {url} refused the API key (401)"
    message = " ".join(_error_message(response).split())[:200].rstrip(".")
    suffix = f": {message}" if message else ""
    return f"the completion server at {url} answered {response.status_code}{suffix}"
