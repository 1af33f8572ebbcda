"""Post-processing: an ordered list of small named filters (after tabby-agent).

Each filter gets the suggestion and returns it unchanged, changed, or None to drop it. Filters
never raise; `postprocess` reports which one dropped a suggestion, for `codeassist/status`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from codeassist.lsp.context import CompletionContext, Mode
from codeassist.model.stop_policy import next_code_line
from codeassist.model.stops import dedent_cut

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")": "(", "]": "[", "}": "{"}
_REPEAT = re.compile(r"(.{1,40}?)\1{4,}", re.DOTALL)


@dataclass(frozen=True)
class PostContext:
    ctx: CompletionContext
    mode: Mode


Filter = Callable[[str, PostContext], str | None]


def _indent(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def _base_indent(text: str, pc: PostContext) -> int:
    """Indentation of the line the suggestion starts on, as it will read after insertion."""
    return _indent(pc.ctx.line_prefix + text.split("\n", 1)[0])


def first_line_only(text: str, pc: PostContext) -> str | None:
    return text.split("\n", 1)[0] if pc.mode is Mode.LINE else text


def stop_at_dedent(text: str, pc: PostContext) -> str | None:
    """Cut at the first later line indented less than the start, or ending the block it opened
    (model/stops.py's rule, which BLOCK requests also stop at while decoding; a remote server does not)."""
    cut = dedent_cut(text, pc.ctx.line_prefix)
    return text if cut is None else text[:cut]


def stop_at_blank_after_block(text: str, pc: PostContext) -> str | None:
    """A blank line ends the suggestion unless the code after it continues deeper than the start."""
    lines = text.split("\n")
    base = _base_indent(text, pc)
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() or not "".join(lines[:i]).strip():
            continue
        rest = [ln for ln in lines[i + 1:] if ln.strip()]
        if not rest or _indent(rest[0]) <= base:
            return "\n".join(lines[:i])
    return text


def stop_at_unmatched_bracket(text: str, pc: PostContext) -> str | None:
    """A closer that the suggestion did not open: the document may already have it."""
    stack: list[str] = []
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "\"'":
            quote = ch
        elif ch in _OPEN:
            stack.append(ch)
        elif ch in _CLOSE:
            if stack and stack[-1] == _CLOSE[ch]:
                stack.pop()
                continue
            if "\n" not in text[:i] and pc.ctx.line_suffix.lstrip()[:1] in _CLOSE:
                return text[:i]  # the rest of the line already closes it
            end = text.find("\n", i)
            return text if end < 0 else text[:end]
        elif ch == "\n":
            quote = ""
    return text


def drop_suffix_duplicate(text: str, pc: PostContext) -> str | None:
    """Trim what the rest of the line already has; drop or cut a repeat of the next line."""
    after = pc.ctx.line_suffix.strip()
    if after and "\n" not in text:
        t = text.rstrip()
        for n in range(min(len(after), len(t)), 0, -1):
            part = after[:n]
            if t.endswith(part) and (n == len(after) or not any(c.isalnum() or c == "_" for c in part)):
                text = t[:len(t) - n]
                break
    nxt = next_code_line(pc.ctx.suffix)
    if len(nxt) > 3:
        lines = text.split("\n")
        if (pc.ctx.line_prefix + lines[0]).strip() == nxt and not after:
            return None
        for i in range(1, len(lines)):
            if lines[i].strip() == nxt:
                return "\n".join(lines[:i])
    return text


def trim_repetition(text: str, pc: PostContext) -> str | None:
    """Cut a line repeated three times in a row, or a short pattern repeated five times."""
    lines = text.split("\n")
    for i in range(2, len(lines)):
        if lines[i].strip() and lines[i] == lines[i - 1] == lines[i - 2]:
            text = "\n".join(lines[:i - 1])
            break
    m = _REPEAT.search(text)
    if m and len(m.group(0)) >= 12:
        text = text[:m.start() + 2 * len(m.group(1))]
    return text


def reindent(text: str, pc: PostContext) -> str | None:
    """Tabs where the document indents with tabs (the model writes spaces)."""
    if pc.ctx.indent_unit != "\t" or "\n" not in text:
        return text
    lines = text.split("\n")
    out = [lines[0]]
    for line in lines[1:]:
        stripped = line.lstrip(" ")
        n = len(line) - len(stripped)
        out.append("\t" * (n // 4) + " " * (n % 4) + stripped)
    return "\n".join(out)


def trim_trailing_whitespace(text: str, pc: PostContext) -> str | None:
    lines = text.rstrip().split("\n")
    return "\n".join([lines[0]] + [ln.rstrip() for ln in lines[1:]]) if len(lines) > 1 else lines[0]


def drop_whitespace_only(text: str, pc: PostContext) -> str | None:
    return text if text.strip() else None


FILTERS: tuple[tuple[str, Filter], ...] = (
    ("first_line_only", first_line_only),
    ("stop_at_dedent", stop_at_dedent),
    ("stop_at_blank_after_block", stop_at_blank_after_block),
    ("stop_at_unmatched_bracket", stop_at_unmatched_bracket),
    ("trim_repetition", trim_repetition),
    ("drop_suffix_duplicate", drop_suffix_duplicate),
    ("reindent", reindent),
    ("trim_trailing_whitespace", trim_trailing_whitespace),
    ("drop_whitespace_only", drop_whitespace_only),
)


def postprocess(text: str, ctx: CompletionContext, mode: Mode,
                filters: tuple[tuple[str, Filter], ...] = FILTERS) -> tuple[str, str | None]:
    """(the cleaned text, the name of the filter that dropped it or None)."""
    pc = PostContext(ctx, mode)
    for name, f in filters:
        try:
            out = f(text, pc)
        except Exception:  # a filter bug must not lose the editor a response
            continue
        if out is None:
            return "", name
        text = out
    return text, None
