"""The token-budgeted FIM prompt, in exactly the layout the model was trained on.

Layout: the tokenizer's FIM template (`Tokenizer.fim_ids`; ours is SPM: <suf> suffix <pre> prefix
<mid>), or plain left-to-right (<eot> or BOS, then the prefix) at the end of a file or for a
model without a template. With SPM, typing changes only the end of the prompt, so the engine
re-uses the KV cache of everything before it; PSM templates (Qwen, DeepSeek, StarCoder) put the
suffix after the prefix, so a keystroke re-uses the cache up to the cursor.

Token healing: the cursor usually sits after indentation, a space or half a word, a partial
token the model never saw at the end of a prompt. The prompt is backed off to the last whole
token; the removed text becomes `forced`, which the output must begin with, and the caller
returns only what follows it.
"""

from __future__ import annotations

import bisect
import itertools
import weakref
from dataclasses import dataclass

from codeassist.lsp.context import CompletionContext
from codeassist.lsp.snippets import format_snippet
from codeassist.model.tokenization import Tokenizer, resolve

SUFFIX_TOKENS = 256  # "a few hundred": the model was trained on ~3,000-character chunks
CUT_QUANTUM = 256  # the prefix is cut only at absolute offsets rounded to this (stable cache)
MAX_HEAL_TOKENS = 4  # enough for most identifiers typed halfway
SNIPPET_MIN_ROOM = 48
TAIL_TOKENS = 64  # as many as a copy lookup compares (model/copy.py MAX_MATCH)


@dataclass(frozen=True)
class Prompt:
    ids: tuple[int, ...]
    forced: str  # healed text: the output must begin with it; it is not shown to the user
    prefix: str  # the prefix text the ids cover (before healing), for text-based backends
    suffix: str  # the suffix text the ids cover
    fim: bool
    tail: tuple[int, ...] = ()  # the last tokens before the cursor, after healing (copy lookups)


def build_prompt(ctx: CompletionContext, max_prompt_tokens: int, heal: bool = True,
                 tokenizer: Tokenizer | None = None) -> Prompt:
    """The prompt for `ctx` in at most `max_prompt_tokens` tokens of `tokenizer` (ours when None)."""
    tk = resolve(tokenizer)
    budget = max(8, max_prompt_tokens)
    fim = bool(ctx.suffix.strip()) and tk.fim
    suffix_ids: list[int] = []
    suffix = ""
    if fim:
        suffix_ids = tk.encode(ctx.suffix)[:min(SUFFIX_TOKENS, budget // 4)]
        suffix = tk.decode(suffix_ids)
    room = budget - len(suffix_ids) - (len(tk.fim_ids([], [])) if fim else len(tk.lead_ids()) + 2)
    prefix = ctx.prefix[_stable_cut(ctx, room, tk):]
    prefix_ids = tk.encode(prefix)
    if len(prefix_ids) > room:  # one enormous line: keep the tokens nearest the cursor
        prefix_ids = prefix_ids[len(prefix_ids) - room:]
        prefix = tk.decode(prefix_ids)
    forced = ""
    if heal:
        prefix_ids, forced = heal_prefix(prefix_ids, tk)
    snippet_ids = _snippet_ids(ctx, room - len(prefix_ids), tk)
    body = snippet_ids + prefix_ids
    if fim:
        ids = tk.fim_ids(body, suffix_ids)
    else:
        ids = [*tk.lead_ids(), *body]
    return Prompt(ids=tuple(ids), forced=forced, prefix=prefix, suffix=suffix, fim=fim,
                  tail=tuple(prefix_ids[-TAIL_TOKENS:]))


def heal_prefix(ids: list[int], tokenizer: Tokenizer | None = None) -> tuple[list[int], str]:
    """Back the prompt off to the start of the word at the cursor; (ids, removed text).

    The last token always goes (more if needed for whole UTF-8 characters). While what was
    removed begins inside a word, the token before it goes too, up to MAX_HEAL_TOKENS: a user
    who typed `retur` left the tokens " ret" + "ur", a split the model never saw in training,
    where " return" is one token; backing off to " retur" lets it choose that token.
    """
    token_bytes = resolve(tokenizer).token_bytes
    removed = b""
    n = 0
    while ids[:len(ids) - n] and n < MAX_HEAL_TOKENS:
        n += 1
        removed = token_bytes(ids[-n]) + removed
        try:
            text = removed.decode("utf-8")
        except UnicodeDecodeError:
            continue
        before = token_bytes(ids[-n - 1]) if len(ids) > n else b""
        if _is_word_byte(removed[:1]) and _is_word_byte(before[-1:]):
            continue  # the cursor's word began in the token before: heal from there
        return ids[:len(ids) - n], text
    # out of tokens to remove: heal what was removed if it is whole characters, else nothing
    try:
        return ids[:len(ids) - n], removed.decode("utf-8")
    except UnicodeDecodeError:
        return ids, ""


def _is_word_byte(b: bytes) -> bool:
    return bool(b) and (b.isalnum() or b == b"_")


def _stable_cut(ctx: CompletionContext, room: int, tk: Tokenizer) -> int:
    """Index into ctx.prefix where the prompt starts: a line start after an absolute offset that
    is a multiple of CUT_QUANTUM, the earliest whose estimated token count fits `room`."""
    prefix = ctx.prefix
    ids = tk.encode(prefix)
    if len(ids) <= room:
        return 0
    lengths = _token_lengths(tk)
    starts = list(itertools.accumulate((lengths[t] for t in ids[:-1]), initial=0))  # byte offsets
    ascii_only = prefix.isascii()
    first = -ctx.prefix_offset % CUT_QUANTUM
    for c in range(first, len(prefix), CUT_QUANTUM):
        nl = prefix.find("\n", c)
        cut = nl + 1 if nl >= 0 else c
        b = cut if ascii_only else len(prefix[:cut].encode("utf-8"))
        if len(ids) - bisect.bisect_left(starts, b) <= room - 4:  # small margin: estimates can differ
            return cut
    return max(0, prefix.rfind("\n") + 1)


def warm_up_prompts(tokenizer: Tokenizer | None = None) -> None:
    """Load the tokenizer and the token-length table before the first request needs them."""
    tk = resolve(tokenizer)
    tk.encode("def main():\n    return 0\n")
    _token_lengths(tk)


_LENGTHS: weakref.WeakKeyDictionary[Tokenizer, list[int]] = weakref.WeakKeyDictionary()


def _token_lengths(tk: Tokenizer) -> list[int]:
    """Byte length of every token id of this tokenizer (specials count 0), kept per instance."""
    lengths = _LENGTHS.get(tk)
    if lengths is None:
        lengths = _LENGTHS[tk] = [len(tk.token_bytes(i)) for i in range(tk.n_vocab)]
    return lengths


def _snippet_ids(ctx: CompletionContext, room: int, tk: Tokenizer) -> list[int]:
    if room < SNIPPET_MIN_ROOM or not ctx.snippets:
        return []
    out: list[int] = []
    for s in ctx.snippets:
        ids = tk.encode(format_snippet(s, ctx.language))
        if len(out) + len(ids) > room:
            break
        out.extend(ids)
    return out
