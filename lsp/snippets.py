"""Snippets from the user's other open files, ranked by identifier overlap with the cursor's code.

The query is the few lines above the cursor's line, not the line being typed, so the chosen
snippets (which sit early in the prompt) stay the same while the user types and the KV cache
stays valid. Each file contributes at most its first MAX_FILE_CHARS; the cost is bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from codeassist.lsp.context import Snippet

MAX_FILE_CHARS = 64 * 1024
WINDOW_LINES = 12
STRIDE_LINES = 6
QUERY_LINES = 12
MIN_SCORE = 0.1

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def query_lines(prefix: str) -> str:
    """The lines above the cursor's line (stable while the user types on it)."""
    above = prefix[:prefix.rfind("\n") + 1] if "\n" in prefix else ""
    return "\n".join(above.splitlines()[-QUERY_LINES:])


def rank_snippets(query: str, files: Iterable[tuple[str, str]], limit: int) -> tuple[Snippet, ...]:
    """The best window of each file by Jaccard similarity, best first, at most `limit`."""
    want = set(_IDENT.findall(query))
    if not want or limit <= 0:
        return ()
    best: list[Snippet] = []
    for path, text in files:
        lines = text[:MAX_FILE_CHARS].splitlines()
        top: Snippet | None = None
        for i in range(0, max(1, len(lines) - WINDOW_LINES + 1), STRIDE_LINES):
            chunk = "\n".join(lines[i:i + WINDOW_LINES])
            have = set(_IDENT.findall(chunk))
            score = len(want & have) / len(want | have) if have else 0.0
            if score >= MIN_SCORE and (top is None or score > top.score):
                top = Snippet(path=path, text=chunk, score=score)
        if top is not None:
            best.append(top)
    best.sort(key=lambda s: (-s.score, s.path))
    return tuple(best[:limit])


_COMMENT = {"python": "#", "shellscript": "#", "ruby": "#", "perl": "#", "r": "#", "yaml": "#",
            "toml": "#", "makefile": "#", "dockerfile": "#", "lua": "--", "sql": "--", "haskell": "--"}


def format_snippet(snippet: Snippet, language: str) -> str:
    """The snippet as comment lines, the way code-completion models are usually shown them."""
    mark = _COMMENT.get(language, "//")
    body = "\n".join(f"{mark} {line}" if line else mark for line in snippet.text.splitlines())
    return f"{mark} Compare this snippet from {snippet.path}:\n{body}\n"
