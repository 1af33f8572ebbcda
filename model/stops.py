"""Stop rules: what ends a completion, decided on the text as it is decoded.

The engine, speculation and the team server's scheduler all end a completion the same way: the
text after the forced prefix (token healing) is checked after every token against the rules
below, and decoding ends where the first one fires. Nothing is decoded to max tokens and trimmed
afterwards. A rule that cannot decide yet (a stop string arriving in pieces, a line whose
indentation or first word is still coming) holds that text back from a streamed response.

The rules are data, so the prompt builder's stop policy (which rules a LINE or BLOCK request
gets) asks for them by field:

- `stop_strings`: the output stops before the first occurrence of any;
- `stop_at_newline`: LINE mode, the first line break ends the output (it is not kept);
- `dedent_line_prefix`: BLOCK mode, the cursor's line before the cursor; a later line indented
  less than the block the output starts in ends it (see `dedent_cut`, the one implementation of
  that rule; post-processing calls it too);
- `suffix_line`: the first non-blank line after the cursor, stripped; the output stops before it
  (the model has reached the code below).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLOSERS", "CONTINUES", "StopRules", "dedent_cut", "first_stop", "indent_width", "partial_stop"]

CLOSERS = (")", "]", "}")  # a dedented line that starts with one closes the block: it is kept
CONTINUES = ("else", "elif", "except", "finally", "case", "}")  # lines that go on with the block
_DECIDED = max(len(c) for c in CONTINUES) + 1  # a line this long (stripped) shows its first word


@dataclass(frozen=True)
class StopRules:
    max_new_tokens: int = 64
    stop_strings: tuple[str, ...] = ()  # generation stops before the first occurrence of any
    stop_on_eos: bool = True
    time_budget_s: float | None = None  # wall-clock budget for decoding, from the end of the prefill
    stop_at_newline: bool = False  # LINE mode: the first line break ends the output
    dedent_line_prefix: str | None = None  # BLOCK mode: the cursor's line before the cursor (see dedent_cut)
    suffix_line: str = ""  # the first non-blank line after the cursor, stripped; "" for none

    @property
    def strings(self) -> tuple[str, ...]:
        """Every stop matched as a string: the stop strings, the newline, the suffix's line."""
        extra = ("\n",) * self.stop_at_newline + ((self.suffix_line,) if self.suffix_line else ())
        return tuple(s for s in (*self.stop_strings, *extra) if s)

    def cut(self, text: str, final: bool) -> tuple[int | None, int]:
        """(where the output ends in `text`, or None; how much of `text` is decided so far).

        `text` is the output after the forced prefix; `final` says no more is coming."""
        strings = self.strings
        cut = first_stop(text, strings)
        if self.dedent_line_prefix is not None:
            line_cut = dedent_cut(text, self.dedent_line_prefix, final)
            if line_cut is not None and (cut is None or line_cut < cut):
                cut = line_cut
        if cut is not None:
            return cut, cut
        if final:
            return None, len(text)
        decided = len(text) - partial_stop(text, strings)
        if self.dedent_line_prefix is not None:
            decided = min(decided, _undecided_from(text))
        return None, decided


def first_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Index of the earliest occurrence of any stop string in text[start:], or None."""
    best: int | None = None
    for s in stops:
        if s:
            i = text.find(s, start)
            if i != -1 and (best is None or i < best):
                best = i
    return best


def partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of text that is a proper prefix of a stop string."""
    held = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:k]):
                held = k
                break
    return held


def indent_width(line: str) -> int:
    """A line's indentation in columns, a tab counting 4."""
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def dedent_cut(text: str, line_prefix: str, final: bool = True) -> int | None:
    """Where a block suggestion ends: before the first later line indented less than the start,
    or, when the first line opens a block (ends with ':' or '{'), no deeper than it unless the
    line goes on with the block (else, except, ...). A dedented line that starts with a closing
    bracket ends the block and is kept. The cut drops trailing whitespace. None: no such line.

    `line_prefix` is the cursor's line before the cursor. With `final` False the text is still
    being decoded: its last line is judged once its first word is known (or, for a line that
    closes a bracket, once it is complete).
    """
    lines = text.split("\n")
    if len(lines) < 2:
        return None
    first = line_prefix + lines[0]
    base = indent_width(first)
    opens = first.rstrip().endswith((":", "{"))
    start = len(lines[0]) + 1
    for i, line in enumerate(lines[1:], start=1):
        body = line.strip()
        complete = final or i < len(lines) - 1
        if body:
            ind = indent_width(line)
            if ind < base or (opens and ind == base and not body.startswith(CONTINUES)):
                if ind == base and not complete and len(body) < _DECIDED:
                    return None  # its first word may yet go on with the block
                if body[0] in CLOSERS:
                    return len(text[:start + len(line)].rstrip()) if complete else None  # kept whole
                return len(text[:start].rstrip())
        start += len(line) + 1
    return None


def _undecided_from(text: str) -> int:
    """Where text a dedent cut could still remove begins: the trailing whitespace before the last
    line, and that line (its indentation or first word may yet end the block)."""
    last = text.rfind("\n")
    if last == -1:
        return len(text)
    return len(text[:last].rstrip())
