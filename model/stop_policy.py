"""The one stop policy: where a suggestion ends, decided while decoding.

Every entry point asks here: the language server (LINE mode ends at the newline; BLOCK mode at a
new top-level unit or the code below the cursor), `codeassist complete` and the team server's seed
API (a block), and the remote backend, which sends the policy's strings to the server. The rule
"the model has reached the code after the cursor" is `next_code_line`, which post-processing
(lsp/postprocess.py) also reads to drop a suggestion that repeats that line.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BLOCK_STOPS", "MIN_SUFFIX_STOP_CHARS", "PLAIN_LANGUAGE", "StopPolicy", "block_stops", "next_code_line", "stop_policy"]

# Statements that start a new top-level unit end a block suggestion; a blank pair ends any block.
BLOCK_STOPS: dict[str, tuple[str, ...]] = {"python": ("\n\n\n", "\ndef ", "\nclass ", "\nif __name__", "\n@")}
PARAGRAPH_STOP = "\n\n\n"
MIN_SUFFIX_STOP_CHARS = 8  # a shorter next line (`)`, `pass`, `}`) is too common to stop at
PLAIN_LANGUAGE = "python"  # `codeassist complete` and the seed API know no language: theirs are Python's blocks


@dataclass(frozen=True)
class StopPolicy:
    """Stop strings, in the order a server that takes only a few should get them (most decisive
    first); generation ends before the first occurrence of any of them."""

    strings: tuple[str, ...] = ()
    line: bool = False  # LINE mode: the first newline ends the suggestion (it is in `strings` too)
    suffix_line: str = ""  # the next line of code after the cursor's (stripped), when it is a stop


def next_code_line(suffix: str) -> str:
    """The first non-blank line after the cursor's own line, stripped ("" when there is none)."""
    return next((ln.strip() for ln in suffix.split("\n")[1:] if ln.strip()), "")


def block_stops(language: str) -> tuple[str, ...]:
    """The strings that end a block suggestion in `language` (a blank pair for any language)."""
    return BLOCK_STOPS.get(language, (PARAGRAPH_STOP,))


def stop_policy(suffix: str, language: str, *, line: bool) -> StopPolicy:
    """The stops for a suggestion at a cursor before `suffix`: the newline for one line; for a
    block, the language's block stops and the next line of code (the model has reached it)."""
    if line:
        return StopPolicy(strings=("\n",), line=True)
    nxt = next_code_line(suffix)
    if len(nxt) < MIN_SUFFIX_STOP_CHARS:
        nxt = ""
    return StopPolicy(strings=(*block_stops(language), *((nxt,) if nxt else ())), suffix_line=nxt)
