"""Settings from initializationOptions and `workspace/didChangeConfiguration` (section `codeassist`).

Parsed once into a frozen dataclass. A wrong value keeps its default and yields one warning
sentence naming the key; it never stops the server.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from typing import Any

from codeassist.model.fim_templates import TEMPLATE_NAMES


@dataclass(frozen=True)
class RemoteConfig:
    url: str = ""
    api: str = "codeassist"  # codeassist | openai | llamacpp | ollama
    api_key: str | None = None
    model: str | None = None
    timeout_ms: int = 2000
    fallback_local: bool = False  # answer with the in-process model while the server is unreachable
    # the FIM template of the openai dialect (and ollama's stops; named, ollama's raw prompt): auto is
    # the family the model's name says, else none (prompt + OpenAI `suffix` field); model/fim_templates.py
    template: str = "auto"


@dataclass(frozen=True)
class Settings:
    backend: str = "local"  # local | remote
    model: str = "default"
    device: str = "auto"
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    max_tokens: int = 48  # per suggestion; LINE mode stops at the newline well before this
    temperature: float = 0.0
    debounce_ms: int = 0  # the newest request supersedes older ones, so no wait is needed
    multiline: str = "auto"  # auto | always | never
    languages: tuple[str, ...] = ()  # empty: every language
    exclude: tuple[str, ...] = ()  # globs over the document path
    max_prompt_tokens: int = 896  # about 700 prefix + a few hundred suffix, as in training
    open_files: int = 4  # other open files of the same language offered as snippets
    time_budget_ms: int = 1500  # a suggestion later than this is no longer useful
    cache: bool = True  # benchmarks switch these two off to measure what they save
    prefix_reuse: bool = True
    copy: bool = True  # copy-aware decoding: continuations found in the document and the workspace
    repository: bool = True  # index the workspace folders (candidates for copying, retrieved snippets)

    def is_enabled_for(self, language: str, path: str) -> bool:
        return self.disabled_reason(language, path) is None

    def disabled_reason(self, language: str, path: str) -> str | None:
        """Why completions are off for this document (one sentence), or None when they are on."""
        if self.languages and language not in self.languages:
            return f"completions are off for {language or 'this language'} (codeassist.languages)"
        if any(fnmatch.fnmatch(path, g) for g in self.exclude):
            return "this file matches codeassist.exclude"
        return None


_CHOICES = {"backend": ("local", "remote"), "multiline": ("auto", "always", "never"),
            "remote.api": ("codeassist", "openai", "llamacpp", "ollama"), "remote.template": TEMPLATE_NAMES,
            "device": None}
_KEYS: dict[str, tuple[str, type]] = {
    "backend": ("backend", str), "model": ("model", str), "device": ("device", str),
    "maxTokens": ("max_tokens", int), "temperature": ("temperature", float),
    "debounceMs": ("debounce_ms", int), "multiline": ("multiline", str),
    "languages": ("languages", tuple), "exclude": ("exclude", tuple),
    "context.maxPromptTokens": ("max_prompt_tokens", int), "context.openFiles": ("open_files", int),
    "timeBudgetMs": ("time_budget_ms", int), "cache": ("cache", bool), "prefixReuse": ("prefix_reuse", bool),
    "copy": ("copy", bool), "context.repository": ("repository", bool),
}
_REMOTE_KEYS: dict[str, tuple[str, type]] = {
    "remote.url": ("url", str), "remote.api": ("api", str), "remote.apiKey": ("api_key", str),
    "remote.model": ("model", str), "remote.timeoutMs": ("timeout_ms", int),
    "remote.fallbackLocal": ("fallback_local", bool), "remote.template": ("template", str),
}
_RANGES = {"max_tokens": (1, 512), "temperature": (0.0, 2.0), "debounce_ms": (0, 2000),
           "max_prompt_tokens": (16, 8192), "open_files": (0, 32), "time_budget_ms": (50, 30000),
           "timeout_ms": (50, 60000)}


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """(settings, warnings). `raw` is the `codeassist` object, or a dict holding one."""
    settings = base or Settings()
    warnings: list[str] = []
    if raw is None:
        return settings, warnings
    if not isinstance(raw, dict):
        return settings, ["codeassist settings must be an object; defaults are used"]
    if isinstance(raw.get("codeassist"), dict):
        raw = raw["codeassist"]
    flat = _flatten(raw)
    top: dict[str, Any] = {}
    remote: dict[str, Any] = {}
    for key, value in flat.items():
        spec, target = (_KEYS.get(key), top) if key in _KEYS else (_REMOTE_KEYS.get(key), remote)
        if spec is None:
            continue  # unknown keys are ignored: newer clients may send more
        name, kind = spec
        parsed = _coerce(value, kind)
        choices = _CHOICES.get(key)
        if parsed is None or (choices and parsed not in choices) or not _in_range(name, parsed):
            use = f" (use {', '.join(choices)})" if choices else ""
            warnings.append(f"codeassist.{key} has an invalid value {value!r}{use}; the default is kept")
            continue
        target[name] = parsed
    if remote:
        top["remote"] = replace(settings.remote, **remote)
    return replace(settings, **top), warnings


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k in ("remote", "context"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        return value if isinstance(value, bool) else None
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else None
    if kind is str:
        return value if isinstance(value, str) else None
    if kind is tuple:
        ok = isinstance(value, list | tuple) and all(isinstance(x, str) for x in value)
        return tuple(value) if ok else None
    return None


def _in_range(name: str, value: Any) -> bool:
    bounds = _RANGES.get(name)
    return bounds is None or bounds[0] <= value <= bounds[1]
