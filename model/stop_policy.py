"""The one stop policy: which stop rules (model/stops.py) a suggestion gets, all decided while decoding.

Every entry point asks here: the language server (LINE mode ends at the newline; BLOCK mode at a
new top-level unit, a line dedented below the block, or the code below the cursor), `codeassist
complete` and the team server's seed API (a Python block, without the dedent rule: they have no
editor line), and the remote backend, which sends the rules' strings (`StopRules.strings`) to the
server. The rule "the model has reached the code after the cursor" is `next_code_line`, which
post-processing (lsp/postprocess.py) also reads to drop a suggestion that repeats that line.

The policy leaves the budget out (max_new_tokens, time_budget_s): the caller sets it with
`dataclasses.replace`.
"""

from __future__ import annotations

from codeassist.model.stops import StopRules

__all__ = ["BLOCK_STOPS", "MIN_SUFFIX_STOP_CHARS", "PLAIN_LANGUAGE", "block_stops", "next_code_line",
           "stop_policy"]

# Statements that start a new top-level unit end a block suggestion, most decisive first (a server
# that takes only a few stop strings gets the first ones); a blank pair ends a block in any language.
BLOCK_STOPS: dict[str, tuple[str, ...]] = {"python": ("\n\n\n", "\ndef ", "\nclass ", "\nif __name__", "\n@")}
PARAGRAPH_STOP = "\n\n\n"
MIN_SUFFIX_STOP_CHARS = 8  # a shorter next line (`)`, `pass`, `}`) is too common to stop at
PLAIN_LANGUAGE = "python"  # `codeassist complete` and the seed API know no language: Python's blocks


def next_code_line(suffix: str) -> str:
    """The first non-blank line after the cursor's own line, stripped ("" when there is none)."""
    return next((ln.strip() for ln in suffix.split("\n")[1:] if ln.strip()), "")


def block_stops(language: str) -> tuple[str, ...]:
    """The strings that end a block suggestion in `language` (a blank pair for any language)."""
    return BLOCK_STOPS.get(language, (PARAGRAPH_STOP,))


def stop_policy(suffix: str, language: str, *, line: bool, line_prefix: str | None = None) -> StopRules:
    """The stops for a suggestion at a cursor before `suffix`: the newline for one line; for a
    block, the language's block stops, the next line of code (the model has reached it) and, given
    the cursor's line before the cursor (`line_prefix`), a line dedented below the block."""
    if line:
        return StopRules(stop_at_newline=True)
    nxt = next_code_line(suffix)
    return StopRules(stop_strings=block_stops(language), dedent_line_prefix=line_prefix,
                     suffix_line=nxt if len(nxt) >= MIN_SUFFIX_STOP_CHARS else "")
