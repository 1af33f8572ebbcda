"""Typing through a shown suggestion costs no model call.

Each answer is stored with where its cursor was (absolute offset), the text just before it and
the start of the suffix. A later request in the same document whose new text since then is the
beginning of that answer gets the rest of it back.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from codeassist.lsp.context import CompletionContext

TAIL_CHARS = 256
SUFFIX_CHARS = 128


@dataclass(frozen=True)
class CacheEntry:
    offset: int  # absolute cursor offset when the answer was made
    tail: str  # the prefix text just before that cursor
    suffix_head: str
    text: str


class CompletionCache:
    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, int], CacheEntry] = OrderedDict()
        self.hits = 0

    def store(self, ctx: CompletionContext, text: str) -> None:
        if not text:
            return
        offset = ctx.prefix_offset + len(ctx.prefix)
        key = (ctx.uri, offset)
        self._entries[key] = CacheEntry(offset, ctx.prefix[-TAIL_CHARS:], ctx.suffix[:SUFFIX_CHARS], text)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def lookup(self, ctx: CompletionContext) -> str | None:
        cursor = ctx.prefix_offset + len(ctx.prefix)
        for (uri, _), entry in reversed(self._entries.items()):
            if uri != ctx.uri or not ctx.prefix_offset <= entry.offset <= cursor:
                continue
            split = entry.offset - ctx.prefix_offset
            typed = ctx.prefix[split:]
            if (len(typed) < len(entry.text) and entry.text.startswith(typed)
                    and ctx.prefix[:split].endswith(entry.tail[len(entry.tail) - min(split, len(entry.tail)):])
                    and ctx.suffix[:SUFFIX_CHARS] == entry.suffix_head):
                self.hits += 1
                return entry.text[len(typed):]
        return None

    def clear(self, uri: str | None = None) -> None:
        if uri is None:
            self._entries.clear()
        else:
            for key in [k for k in self._entries if k[0] == uri]:
                del self._entries[key]
