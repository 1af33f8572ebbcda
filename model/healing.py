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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from codeassist.model import tokenizer as tok


@functools.cache
def _vocab_index() -> tuple[list[bytes], list[int], dict[bytes, int]]:
    """All real tokens sorted by their bytes, and bytes → id (specials excluded)."""
    pairs = sorted((tok.token_bytes(i), i) for i in range(tok.EOT_ID))
    pairs += sorted((tok.token_bytes(i), i) for i in range(tok.N_GPT2, tok.FIM_PREFIX_ID))
    pairs.sort()
    return [b for b, _ in pairs], [i for _, i in pairs], {b: i for b, i in pairs}


@functools.lru_cache(maxsize=4096)
def allowed_tokens(rest: bytes) -> tuple[int, ...]:
    """Ids that may come next while `rest` is still to be spelled out (see the module docstring)."""
    keys, ids, by_bytes = _vocab_index()
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
        return _after_whitespace(rest, out)
    steps = [tok.encode(text)[0]] if text else []
    for step in steps:
        if step not in out and rest.startswith(tok.token_bytes(step)):
            out.append(step)
    return tuple(out)


def _after_whitespace(rest: bytes, covering: list[int]) -> tuple[int, ...]:
    """What may spell out spaces or line breaks: only the tokenizations training produces before code.

    GPT-2's pre-tokenizer gives the last whitespace character of a run to what follows ("  x" is
    " " + " x"; "\n\nif" is "\n" + "\n" + "if"), so code follows a run as the run one character
    shorter and then the last one, joined to the word when it is a space. A token that goes on
    with more whitespace (a longer run, " \n"), or a whole run followed by a bare word, is
    refused: after "raise " a weak model otherwise took a 7-space token and suggested
    "       return ..." (a third of suggestions began with stray spaces). A lone line break is
    allowed as itself; PrefixConstraint then keeps the next token from being indentation.
    """
    n = len(rest)
    out = [t for t in covering if len(tok.token_bytes(t)) > n and not tok.token_bytes(t)[n:n + 1].isspace()]
    if n >= 2:
        out.append(tok.encode(rest[:-1].decode("ascii"))[0])
    elif rest == b"\n":
        out.append(tok.encode("\n")[0])
    return tuple(dict.fromkeys(out))


@functools.cache
def _whitespace_led() -> tuple[int, ...]:
    """Ids of the real tokens whose text begins with whitespace."""
    return tuple(i for i in range(tok.FIM_PREFIX_ID) if i != tok.EOT_ID and tok.token_bytes(i)[:1].isspace())


class PrefixConstraint:
    """The healed text still to spell out; after a healed line break, one more rule: the next
    token may not begin with whitespace (a cursor at column 0 wants code there, not indentation)."""

    def __init__(self, forced: bytes) -> None:
        self.rest = forced
        self._after_newline = forced.endswith(b"\n")

    @property
    def done(self) -> bool:
        return not self.rest and not self._after_newline

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        import torch  # here, not at import: the copy lookup uses this module in a server without torch

        if not self.rest:
            if not self._after_newline:
                return logits
            masked = logits.clone()
            masked[torch.tensor(_whitespace_led(), device=logits.device)] = float("-inf")
            return masked
        allowed = allowed_tokens(self.rest)
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
        b = tok.token_bytes(token) if token < tok.VOCAB_SIZE and token <= tok.FIM_SUFFIX_ID else b""
        if len(b) > len(self.rest) and self.rest.endswith(b"\n") and not b[len(self.rest):][:1].isspace():
            self._after_newline = False  # the token itself went on with code after the line break
        self.rest = self.rest[len(b):] if len(b) < len(self.rest) else b""
