"""Token healing: constrain the first generated tokens to spell out text removed from the prompt.

A prompt that ends in a partial token (after indentation, a space, or half a word) puts the
model where training never did. The caller backs the prompt off to whole tokens and passes the
removed text as `forced_prefix`; while it is not yet spelled out, only tokens that keep the
output on a tokenization training could have produced may be chosen:

- a token that begins with the whole rest (" retur" -> " return", " returned", ...);
- the first token of the rest's own encoding, when that is shorter than the rest (a long
  identifier spelled over several tokens: "app_exceptio" -> "app", then "_", then "exception");
- for indentation, a space or line breaks, only what training puts before code: a token of
  one space and a word, or the run one character shorter ("        return" is 7 spaces +
  " return"; "\n\nif" is "\n" + "\n" + "if"); never more whitespace than the user typed.

Any other prefix of the rest is refused. Allowing every prefix let a weak model take a lone
" " before "annot" or three spaces before nineteen: tokenizations it never saw in training,
after which it wrote nonsense ("from __future__ import anno" -> " annot import _test...").
"""

from __future__ import annotations

import bisect
import functools
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from codeassist.model.tokenization import Tokenizer, resolve


class _Healing:
    """One tokenizer's healing tables, built on first use and kept as long as the tokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self.allowed = functools.lru_cache(maxsize=4096)(self._allowed)

    @functools.cached_property
    def vocab_index(self) -> tuple[list[bytes], list[int], dict[bytes, int]]:
        """All real tokens sorted by their bytes, and bytes → id (specials excluded)."""
        t = self.tok
        pairs = sorted((b, i) for i in range(t.n_vocab) if not t.is_special(i) and (b := t.token_bytes(i)))
        return [b for b, _ in pairs], [i for _, i in pairs], {b: i for b, i in pairs}

    @functools.cached_property
    def whitespace_led(self) -> tuple[int, ...]:
        """Ids of the real tokens whose text begins with whitespace."""
        t = self.tok
        return tuple(i for i in range(t.n_vocab) if not t.is_special(i) and t.token_bytes(i)[:1].isspace())

    def _allowed(self, rest: bytes) -> tuple[int, ...]:
        keys, ids, by_bytes = self.vocab_index
        lo = bisect.bisect_left(keys, rest)
        hi = lo
        while hi < len(keys) and keys[hi].startswith(rest):
            hi += 1
        out = list(ids[lo:hi])
        try:
            text = rest.decode("utf-8")
        except UnicodeDecodeError:  # a token ended inside a character: any byte prefix will do
            return tuple([by_bytes[rest[:n]] for n in range(1, len(rest)) if rest[:n] in by_bytes] + out)
        if text and text.isspace() and "\t" not in text:  # spaces and line breaks: see _after_whitespace
            return self._after_whitespace(rest, out)
        steps = self.tok.encode(text)[:1] if text else []
        for step in steps:
            if step not in out and rest.startswith(self.tok.token_bytes(step)):
                out.append(step)
        return tuple(out)

    def _after_whitespace(self, rest: bytes, covering: list[int]) -> tuple[int, ...]:
        """What may spell out spaces or line breaks: only the tokenizations training produces before code.

        GPT-2's pre-tokenizer gives the last whitespace character of a run to what follows ("  x" is
        " " + " x"; "\n\nif" is "\n" + "\n" + "if"), so code follows a run as the run one character
        shorter and then the last one, joined to the word when it is a space. A token that goes on
        with more whitespace (a longer run, " \n"), or a whole run followed by a bare word, is
        refused: after "raise " a weak model otherwise took a 7-space token and suggested
        "       return ..." (a third of suggestions began with stray spaces). A lone line break is
        allowed as itself; PrefixConstraint then keeps the next token from being indentation.
        """
        tb = self.tok.token_bytes
        n = len(rest)
        out = [t for t in covering if len(tb(t)) > n and not tb(t)[n:n + 1].isspace()]
        if n >= 2:
            out += self.tok.encode(rest[:-1].decode("ascii"))[:1]
        elif rest == b"\n":
            out += self.tok.encode("\n")[:1]
        return tuple(dict.fromkeys(out))


_TABLES: weakref.WeakKeyDictionary[Tokenizer, _Healing] = weakref.WeakKeyDictionary()


def healing_tables(tokenizer: Tokenizer | None = None) -> _Healing:
    """The healing tables of this tokenizer instance (ours when None)."""
    t = resolve(tokenizer)
    tables = _TABLES.get(t)
    if tables is None:
        tables = _TABLES[t] = _Healing(t)
    return tables


def allowed_tokens(rest: bytes, tokenizer: Tokenizer | None = None) -> tuple[int, ...]:
    """Ids that may come next while `rest` is still to be spelled out (see the module docstring)."""
    result: tuple[int, ...] = healing_tables(tokenizer).allowed(rest)
    return result


class PrefixConstraint:
    """The healed text still to spell out; after a healed line break, one more rule: the next
    token may not begin with whitespace (a cursor at column 0 wants code there, not indentation)."""

    def __init__(self, forced: bytes, tokenizer: Tokenizer | None = None) -> None:
        self.rest = forced
        self._after_newline = forced.endswith(b"\n")
        self._tables = healing_tables(tokenizer)

    @property
    def done(self) -> bool:
        return not self.rest and not self._after_newline

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        import torch  # here, not at import: the copy lookup uses this module in a server without torch

        if not self.rest:
            if not self._after_newline:
                return logits
            masked = logits.clone()
            masked[torch.tensor(self._tables.whitespace_led, device=logits.device)] = float("-inf")
            return masked
        allowed = self._tables.allowed(self.rest)
        if not allowed:
            return logits
        masked = torch.full_like(logits, float("-inf"))
        idx = torch.tensor(allowed, device=logits.device)
        masked[idx] = logits[idx]
        return masked

    def advance(self, token: int) -> None:
        if not self.rest:
            self._after_newline = False
            return
        b = self._tables.tok.token_bytes(token)  # b"" for special and out-of-range ids
        if len(b) > len(self.rest) and self.rest.endswith(b"\n") and not b[len(self.rest):][:1].isspace():
            self._after_newline = False  # the token itself went on with code after the line break
        self.rest = self.rest[len(b):] if len(b) < len(self.rest) else b""
