"""What a streamed client may see: never text a stop string would cut, never the healed prefix."""

from __future__ import annotations

from codeassist.model import tokenizer as tok
from codeassist.model.textstream import TextStream


def feed(stream: TextStream, text: str) -> list[str]:
    out = [stream.push(t) for t in tok.encode(text)]
    return [*out, stream.finish()]


def test_a_stop_string_arriving_in_pieces_is_never_shown() -> None:
    s = TextStream(stop=("\ndef ",))
    shown = "".join(feed(s, "    return a + b\ndef mul(a, b):"))
    assert shown == "    return a + b"
    assert s.stopped


def test_a_held_back_tail_that_is_not_a_stop_is_released() -> None:
    s = TextStream(stop=("\n\n\n",))
    pieces = feed(s, "x = 1\n\ny = 2")
    assert "".join(pieces) == "x = 1\n\ny = 2"
    assert not s.stopped


def test_the_forced_prefix_is_hidden_and_the_rest_shown() -> None:
    s = TextStream(forced_prefix=b"ret")
    assert "".join(feed(s, "return x")) == "urn x"


def test_output_leaving_the_forced_prefix_stops_with_nothing_shown() -> None:
    s = TextStream(forced_prefix=b"ret")
    assert "".join(feed(s, "print(x)")) == ""
    assert s.stopped


def test_a_character_split_across_tokens_waits_for_its_last_byte() -> None:
    s = TextStream()
    ids = tok.encode("é✓")
    shown = [s.push(t) for t in ids]
    assert "".join(shown) == "é✓"
    assert all("\ufffd" not in piece for piece in shown)


def test_a_block_line_that_may_end_the_block_is_held_back_until_decided() -> None:
    from codeassist.model.stops import StopRules

    s = TextStream(stop=StopRules(dedent_line_prefix="    "))
    shown = [s.push(t) for t in tok.encode("x = 1\n    y = 2\nz = 3\n")]
    assert "".join(shown) == "x = 1\n    y = 2" and s.stopped
    assert "\n    y = 2" in shown  # each line is shown once the next one shows it did not end the block
    assert s.finish() == "" and s.output == "x = 1\n    y = 2"


def test_the_output_keeps_the_forced_prefix_and_ends_where_a_stop_fired() -> None:
    s = TextStream(forced_prefix=b"ret", stop=("\n",))
    feed(s, "return x\nprint(y)")
    assert s.output == "return x" and s.text == "urn x"
    partial = TextStream(forced_prefix=b"return")
    partial.push(tok.encode("ret")[0])
    assert partial.output == "ret" and not partial.stopped  # still spelling it out


def test_finish_judges_a_last_line_that_was_still_undecided() -> None:
    from codeassist.model.stops import StopRules

    s = TextStream(stop=StopRules(dedent_line_prefix="    if a:"))
    shown = "".join(s.push(t) for t in tok.encode("\n        b()\n    el"))
    assert shown == "\n        b()"  # "el" may be "else:": held back
    assert s.finish() == "" and s.output == "\n        b()"  # ended there: at the block's indent, no else


def test_a_held_back_tail_is_shown_at_the_end_when_no_stop_came() -> None:
    s = TextStream(stop=("\n\n\n",))
    shown = [s.push(t) for t in tok.encode("x = 1\n")]
    assert "".join(shown) == "x = 1" and s.finish() == "\n"  # the newline could have begun the stop
