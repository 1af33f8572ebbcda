"""Settings from initializationOptions and `workspace/didChangeConfiguration` (section `codeassist`).

Parsed once into a frozen dataclass, by cattrs (it comes with lsprotocol): the dataclass is the
schema. A field's wire key is its name in camelCase (`max_tokens` is `maxTokens`) unless its
metadata names another (`context.maxPromptTokens`); its type says what is valid (strict JSON
types, `OneOf` choices, `Between` ranges, from remote/settings.py). A wrong value keeps its
default (or the value it had) and yields one warning sentence naming the key; it never stops the
server. Unknown keys are ignored: newer clients may send more. Both `{"remote": {"url": ...}}`
and `{"remote.url": ...}` are read.
"""

# no `from __future__ import annotations`: cattrs reads the Annotated constraints at run time
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from codeassist.remote.settings import Between, OneOf, RemoteSettings

__all__ = ["SETTING_CHOICES", "SETTING_KEYS", "RemoteSettings", "Settings", "parse_settings"]


@dataclass(frozen=True)
class Settings:
    backend: Annotated[str, OneOf(("local", "remote"))] = "local"
    model: str = "default"
    device: str = "auto"
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    max_tokens: Annotated[int, Between(1, 512)] = 48  # per suggestion; LINE mode stops at the newline
    temperature: Annotated[float, Between(0.0, 2.0)] = 0.0
    debounce_ms: Annotated[int, Between(0, 2000)] = 0  # the newest request supersedes older ones
    multiline: Annotated[str, OneOf(("auto", "always", "never"))] = "auto"
    languages: tuple[str, ...] = ()  # empty: every language
    exclude: tuple[str, ...] = ()  # globs over the document path
    # about 700 prefix + a few hundred suffix, as in training
    max_prompt_tokens: Annotated[int, Between(16, 8192)] = field(
        default=896, metadata={"key": "context.maxPromptTokens"})
    # other open files of the same language offered as snippets
    open_files: Annotated[int, Between(0, 32)] = field(default=4, metadata={"key": "context.openFiles"})
    time_budget_ms: Annotated[int, Between(50, 30000)] = 1500  # decoding, after the prefill: later is no use
    cache: bool = True  # benchmarks switch these two off to measure what they save
    prefix_reuse: bool = True
    copy: bool = True  # copy-aware decoding: continuations found in the document and the workspace
    # index the workspace folders (candidates for copying, retrieved snippets)
    repository: bool = field(default=True, metadata={"key": "context.repository"})

    def is_enabled_for(self, language: str, path: str) -> bool:
        return self.disabled_reason(language, path) is None

    def disabled_reason(self, language: str, path: str) -> str | None:
        """Why completions are off for this document (one sentence), or None when they are on."""
        if self.languages and language not in self.languages:
            return f"completions are off for {language or 'this language'} (codeassist.languages)"
        if any(fnmatch.fnmatch(path, g) for g in self.exclude):
            return "this file matches codeassist.exclude"
        return None


def _wire_key(f: Any) -> str:
    head, *rest = f.name.split("_")
    return str(f.metadata.get("key", head + "".join(w.title() for w in rest)))


def _wire_keys(cls: type) -> dict[str, str]:
    return {f.name: _wire_key(f) for f in fields(cls)}


def _constraints(kind: Any) -> tuple[Any, ...]:
    return get_args(kind)[1:] if get_origin(kind) is Annotated else ()


def _strict(kind: type) -> Callable[[Any, Any], Any]:
    """JSON as it came: no "5" for 5, no true for 1 (cattrs would convert both)."""
    accepted = (int, float) if kind is float else (kind,)

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, accepted):
            raise TypeError(f"expected {kind.__name__}")
        return kind(value)
    return structure


def _strings(value: Any, _: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(x, str) for x in value):
        raise TypeError("expected a list of strings")
    return tuple(value)


def _constrained(kind: Any) -> Callable[[Any, Any], Any]:
    inner = get_args(kind)[0]
    structure_inner = _converter.get_structure_hook(inner)

    def structure(value: Any, _: Any) -> Any:
        parsed = structure_inner(value, inner)
        for c in _constraints(kind):
            if (isinstance(c, OneOf) and parsed not in c.choices) or (
                    isinstance(c, Between) and not c.low <= parsed <= c.high):
                raise ValueError(f"{parsed!r} is not allowed")
        return parsed
    return structure


_converter = cattrs.Converter(detailed_validation=True, forbid_extra_keys=False)
for _kind in (int, float, bool, str):
    _converter.register_structure_hook(_kind, _strict(_kind))
_converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _strings)
_converter.register_structure_hook_factory(lambda t: bool(_constraints(t)), _constrained)


