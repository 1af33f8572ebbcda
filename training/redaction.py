"""Secret hygiene for training data: secret files by name, and secrets in content.

Two layers, as gitleaks and BigCode's PII pipeline do:
- files whose name says they hold credentials (`.env`, `*.pem`, `id_rsa`, kubeconfig, ...) are
  never opened: `is_secret_filename` decides from the name alone (model/sources.py, where the
  rules of which files are source live: the language server and the eval skip them too);
- in every other file, secrets and email addresses are replaced by placeholders before anything
  is tokenized: `redact(text)`.

Detectors: detect-secrets' regex plugins (maintained by Yelp; cloud keys, tokens of two dozen
services, JWTs), only their regular expressions — never their verification step, which calls the
services over the network. Our own rules fill what they miss: whole private-key blocks (the plugin
matches only the BEGIN line), password/token assignments, high-entropy string literals (tuned so
that hex digests and UUIDs in code are kept) and email addresses.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass

from codeassist.model.sources import SECRET_DIRS, SECRET_FILE_PATTERNS, is_secret_filename

# with the secret file names of model/sources.py: tests and corpus_sources.py import them from here
__all__ = ["ENTROPY_MIN", "PLACEHOLDERS", "SECRET_DIRS", "SECRET_FILE_PATTERNS", "Span", "find_secrets",
           "is_high_entropy", "is_secret_filename", "redact", "shannon_entropy"]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str  # the placeholder's name: SECRET, PRIVATE_KEY, PASSWORD, EMAIL


PLACEHOLDERS = {kind: f"<{kind}>" for kind in ("SECRET", "PRIVATE_KEY", "PASSWORD", "EMAIL")}

_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL)
_PUTTY_KEY = re.compile(r"PuTTY-User-Key-File-\d.*?(?:Private-MAC: *\S+|\Z)", re.DOTALL)
# name = "value" / name: 'value' / "name": "value" for names that hold credentials
# the name ends with the word (db_password, GITHUB_TOKEN, client_secret), so token_type and
# password_prompt are not credentials
_SECRET_NAME = (r"(?:[A-Za-z0-9_.-]*?(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|"
                r"access[_-]?key|private[_-]?key|credentials?)\d*)\b")
_QUOTED_ASSIGN = re.compile(
    r"(?i)[\"']?\b" + _SECRET_NAME + r"[\"']?\s*(?::\s*[A-Za-z_][\w\[\], |.]*)?\s*(?::=|=|:|=>)\s*"
    r"[rbuRBUf]{0,2}([\"'])(?P<value>[^\"'\s]{4,})\1")
# unquoted values in config files: password = hunter2  /  password: hunter2
_BARE_ASSIGN = re.compile(
    r"(?im)^[ \t]*[\"']?" + _SECRET_NAME + r"[\"']?[ \t]*(?:=|:)[ \t]*(?P<value>[^\s\"'#;,]{4,})[ \t]*$")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# a whole string literal, or a whole unquoted config value: identifiers in code are not candidates
_CANDIDATE = re.compile(r"([\"'`])(?P<value>[A-Za-z0-9+/=_.-]{24,})\1|"
                        r"(?:=|:)[ \t]*(?P<bare>[A-Za-z0-9+/=_-]{24,})[ \t]*$", re.MULTILINE)
_WORDISH = re.compile(r"[A-Z]?[a-z]{3,}|[A-Z]{4,}")
_HEX = re.compile(r"^(?:0x)?[0-9a-fA-F]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# values that are references to secrets, not secrets: ${VAR}, {{ var }}, %(x)s, <token>, os.environ
_TEMPLATE = re.compile(r"^(?:\$\{?[\w.]+\}?|\{\{.*\}\}|\{[\w.]*\}|%\(?\w*\)?s|<[^>]*>|\*+|x+|\.\.\.+|"
                       r"(?:changeme|change_me|password|secret|example|dummy|placeholder|none|null|"
                       r"true|false|redacted|your[_-].*|test|todo|xxx+))$", re.IGNORECASE)
ENTROPY_MIN = 4.0  # bits per character for a 24+ character string to count as random


def shannon_entropy(s: str) -> float:
    counts = Counter(s)
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def is_high_entropy(s: str) -> bool:
    """A random-looking key: long, mixed upper/lower/digits, high entropy; never hex or a UUID.

    Hex digests (sha256 in code, git hashes) and UUIDs are identifiers people write in code and
    the model should learn their shape, so they are kept even though they look random.
    """
    s = s.strip("=")
    if len(s) < 24 or _HEX.match(s) or _UUID.match(s) or s.startswith(("/", "./", "../")):
        return False
    classes = sum((any(c.islower() for c in s), any(c.isupper() for c in s), any(c.isdigit() for c in s)))
    if classes < 3:
        return False
    if sum(len(w) for w in _WORDISH.findall(s)) > 0.5 * len(s):
        return False  # made of words: identifiers, paths (random base64 is about 15% such runs)
    return shannon_entropy(s) >= ENTROPY_MIN


@functools.cache
def _plugin_regexes() -> tuple[re.Pattern[str], ...]:
    """The denylist regexes of detect-secrets' regex plugins (without the IP-address plugin)."""
    try:
        import importlib
        import pkgutil

        import detect_secrets.plugins as plugins
        from detect_secrets.plugins.base import RegexBasedDetector
    except ImportError:  # our own rules still run
        return ()
    out: list[re.Pattern[str]] = []
    for info in sorted(pkgutil.iter_modules(plugins.__path__), key=lambda m: m.name):
        if info.name in ("base", "ip_public", "private_key", "keyword", "high_entropy_strings"):
            continue
        mod = importlib.import_module(f"detect_secrets.plugins.{info.name}")
        for obj in sorted(vars(mod).values(), key=lambda o: getattr(o, "__name__", "")):
            if (isinstance(obj, type) and issubclass(obj, RegexBasedDetector) and obj is not RegexBasedDetector
                    and obj.__module__ == mod.__name__):
                out.extend(obj().denylist)
    return tuple(out)


