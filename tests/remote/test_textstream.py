"""What a streamed client may see: never text a stop string would cut, never the healed prefix."""

from __future__ import annotations

from codeassist.model import tokenizer as tok
from codeassist.remote.textstream import TextStream


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