def _object(structure: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """cattrs reads a mapping by `key in value`, which a string also answers: refuse non-objects."""
    def checked(value: Any, kind: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError("expected an object")
        return structure(value, kind)
    return checked


for _cls in (RemoteSettings, Settings):
    _renames: dict[str, Any] = {name: override(rename=key) for name, key in _wire_keys(_cls).items()}
    _converter.register_structure_hook(_cls, _object(make_dict_structure_fn(_cls, _converter, **_renames)))
    _converter.register_unstructure_hook(_cls, make_dict_unstructure_fn(_cls, _converter, **_renames))


def _all_keys() -> dict[str, Any]:
    """Every dotted key the server reads, with its type."""
    keys: dict[str, Any] = {}
    types = get_type_hints(Settings, include_extras=True)
    remote_types = get_type_hints(RemoteSettings, include_extras=True)
    for f in fields(Settings):
        if f.name == "remote":
            keys |= {f"remote.{_wire_key(r)}": remote_types[r.name] for r in fields(RemoteSettings)}
        else:
            keys[_wire_key(f)] = types[f.name]
    return keys


_DEFAULTS = _converter.unstructure(Settings())
_TYPES = _all_keys()
SETTING_KEYS = tuple(_TYPES)
SETTING_CHOICES = {key: c.choices for key, kind in _TYPES.items() for c in _constraints(kind) if isinstance(c, OneOf)}


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """(settings, warnings). `raw` is the `codeassist` object, or a dict holding one. Only the keys
    it names change: the rest keep their value in `base`, which is not checked again (the command
    line may set values the editor may not, such as the tests' fake backend)."""
    settings = base or Settings()
    if raw is None:
        return settings, []
    if not isinstance(raw, dict):
        return settings, ["codeassist settings must be an object; defaults are used"]
    if isinstance(raw.get("codeassist"), dict):
        raw = raw["codeassist"]
    given = _nest_remote(_flatten_context(raw))
    candidate = _DEFAULTS | given
    if isinstance(given.get("remote"), dict):
        candidate["remote"] = _DEFAULTS["remote"] | given["remote"]
    warnings: list[str] = []
    try:
        parsed = _converter.structure(candidate, Settings)
    except cattrs.ClassValidationError as exc:
        for path in _failed_keys(exc):
            key = _dotted(path)
            parent, default = (given["remote"], _DEFAULTS["remote"]) if len(path) == 2 else (given, _DEFAULTS)
            use = f" (use {', '.join(SETTING_CHOICES[key])})" if key in SETTING_CHOICES else ""
            warnings.append(f"codeassist.{key} has an invalid value {parent.pop(path[-1])!r}{use}; "
                            "the default is kept")
            (candidate["remote"] if len(path) == 2 else candidate)[path[-1]] = default[path[-1]]
        parsed = _converter.structure(candidate, Settings)
    named = _named(parsed, given, Settings)
    if "remote" in named:  # field by field: the remote keys not given keep theirs too
        named["remote"] = replace(settings.remote, **_named(parsed.remote, given["remote"], RemoteSettings))
    return replace(settings, **named), warnings


def _named(parsed: Any, given: dict[str, Any], cls: type) -> dict[str, Any]:
    """The fields of `parsed` whose wire keys `given` names."""
    return {name: getattr(parsed, name) for name, key in _wire_keys(cls).items() if key in given}


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _flatten_context(raw: dict[str, Any]) -> dict[str, Any]:
    context = raw.get("context")
    if not isinstance(context, dict):
        return raw
    return {k: v for k, v in raw.items() if k != "context"} | {f"context.{k}": v for k, v in context.items()}


def _nest_remote(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy with `remote.x` keys moved into the remote object (a copy too: parsing edits it)."""
    dotted = {k.removeprefix("remote."): v for k, v in raw.items() if k.startswith("remote.")}
    out = {k: v for k, v in raw.items() if not k.startswith("remote.")}
    if dotted or isinstance(out.get("remote"), dict):
        out["remote"] = (out["remote"] if isinstance(out.get("remote"), dict) else {}) | dotted
    return out


def _failed_keys(exc: cattrs.ClassValidationError, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The wire path of every value cattrs refused, from the notes it attaches to each error."""
    for sub in exc.exceptions:
        note = next(n for n in getattr(sub, "__notes__", ()) if isinstance(n, cattrs.AttributeValidationNote))
        cls = RemoteSettings if prefix else Settings
        path = (*prefix, _wire_keys(cls)[note.name])
        if isinstance(sub, cattrs.ClassValidationError) and note.name == "remote":
            yield from _failed_keys(sub, path)
        else:
            yield path