def _plugin_spans(text: str) -> list[Span]:
    spans = []
    for rx in _plugin_regexes():
        for m in rx.finditer(text):
            start, end = m.span()
            # a group that holds the secret value (AWS secret, basic-auth password) is what goes;
            # short groups are prefixes (ghp_) and the whole match goes
            groups = [m.span(i) for i in range(1, (rx.groups or 0) + 1) if m.group(i)]
            wide = max(groups, key=lambda s: s[1] - s[0], default=None)
            if wide is not None and wide[1] - wide[0] >= 8:
                start, end = wide
            while start < end and text[start] in " \t\n\"'=:":
                start += 1
            while end > start and text[end - 1] in " \t\n\"'":
                end -= 1
            if end - start >= 8:
                spans.append(Span(start, end, "SECRET"))
    return spans


def _value_spans(rx: re.Pattern[str], text: str, kind: str) -> list[Span]:
    spans = []
    for m in rx.finditer(text):
        value = m.group("value")
        if (_TEMPLATE.match(value.strip()) or value.startswith(("$", "{", "%", "<"))
                or not any(c.isalpha() for c in value)):  # OIDs and versions, not passwords
            continue
        spans.append(Span(m.start("value"), m.end("value"), kind))
    return spans


def find_secrets(text: str, bare_assignments: bool = False) -> list[Span]:
    """Every secret and email span in `text`, overlaps merged, in order.

    `bare_assignments` also reads unquoted `password = value` lines (config files and shell, where
    values are unquoted; in code such a value is an expression, not a literal).
    """
    spans: list[Span] = [Span(*m.span(), "PRIVATE_KEY") for m in _PRIVATE_KEY_BLOCK.finditer(text)]
    spans += [Span(*m.span(), "PRIVATE_KEY") for m in _PUTTY_KEY.finditer(text)]
    spans += _plugin_spans(text)
    spans += [Span(*m.span(), "SECRET") for m in _JWT.finditer(text)]
    spans += _value_spans(_QUOTED_ASSIGN, text, "PASSWORD")
    if bare_assignments:
        spans += _value_spans(_BARE_ASSIGN, text, "PASSWORD")
    for m in _CANDIDATE.finditer(text):
        group = "value" if m.group("value") else "bare"
        if is_high_entropy(m.group(group)):
            spans.append(Span(*m.span(group), "SECRET"))
    spans += [Span(*m.span(), "EMAIL") for m in _EMAIL.finditer(text)]
    return _merge(spans)


_PRIORITY = {"PRIVATE_KEY": 0, "SECRET": 1, "PASSWORD": 2, "EMAIL": 3}


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -s.end)):
        if merged and s.start < merged[-1].end:
            last = merged[-1]
            kind = min(last.kind, s.kind, key=_PRIORITY.__getitem__)
            merged[-1] = Span(last.start, max(last.end, s.end), kind)
        else:
            merged.append(s)
    return merged


def redact(text: str, bare_assignments: bool = False) -> tuple[str, Counter[str]]:
    """(text with each secret replaced by its placeholder, how many of each kind were replaced)."""
    spans = find_secrets(text, bare_assignments)
    if not spans:
        return text, Counter()
    pieces: list[str] = []
    pos = 0
    for s in spans:
        pieces.append(text[pos:s.start])
        pieces.append(PLACEHOLDERS[s.kind])
        pos = s.end
    pieces.append(text[pos:])
    return "".join(pieces), Counter(s.kind for s in spans)
