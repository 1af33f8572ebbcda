"""Line cases: how lines are cut from held-out files for line exact match.

Three cuts, each kept exactly as its figures were measured:
- `line_samples` (the gate, the quantization report): code lines of 8+ characters that are not
  comments, cut at a seeded position inside the code, the rest of the line removed;
- `sample_positions` (`codeassist eval PATH`): cursors inside any line of 2+ characters;
- `choose_cases` and `cut_texts` (`codeassist eval --repo`): lines across a repository, half cut at
  the indentation and half mid-line at a word boundary, every target line cut in the copy.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["HeldOutFile", "LineSample", "RepoCase", "TextFile", "choose_cases", "cut_texts",
           "is_word_boundary", "line_samples", "sample_positions"]

_COMMENT_STARTS = ("#", "//", "/*", "*", '"""', "'''", "--")


class TextFile(Protocol):
    """A held-out file: training's SourceFile is one."""

    @property
    def path(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class HeldOutFile:
    path: str
    language: str
    text: str


@dataclass(frozen=True)
class LineSample:
    path: str
    language: str
    document: str  # the file with the rest of the sampled line removed
    offset: int  # the cursor, in code points
    expected: str  # the removed rest of the line


@dataclass(frozen=True)
class RepoCase:
    path: str  # relative to the repository root, '/'-separated
    line: int
    col: int  # code points into the line
    expected: str  # the rest of the line, rstripped: what the cut removed
    at_indent: bool  # the cursor sits at the line's indentation (else mid-line)


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def line_samples(files: Sequence[TextFile], n: int, seed: int = 0) -> list[LineSample]:
    """Up to `n` line-completion cases from `files`, the same ones for the same input."""
    cands: list[tuple[TextFile, int, int]] = []  # file, line start, line end (exclusive of \n)
    for f in sorted(files, key=lambda f: f.path):
        pos = 0
        for line in f.text.split("\n"):
            body = line.strip()
            if len(body) >= 8 and not body.startswith(_COMMENT_STARTS):
                cands.append((f, pos, pos + len(line)))
            pos += len(line) + 1
    rng = random.Random(seed)
    rng.shuffle(cands)
    out = []
    for f, start, end in sorted(cands[:n], key=lambda c: (c[0].path, c[1])):
        line = f.text[start:end].rstrip()
        indent = len(line) - len(line.lstrip())
        cut = indent + _seed(seed, f.path, start) % max(1, len(line) - indent - 4)
        out.append(LineSample(path=f.path, language=f.language, document=f.text[:start + cut] + f.text[end:],
                              offset=start + cut, expected=line[cut:]))
    return out


def sample_positions(text: str, n: int, rng: random.Random) -> list[tuple[int, int]]:
    """(line, col) with col inside the line's code, so at least one character is blanked."""
    lines = text.split("\n")
    candidates = [i for i, ln in enumerate(lines) if len(ln.strip()) >= 2]
    picks = rng.sample(candidates, min(n, len(candidates)))
    out = []
    for i in sorted(picks):
        line = lines[i].rstrip()
        indent = len(line) - len(line.lstrip())
        out.append((i, rng.randrange(indent, len(line))))
    return out


def is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def is_word_boundary(line: str, col: int) -> bool:
    """The server completes here: the cursor does not split a word."""
    return col <= 0 or col >= len(line) or not (is_word_char(line[col - 1]) and is_word_char(line[col]))


def choose_cases(texts: Mapping[str, str], n: int, seed: int) -> list[RepoCase]:
    """`n` lines with 2+ non-space characters; half cut at the indentation, half mid-line at a
    word boundary (a line with no boundary inside its code is cut at its indentation)."""
    rng = random.Random(seed)
    candidates = [(rel, i) for rel in sorted(texts) for i, ln in enumerate(texts[rel].split("\n"))
                  if len(ln.strip()) >= 2]
    picks = rng.sample(candidates, min(n, len(candidates)))
    mid_line = [k % 2 == 1 for k in range(len(picks))]
    rng.shuffle(mid_line)
    cases = []
    for (rel, i), mid in zip(picks, mid_line, strict=True):
        code = texts[rel].split("\n")[i].rstrip()
        indent = len(code) - len(code.lstrip())
        cols = [c for c in range(indent + 1, len(code)) if is_word_boundary(code, c)] if mid else []
        col = rng.choice(cols) if cols else indent
        cases.append(RepoCase(rel, i, col, code[col:], not cols))
    return sorted(cases, key=lambda c: (c.path, c.line))


def cut_texts(texts: Mapping[str, str], cases: Sequence[RepoCase]) -> dict[str, str]:
    """rel path -> text with every target line of that file cut at its cursor."""
    lines: dict[str, list[str]] = {}
    for case in cases:
        file_lines = lines.setdefault(case.path, texts[case.path].split("\n"))
        file_lines[case.line] = file_lines[case.line][:case.col]
    return {rel: "\n".join(ls) for rel, ls in lines.items()}
