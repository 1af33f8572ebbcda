"""Token ids → the text of one completion so far: the one text stream every decode loop uses.

Four things make this more than `decode`: a character can be split across tokens (wait for the
rest); token healing forces the output to begin with text the user already typed (it is not
shown, and no stop fires inside it); the stop rules (model/stops.py) end the output where the
first one fires; and a rule that cannot decide yet (a stop string arriving in pieces, a line
that may end a block) holds its text back, so a streamed response never shows text that a
later stop would have cut. `Engine.generate` reads `output`; the team server streams `push`.
"""

from __future__ import annotations

import codecs

from codeassist.model.stops import StopRules
from codeassist.model.tokenization import Tokenizer, resolve

__all__ = ["TextStream", "decode_complete"]


class TextStream:
    def __init__(self, forced_prefix: bytes = b"", stop: StopRules | tuple[str, ...] = (),
                 tokenizer: Tokenizer | None = None) -> None:
        self._token_bytes = resolve(tokenizer).token_bytes  # the model's tokenizer (ours when None)
        self._buf = bytearray()
        self._forced = forced_prefix.decode("utf-8", errors="ignore")
        self._rules = stop if isinstance(stop, StopRules) else StopRules(stop_strings=stop)
        self._emitted = 0
        self._raw = ""  # everything decoded so far, the forced prefix included
        self.stopped = False  # a stop rule fired (or the model left the forced text)
        self.text = ""  # the visible text so far (after the forced prefix), cut where a stop fired

    @property
    def output(self) -> str:
        """The completion as decoded, the forced prefix included and cut where a stop fired; all
        of it when the model never spelled out the forced prefix (there is nothing to show)."""
        if not self._raw.startswith(self._forced):
            return self._raw
        return self._forced + self.text

    def push(self, token: int) -> str:
        """Add a token; returns the new text that is safe to show (may be empty)."""
        if self.stopped:
            return ""
        self._buf += self._token_bytes(token)
        self._raw = decode_complete(bytes(self._buf))
        if not self._raw.startswith(self._forced):
            if len(self._raw) >= len(self._forced) or not self._forced.startswith(self._raw):
                self.stopped = True  # the model left the forced text: nothing after it is usable
            return ""
        return self._judge(final=False)

    def finish(self) -> str:
        """Generation ended: a rule that waited for more decides now; everything not yet shown."""
        shown = ""
        if not self.stopped and self._raw.startswith(self._forced):
            shown = self._judge(final=True)
        return shown + self._take(len(self.text))

    def _judge(self, final: bool) -> str:
        visible = self._raw[len(self._forced):]
        cut, decided = self._rules.cut(visible, final)
        if cut is not None:
            self.stopped = True
            visible = visible[:cut]
        self.text = visible
        return self._take(decided)

    def _take(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        out = self.text[self._emitted:upto]
        self._emitted = upto
        return out


def decode_complete(buf: bytes) -> str:
    """Decode, leaving out an incomplete UTF-8 sequence at the end (it waits for its next token,
    even after an invalid byte earlier, which becomes U+FFFD as `Tokenizer.decode` makes it)."""
    return codecs.getincrementaldecoder("utf-8")("replace").decode(buf, final=False)
