"""What the model sees of a document: a bounded window around the cursor, never the whole file.

Building the context reads at most PREFIX_CHARS + QUANTUM before the cursor and SUFFIX_CHARS
after it, so a 50 MB file or a 1 MB single line costs the same as a small one. The window's
left edge sits on absolute offsets rounded to QUANTUM, so it does not move while the user types
at the cursor and the engine's KV cache of the earlier tokens stays valid.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

PREFIX_CHARS = 6000
SUFFIX_CHARS = 2000
QUANTUM = 2048

_WORD = re.compile(r"[A-Za-z0-9_]")


class Mode(enum.Enum):
    NONE = "none"  # do not complete here (the cursor is inside a word)
    LINE = "line"
    BLOCK = "block"


@dataclass(frozen=True)
class Snippet:
    path: str
    text: str
    score: float


@dataclass(frozen=True)
class CompletionContext:
    uri: str
    language: str
    prefix: str  # window text before the cursor
    suffix: str  # window text after the cursor
    prefix_offset: int  # absolute offset (in code points) of prefix[0] in the document
    at_file_start: bool  # the window starts at the beginning of the file
    indent_unit: str  # "\t" or a run of spaces, as the document indents
    snippets: tuple[Snippet, ...] = ()

    @property
    def line_prefix(self) -> str:
        """The current line up to the cursor."""
        return self.prefix[self.prefix.rfind("\n") + 1:]

    @property
    def line_suffix(self) -> str:
        """The rest of the current line after the cursor."""
        end = self.suffix.find("\n")
        return self.suffix if end < 0 else self.suffix[:end]


def cursor_offset(text: str, line: int, character: int, encoding: str = "utf-16") -> tuple[int, int]:
    """(offset in code points, line) for an LSP position; out-of-range positions are clamped.

    Costs a scan up to the cursor's line, never the whole document.
    """
    start = 0
    for n in range(max(0, line)):
        nl = text.find("\n", start)
        if nl < 0:
            line = n  # past the last line: the end of the document
            return len(text), line
        start = nl + 1
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    if end > start and text[end - 1] == "\r":
        end -= 1
    return start + units_to_index(text[start:end], character, encoding), max(0, line)


def units_to_index(line: str, units: int, encoding: str) -> int:
    """Client code units (utf-8 bytes, utf-16 units, utf-32 code points) → code points, clamped."""
    units = max(0, units)
    if encoding == "utf-32":
        return min(units, len(line))
    if encoding == "utf-8":
        return len(line.encode("utf-8")[:units].decode("utf-8", errors="ignore"))
    return len(line.encode("utf-16-le")[:2 * units].decode("utf-16-le", errors="ignore"))


def index_to_units(line: str, index: int, encoding: str) -> int:
    head = line[:index]
    if encoding == "utf-32":
        return len(head)
    if encoding == "utf-8":
        return len(head.encode("utf-8"))
    return len(head.encode("utf-16-le")) // 2


def build_context(uri: str, language: str, text: str, offset: int,
                  snippets: tuple[Snippet, ...] = ()) -> CompletionContext:
    offset = max(0, min(offset, len(text)))
    start = 0
    if offset > PREFIX_CHARS:
        start = (offset - PREFIX_CHARS) // QUANTUM * QUANTUM
        nl = text.find("\n", start, offset)
        start = nl + 1 if nl >= 0 else start  # begin on a line when there is one
    prefix = text[start:offset]
    suffix = text[offset:offset + SUFFIX_CHARS]
    return CompletionContext(uri=uri, language=language, prefix=prefix, suffix=suffix,
                             prefix_offset=start, at_file_start=start == 0,
                             indent_unit=detect_indent(prefix + suffix), snippets=snippets)


def detect_indent(text: str) -> str:
    """The document's indentation unit, judged from the window."""
    tabs = spaces = 0
    widths: dict[int, int] = {}
    for line in text.splitlines():
        if line.startswith("\t"):
            tabs += 1
        elif line.startswith(" ") and line.strip():
            spaces += 1
            n = len(line) - len(line.lstrip(" "))
            widths[n] = widths.get(n, 0) + 1
    if tabs > spaces:
        return "\t"
    for unit in (4, 2, 8):
        if widths and all(w % unit == 0 for w in widths):
            return " " * unit
    return "    "


def completion_mode(ctx: CompletionContext, multiline: str = "auto") -> Mode:
    """NONE inside a word; BLOCK on an empty line or after a block opener; else LINE."""
    after = ctx.line_suffix
    if after[:1] and _WORD.match(after[0]):
        return Mode.NONE
    if multiline == "never":
        return Mode.LINE
    if multiline == "always":
        return Mode.BLOCK
    if after.strip():
        return Mode.LINE
    before = ctx.line_prefix
    if not before.strip():
        return Mode.BLOCK
    return Mode.BLOCK if before.rstrip().endswith((":", "{", "(", "[")) else Mode.LINE
