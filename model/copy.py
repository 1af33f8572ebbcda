"""Copy candidates: how the code before the cursor went on elsewhere in the user's code.

Much of a line being typed already appears in the open document or another file of the
repository. A `CopyIndex` holds token ids of such text and, for the tokens before the cursor,
finds every place the same tokens occur, the longest match first, and returns the rest of the
line that followed each (a cache language model's candidates, Hellendoorn and Devanbu 2017;
prompt lookup is its cousin). The engine scores the candidates with the model and takes one
only when the model agrees (`Engine.generate`, `GenerationRequest.copy`), so the model adds to
the copy and the copy to the model.

The index is numpy arrays, 16 bytes a token: the tokens, and the sorted keys of every KEY-gram
with where it ends. A lookup is one binary search and a vectorised walk back over the
occurrences, so it costs well under a millisecond on a repository of millions of tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from codeassist.model.healing import allowed_tokens
from codeassist.model.tokenization import Tokenizer, resolve

KEY = 3  # tokens in a lookup key: shorter matches say too little
MAX_MATCH = 64  # tokens compared back from the cursor (more than MAX_MATCH_CHARS characters)
MAX_OCCURRENCES = 20_000  # of one key, walked back (a very common key: the newest ones)
MAX_CONTINUATION = 40  # tokens read after a match, up to the end of its line
MAX_DECODED = 64  # occurrences decoded per lookup, longest match first
MAX_MATCH_CHARS = 120  # a match longer than this counts as this long (the copy heuristic's cap)
MIN_TEXT_MATCH = 6  # characters: a shorter text match says nothing
_SEP = -1  # between segments: no key and no match crosses it
# A key packs KEY token ids into one int64 exactly: 3 x 21 bits holds ids below 2**21 (Qwen's
# 151,936 need 18 bits); the order of keys is the ids' order whatever the width.
_BITS = 21
MAX_ID = 1 << _BITS


@dataclass(frozen=True)
class Candidate:
    text: str  # the rest of the line after the matched text (begins with the forced prefix)
    count: int  # places it followed the longest match
    match_chars: int  # characters of the match before the cursor, forced prefix excluded


class CopyIndex:
    """Token n-gram occurrences over segments of token ids (files, or parts of the document)."""

    def __init__(self, segments: Iterable[Sequence[int] | np.ndarray], tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = resolve(tokenizer)  # what the ids are: their bytes are read back through it
        if self.tokenizer.n_vocab > MAX_ID:
            raise ValueError(f"a vocabulary of {self.tokenizer.n_vocab} ids does not fit the copy index's keys")
        parts: list[np.ndarray] = []
        for seg in segments:
            if len(seg):
                parts += [np.asarray(seg, dtype=np.int32), np.array([_SEP], dtype=np.int32)]
        self.tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        n = len(self.tokens)
        if n < KEY:
            self.keys = np.zeros(0, dtype=np.int64)
            self.ends = np.zeros(0, dtype=np.int32)
            return
        m = n - KEY + 1
        keys = np.zeros(m, dtype=np.int64)
        sep = np.zeros(m, dtype=bool)
        for j in range(KEY):  # the key of tokens[i : i + KEY], which ends at i + KEY
            col = self.tokens[j:j + m]
            keys <<= _BITS
            keys |= np.maximum(col, 0)
            sep |= col < 0
        ends = np.flatnonzero(~sep).astype(np.int32)
        del sep
        keys = keys[ends]
        order = np.argsort(keys, kind="stable")  # equal keys in text order: ties go to the first; the peak
        self.keys = keys[order]
        del keys
        self.ends = ends[order] + KEY
        del order, ends

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        return int(self.tokens.nbytes + self.keys.nbytes + self.ends.nbytes)

    def matches(self, context: Sequence[int], dead: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ends, lengths): where the last tokens of `context` occur, and how many tokens match.

        `dead` masks token positions whose text has been replaced (a file changed since indexing).
        """
        empty = np.zeros(0, dtype=np.int64)
        if len(context) < KEY or not len(self.keys) or any(c < 0 for c in context[-KEY:]):
            return empty, empty
        key = 0
        for c in context[-KEY:]:
            key = (key << _BITS) | int(c)
        lo, hi = np.searchsorted(self.keys, [key, key + 1])
        ends = self.ends[max(lo, hi - MAX_OCCURRENCES):hi].astype(np.int64)
        if dead is not None and len(ends):
            ends = ends[~dead[ends - 1]]
        lengths = np.full(len(ends), KEY, dtype=np.int64)
        alive = np.ones(len(ends), dtype=bool)
        ctx = np.asarray(context[-MAX_MATCH:], dtype=np.int64)
        for j in range(KEY + 1, len(ctx) + 1):  # walk back while every live match still agrees
            at = ends - j
            ok = alive & (at >= 0)
            ok[ok] = self.tokens[at[ok]] == ctx[-j]
            if not ok.any():
                break
            lengths += ok
            alive = ok
        return ends, lengths

    def occurrences(self, gram: Sequence[int], limit: int) -> np.ndarray:
        """Where the KEY tokens `gram` end (positions after them); empty when more than `limit`."""
        key = 0
        for c in gram[-KEY:]:
            key = (key << _BITS) | int(c)
        lo, hi = np.searchsorted(self.keys, [key, key + 1])
        return self.ends[lo:hi].astype(np.int64) if hi - lo <= limit else np.zeros(0, dtype=np.int64)

    def text_before(self, end: int, limit: int) -> bytes:
        """About the last `limit` bytes before position `end`, not crossing into another segment."""
        out: list[bytes] = []
        n = 0
        for t in self.tokens[max(0, end - limit):end][::-1]:
            if t < 0 or n >= limit:
                break
            out.append(self.tokenizer.token_bytes(int(t)))
            n += len(out[-1])
        return b"".join(reversed(out))

    def continuation(self, end: int, skip: int = 0) -> bytes:
        """The bytes after position `end` up to the end of the line that holds byte `skip` of them
        (the cursor's line, when `skip` bytes of typed text come first), at most MAX_CONTINUATION tokens."""
        out = bytearray()
        for t in self.tokens[end:end + MAX_CONTINUATION]:
            if t < 0:
                break
            out += self.tokenizer.token_bytes(int(t))
            nl = out.find(b"\n", skip)
            if nl >= 0:
                return bytes(out[:nl])
        return bytes(out)


