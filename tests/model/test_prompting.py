"""The one prompt builder (model/prompting.py) and the one stop policy (model/stop_policy.py)."""

import pytest

from codeassist.model import tokenizer as tok
from codeassist.model.prompting import build_prompt, strip_forced
from codeassist.model.stop_policy import next_code_line, stop_policy
from codeassist.model.stops import StopRules


def body_text(ids: tuple[int, ...], fim: bool) -> str:
    pre = ids.index(tok.FIM_PREFIX_ID) if fim else 0
    return tok.decode([t for t in ids[pre + 1:] if not tok.is_special(t)])


def test_strip_forced() -> None:
    assert strip_forced("    return x", "    ") == "return x"
    assert strip_forced("  x", "    ") == ""


def test_a_healed_text_given_by_the_client_is_backed_off_exactly() -> None:
    prefix, suffix = "def f(x):\n    if x:\n        retur", "\n    return x\n"
    own = build_prompt(prefix, suffix, 512)
    assert own.forced == " retur"  # the builder's own healing backs off to the word's start
    given = build_prompt(prefix, suffix, 512, heal="ur")
    assert given.forced == "ur" and given.prefix == prefix
    assert body_text(given.ids, given.fim) + "ur" == prefix
    assert build_prompt(prefix, suffix, 512, heal=" retur") == own  # the same text: the same prompt
    nothing = build_prompt(prefix, suffix, 512, heal="")
    assert nothing.forced == "" and body_text(nothing.ids, nothing.fim) == prefix
    # a healed text the prefix does not end with is not trusted: the builder heals itself
    assert build_prompt(prefix, suffix, 512, heal="xyz") == own


def test_context_goes_before_the_prefix_while_it_fits_and_is_reported() -> None:
    blocks = ("# Compare this snippet from a.py:\n# def parse(x):\n" + "#     x = x.strip().split(':')\n" * 6,
              "# Compare this snippet from b.py:\n# y = 2\n")
    p = build_prompt("x = parse(", ")\n", 512, context=blocks)
    assert p.context == "".join(blocks)
    assert p.text_prefix == "".join(blocks) + "x = parse("
    assert body_text(p.ids, p.fim) + p.forced == p.text_prefix
    first = len(tok.encode(blocks[0]))
    fits_one = len(build_prompt("x = parse(", ")\n", 512).ids) + first + 1
    assert build_prompt("x = parse(", ")\n", fits_one, context=blocks).context == blocks[0]  # in order
    small = build_prompt("x = parse(", ")\n", 50, context=blocks)  # too little room: no context
    assert small.context == "" and body_text(small.ids, small.fim) + small.forced == "x = parse("


def test_forced_prefix_is_the_healed_text_in_utf8() -> None:
    p = build_prompt("print(é", "", 64)
    assert p.forced == "é" and p.forced_prefix == "é".encode()


@pytest.mark.parametrize(("suffix", "line"), [
    ("\n    return total_sum\n", "return total_sum"),
    (")\n\n\n    return total_sum\n", "return total_sum"),  # the cursor's own line does not count
    ("", ""),
    ("  \n", ""),
])
def test_next_code_line(suffix: str, line: str) -> None:
    assert next_code_line(suffix) == line


def test_line_mode_stops_at_the_newline_only() -> None:
    rules = stop_policy("\n    return total_sum\n", "python", line=True, line_prefix="    x = ")
    assert rules == StopRules(stop_at_newline=True) and rules.strings == ("\n",)


def test_block_mode_stops_at_a_new_unit_a_dedent_and_the_code_below() -> None:
    py = stop_policy("\n    return total_sum\n", "python", line=False, line_prefix="    ")
    assert py.strings == ("\n\n\n", "\ndef ", "\nclass ", "\nif __name__", "\n@", "return total_sum")
    assert py.suffix_line == "return total_sum" and not py.stop_at_newline and py.dedent_line_prefix == "    "
    # a short next line (`pass`, `}`) is too common to stop at; other languages stop at a blank pair;
    # without the cursor's line (codeassist complete, the seed API) there is no dedent rule
    assert stop_policy("\n}\n", "go", line=False) == StopRules(stop_strings=("\n\n\n",))
