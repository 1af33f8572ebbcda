"""Stop rules decided while decoding: strings, the newline, the suffix's line, the block's dedent."""

from __future__ import annotations

import pytest

from codeassist.model.stops import StopRules, dedent_cut, first_stop, partial_stop

BODY = "x = 1\n    y = 2\n"


def test_first_stop_is_the_earliest_of_any_string() -> None:
    assert first_stop("a\nb\n\n\nc", ("\n\n\n", "\n")) == 1
    assert first_stop("abc", ("x", "")) is None
    assert first_stop("a\nb\nc", ("\n",), start=2) == 3


def test_partial_stop_holds_a_tail_that_may_start_a_stop() -> None:
    assert partial_stop("x = 1\nde", ("\ndef ",)) == 3
    assert partial_stop("x = 1", ("\ndef ",)) == 0


def test_newline_and_suffix_line_are_stops_like_strings() -> None:
    rules = StopRules(stop_at_newline=True)
    assert rules.cut("foo(a)\nbar", final=False) == (6, 6)
    below = StopRules(suffix_line="return result")
    assert below.cut("x = 1\n    return result\n", final=False)[0] == 10
    assert below.cut("x = 1\n    return res", final=False) == (None, 10)  # held back: may be the suffix


@pytest.mark.parametrize(("text", "prefix", "expected"), [
    ("x = 1\n    y = 2\nz = 3\n", "    ", "x = 1\n    y = 2"),  # a line less indented than the start
    ("if a:\n        b()\n    c()\n", "    ", "if a:\n        b()"),  # a block opened and closed
    ("if a:\n        b()\n    else:\n        c()\n", "    ", "if a:\n        b()\n    else:\n        c()\n"),
    ("f(\n        a,\n)\ng()\n", "    ", "f(\n        a,\n)"),  # the closer is kept
    ("x = 1\n\n\nz = 3", "    ", "x = 1"),  # blank lines before the dedent go too
    ("x = 1\n    y = 2", "    ", "x = 1\n    y = 2"),  # nothing dedented
])
def test_dedent_cut_ends_the_block(text: str, prefix: str, expected: str) -> None:
    cut = dedent_cut(text, prefix)
    assert (text if cut is None else text[:cut]) == expected


def test_dedent_waits_for_the_first_word_of_a_line_at_the_block_indent() -> None:
    # after "if a:" a line at the same indentation may be "else:" (goes on) or code (ends it)
    assert dedent_cut("if a:\n        b()\n    el", "    ", final=False) is None
    assert dedent_cut("if a:\n        b()\n    elif c:", "    ", final=False) is None
    assert dedent_cut("if a:\n        b()\n    return x", "    ", final=False) == len("if a:\n        b()")
    # less indented than the start: decided by its first character, unless it closes a bracket
    assert dedent_cut("x = 1\nz", "    ", final=False) == 5
    assert dedent_cut("f(\n        a,\n)", "    ", final=False) is None
    assert dedent_cut("f(\n        a,\n)\n", "    ", final=False) == len("f(\n        a,\n)")


def test_block_rules_hold_back_the_line_that_may_end_the_block() -> None:
    rules = StopRules(dedent_line_prefix="    ")
    assert rules.cut("x = 1\n   ", final=False) == (None, 5)
    assert rules.cut("x = 1\n    y", final=False) == (None, 5)
    assert rules.cut("x = 1\n    y = 2\n", final=False) == (None, len("x = 1\n    y = 2"))
    assert rules.cut("x = 1\n    y = 2\nz", final=False) == (len("x = 1\n    y = 2"),) * 2
    assert rules.cut("x = 1\n    y", final=True) == (None, len("x = 1\n    y"))