def find_candidates(indexes: Sequence[tuple[CopyIndex, np.ndarray | None]], context: Sequence[int],
                    forced: str, limit: int = 3, typed: Sequence[int] = (),
                    tokenizer: Tokenizer | None = None) -> list[Candidate]:
    """Distinct rests of the line after the text before the cursor, best first.

    Two lookups, the longer match wins: the healed tokens `context` followed by any token that
    spells out `forced` (a word typed halfway, "retur" -> " return"), and `typed`, the tokens of
    the text as typed, forced part included (a whole word: "(metaclass" whatever came before).
    A rest ranks by its longest match in characters, then by how often it followed a match that
    long (the copy heuristic's order). A rest that begins with whitespace after whitespace at
    the cursor (another indentation) or holds no code is no candidate. Each begins with `forced`.
    `tokenizer` made `context`, `typed` and every index (ours when None).
    """
    tk = resolve(tokenizer)
    tb = tk.token_bytes
    want = forced.encode("utf-8")
    found: list[tuple[int, CopyIndex, int, int]] = []  # (match characters, index, end, bytes to skip)
    first = np.asarray(allowed_tokens(want, tk), dtype=np.int32) if want else None
    for ctx, skip in ((context, len(want)), (typed, 0)):
        widths = np.cumsum([len(tb(int(t))) for t in reversed(ctx[-MAX_MATCH:])] or [0])
        for index, dead in indexes:
            ends, lengths = index.matches(ctx, dead)
            if skip and first is not None and len(ends):  # the next token must spell out what was typed
                ok = np.isin(index.tokens[np.minimum(ends, index.n_tokens - 1)], first)
                ends, lengths = ends[ok], lengths[ok]
            if len(ends) > MAX_DECODED:  # only the longest can be decoded: no Python list of thousands
                top = np.argsort(-lengths, kind="stable")[:MAX_DECODED]
                ends, lengths = ends[top], lengths[top]
            found += [(int(widths[n - 1]) + skip, index, int(e), skip) for n, e in zip(lengths, ends, strict=True)]
    if not found:
        return []
    found.sort(key=lambda f: -f[0])
    after_space = want[-1:].isspace() or (not want and bool(typed) and tb(int(typed[-1]))[-1:].isspace())
    before = b"".join(tb(int(t)) for t in typed[-MAX_MATCH:])[-MAX_MATCH_CHARS:] if typed else b""
    best: dict[bytes, list[int]] = {}  # rest after the cursor -> [longest match, count at that length]
    for chars, index, end, skip in found[:MAX_DECODED]:
        rest = index.continuation(end, skip)
        if skip:
            if not rest.startswith(want):
                continue
            rest = rest[len(want):]
        if not rest.strip() or (after_space and rest[:1].isspace()):
            continue
        if before:  # in characters, exactly: tokens split the same text differently in places
            chars = _common_suffix(before, index.text_before(end, MAX_MATCH_CHARS) + (want if skip else b""))
        seen = best.setdefault(rest, [chars, 0])
        if chars > seen[0]:
            seen[:] = [chars, 0]
        seen[1] += seen[0] == chars
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))
    out = []
    for rest, (chars, count) in ranked:
        try:
            text = (want + rest).decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.append(Candidate(text.rstrip(), count, chars - len(want)))
        if len(out) == limit:
            break
    return out


def _common_suffix(a: bytes, b: bytes) -> int:
    n = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        n += 1
    return n


def find_in_text(text: str, cursor: int, forced: str, limit: int = 3) -> list[Candidate]:
    """The copy heuristic on one text (the open document), in characters: the rests of the line
    after the longest text before `cursor` (6 to MAX_MATCH_CHARS characters) seen elsewhere in it,
    most frequent first. Exact where token lookups miss a match that tokens split differently
    ("request.extensions:" against " extensions:"); a few string searches on one document."""
    before = text[max(0, cursor - MAX_MATCH_CHARS):cursor]
    after_space = before[-1:].isspace()
    lo, hi, best = MIN_TEXT_MATCH, len(before), []
    while lo <= hi:  # a longer match implies the shorter ones: bisect the length
        mid = (lo + hi) // 2
        rests = _rests_after(text, before[-mid:], cursor, after_space)
        if rests:
            best, lo = rests, mid + 1
        else:
            hi = mid - 1
    if not best:
        return []
    chars = lo - 1 - len(forced)
    counts: dict[str, int] = {}
    for rest in best:
        counts[rest] = counts.get(rest, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return [Candidate(forced + rest, count, chars) for rest, count in ranked]


def _rests_after(text: str, key: str, cursor: int, after_space: bool) -> list[str]:
    out: list[str] = []
    p = text.find(key)
    while p >= 0 and len(out) < MAX_DECODED:
        end = p + len(key)
        if end != cursor:
            nl = text.find("\n", end)
            rest = text[end:nl if nl >= 0 else len(text)].rstrip()
            if rest.strip() and not (after_space and rest[:1].isspace()):
                out.append(rest)
        p = text.find(key, p + 1)
    return out
