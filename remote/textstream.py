"""Token ids → the text a client may see so far, for one sequence.

Three things make this more than `decode`: a character can be split across tokens (wait for
the rest), token healing forces the output to begin with text the client already has (hide
it), and a stop string may be arriving in pieces (hold back any tail that could start one, so
a streamed response never shows text that a later stop would have cut).
"""

from __future__ import annotations

import codecs

from codeassist.model.tokenization import Tokenizer, resolve


class TextStream:
    def __init__(self, forced_prefix: bytes = b"", stop: tuple[str, ...] = (),
                 tokenizer: Tokenizer | None = None) -> None:
        self._token_bytes = resolve(tokenizer).token_bytes  # the model's tokenizer (ours when None)
        self._buf = bytearray()
        self._forced = forced_prefix.decode("utf-8", errors="ignore")
        self._stop = tuple(s for s in stop if s)
        self._emitted = 0
        self.stopped = False  # a stop string was found (or the forced prefix was not honoured)
        self.text = ""  # the visible text so far, cut at a stop string once one is found

    def push(self, token: int) -> str:
        """Add a token; returns the new text that is safe to show (may be empty)."""
        if self.stopped:
            return ""
        self._buf += self._token_bytes(token)
        raw = _decode_complete(bytes(self._buf))
        if not raw.startswith(self._forced):
            if len(raw) >= len(self._forced) or not self._forced.startswith(raw):
                self.stopped = True  # the model left the forced text: nothing after it is usable
            return ""
        visible = raw[len(self._forced):]
        cut = _first_stop(visible, self._stop)
        if cut is not None:
            self.stopped = True
            self.text = visible[:cut]
            return self._take(len(self.text))
        self.text = visible
        return self._take(len(visible) - _partial_stop(visible, self._stop))

    def finish(self) -> str:
        """Generation ended: everything not yet shown."""
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        out = self.text[self._emitted:upto]
        self._emitted = upto
        return out


def _decode_complete(buf: bytes) -> str:
    """Decode, leaving out an incomplete UTF-8 sequence at the end (it waits for its next token,
    even after an invalid byte earlier, which becomes U+FFFD as `Tokenizer.decode` makes it)."""
    return codecs.getincrementaldecoder("utf-8")("replace").decode(buf, final=False)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    best: int | None = None
    for s in stops:
        i = text.find(s)
        if i != -1 and (best is None or i < best):
            best = i
    return best


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of text that is a proper prefix of a stop string."""
    held = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:k]):
                held = k
                break
    return held
