"""Settings of the remote side: the team server's (one frozen dataclass, every limit on by
default), and the one `RemoteSettings` type that says how to reach a completion server, which the
editor's settings carry (lsp/settings.py parses them) and the HTTP client reads (remote/client.py).

A setting's type carries its constraint (`Annotated[int, Between(50, 60000)]`, `OneOf(...)`), so
the parser of the editor's settings checks what the type says instead of a list of its own.
"""

# no `from __future__ import annotations`: cattrs reads the Annotated constraints at run time
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from codeassist.model.errors import UserFacingError
from codeassist.model.fim_templates import TEMPLATE_NAMES

APIS = ("codeassist", "openai", "llamacpp", "ollama")


@dataclass(frozen=True)
class OneOf:
    """A string setting's allowed values."""

    choices: tuple[str, ...]


@dataclass(frozen=True)
class Between:
    """A number setting's inclusive range."""

    low: float
    high: float


@dataclass(frozen=True)
class RemoteSettings:
    """How to reach a completion server: ours, an OpenAI-compatible one, llama.cpp or Ollama."""

    url: str = ""
    api: Annotated[str, OneOf(APIS)] = "codeassist"
    api_key: str | None = field(default=None, repr=False)  # a Bearer token: never logged
    model: str | None = None
    timeout_ms: Annotated[int, Between(50, 60000)] = 2000
    # the FIM template of the openai dialect (and ollama's stops; named, ollama's raw prompt): auto is
    # the family the model's name says, else none (prompt + OpenAI `suffix` field); model/fim_templates.py
    template: Annotated[str, OneOf(TEMPLATE_NAMES)] = "auto"
    fallback_local: bool = False  # the language server answers with its in-process model while unreachable


class SettingsError(UserFacingError, ValueError):
    """A setting the server refuses to start with; str() is one sentence."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"  # loopback: exposing the server is an explicit choice
    port: int = 8000
    model: str = "default"  # a name or a path, as everywhere (model/store.py)
    device: str = "auto"
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # Bearer tokens; never logged
    max_body_bytes: int = 1 << 20  # 1 MiB: a completion prompt is a window, never a repository
    max_batch: int = 16  # rows of the running batch
    max_queue: int = 64  # sequences waiting for a row; beyond this, 429
    max_prefill_tokens: int = 2048  # padded prompt tokens prefilled between two decode steps
    prefill_chunk_tokens: int = 256  # a longer prompt (or a cache hit) is prefilled in chunks of this
    prefix_cache_mb: int = 256  # prompt keys and values kept across requests (0: off); ~10 MB per
    # 800-token prompt of the default model, so about 25 typing users
    request_timeout_s: float = 30.0  # from arrival to the last token, queue wait included
    max_tokens_limit: int = 512  # the most new tokens one request may ask for
    max_n: int = 4  # the most choices (`n`) one OpenAI request may ask for
    cors_origins: tuple[str, ...] = ()  # none unless configured
    cors_credentials: bool = False
    drain_timeout_s: float = 30.0  # SIGTERM: how long in-flight work may take to finish
    allow_no_auth_public: bool = False  # serve a non-loopback address without API keys
    served_name: str = ""  # the id /v1/models reports (default: the model's name)

    def __post_init__(self) -> None:
        check_settings(self)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(s: ServerSettings) -> None:
    if "*" in s.cors_origins and s.cors_credentials:
        raise SettingsError("CORS with a wildcard origin and credentials is refused: list the origins "
                            "that may send credentials")
    if not is_loopback(s.host) and not s.api_keys and not s.allow_no_auth_public:
        raise SettingsError(f"refusing to serve {s.host} without API keys: pass --api-key-file, "
                            "or --allow-no-auth if a proxy in front authenticates")
    if not 0 <= s.port <= 65535:
        raise SettingsError(f"port must be between 0 and 65535, got {s.port}")
    positives = {"max_body_bytes": s.max_body_bytes, "max_batch": s.max_batch,
                 "max_queue": s.max_queue, "max_prefill_tokens": s.max_prefill_tokens,
                 "prefill_chunk_tokens": s.prefill_chunk_tokens,
                 "max_tokens_limit": s.max_tokens_limit, "max_n": s.max_n}
    for name, value in positives.items():
        if value <= 0:
            raise SettingsError(f"{name} must be positive, got {value}")
    if s.prefix_cache_mb < 0:
        raise SettingsError(f"prefix_cache_mb must be 0 (off) or positive, got {s.prefix_cache_mb}")
    if s.request_timeout_s <= 0 or s.drain_timeout_s < 0:
        raise SettingsError("request_timeout_s must be positive and drain_timeout_s not negative")
    if any(not k or any(c.isspace() for c in k) for k in s.api_keys):
        raise SettingsError("an API key is empty or contains whitespace")


def read_api_keys(path: str | Path) -> tuple[str, ...]:
    """One key a line; blank lines and lines starting with # are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read the API key file {path}: {exc.strerror or exc}") from None
    keys = tuple(line.strip() for line in text.splitlines()
                 if line.strip() and not line.strip().startswith("#"))
    if not keys:
        raise SettingsError(f"the API key file {path} holds no key")
    return keys
