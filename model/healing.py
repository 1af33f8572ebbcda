"""Token healing: constrain the first generated tokens to spell out text removed from the prompt.

A prompt that ends in a partial token (after indentation, a space, or half a word) puts the
model where training never did. The caller backs the prompt off to the last whole token and
passes the removed text as `forced_prefix`; while it is not yet spelled out, only tokens
consistent with it may be chosen (a token that is a prefix of the rest, or that starts with it).
"""

from __future__ import annotations

import bisect
import functools

import torch

from codeassist.model import tokenizer as tok


@functools.cache
def _vocab_index() -> tuple[list[bytes], list[int], dict[bytes, int]]:
    """All real tokens sorted by their bytes, and bytes → id (specials excluded)."""
    pairs = sorted((tok.token_bytes(i), i) for i in range(tok.EOT_ID))
    pairs += sorted((tok.token_bytes(i), i) for i in range(tok.N_GPT2, tok.FIM_PREFIX_ID))
    pairs.sort()
    return [b for b, _ in pairs], [i for _, i in pairs], {b: i for b, i in pairs}


def allowed_tokens(rest: bytes) -> list[int]:
    """Ids whose bytes are a prefix of `rest`, or begin with `rest`."""
    keys, ids, by_bytes = _vocab_index()
    out = [by_bytes[rest[:n]] for n in range(1, len(rest)) if rest[:n] in by_bytes]
    lo = bisect.bisect_left(keys, rest)
    hi = lo
    while hi < len(keys) and keys[hi].startswith(rest):
        hi += 1
    out.extend(ids[lo:hi])
    return out


class PrefixConstraint:
    def __init__(self, forced: bytes) -> None:
        self.rest = forced

    @property
    def done(self) -> bool:
        return not self.rest

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        allowed = allowed_tokens(self.rest)
        if not allowed:
            return logits
        masked = torch.full_like(logits, float("-inf"))
        idx = torch.tensor(allowed, device=logits.device)
        masked[idx] = logits[idx]
        return masked

    def advance(self, token: int) -> None:
        b = tok.token_bytes(token) if token < tok.VOCAB_SIZE and token <= tok.FIM_SUFFIX_ID else b""
        self.rest = self.rest[len(b):] if len(b) < len(self.rest) else b""
