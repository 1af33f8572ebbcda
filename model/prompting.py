"""The one prompt builder: the token-budgeted FIM prompt, in exactly the layout the model was trained on.

Every entry point builds its prompt here: the language server (lsp/pipeline.py, which adds the
context of other files), `codeassist complete` and the team server's seed and OpenAI APIs (through
model/completion.py and remote/generation.py). The same cursor therefore gives the same prompt
wherever it is asked for.

Layout: the tokenizer's FIM template (`Tokenizer.fim_ids`; ours is SPM: <suf> suffix <pre> context
prefix <mid>), or plain left-to-right (<eot> or BOS, then context and prefix) at the end of a file
or for a model without a template. With SPM, typing changes only the end of the prompt, so the
engine re-uses the KV cache of everything before it; PSM templates (Qwen, DeepSeek, StarCoder) put
the suffix after the prefix, so a keystroke re-uses the cache up to the cursor.

Token healing: the cursor usually sits after indentation, a space or half a word, a partial
token the model never saw at the end of a prompt. The prompt is backed off to the last whole
token; the removed text becomes `forced`, which the output must begin with, and the caller
returns only what follows it (`strip_forced`).
"""

from __future__ import annotations

import bisect
import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from codeassist.model.tokenization import Tokenizer, resolve

__all__ = ["CUT_QUANTUM", "MAX_HEAL_TOKENS", "SUFFIX_TOKENS", "TAIL_TOKENS", "Prompt", "RepoContext", "build_prompt",
           "heal_prefix", "strip_forced", "warm_up_prompts"]

SUFFIX_TOKENS = 256  # "a few hundred": the model was trained on ~3,000-character chunks
CUT_QUANTUM = 256  # the prefix is cut only at absolute offsets rounded to this (stable cache)
MAX_HEAL_TOKENS = 4  # enough for most identifiers typed halfway
CONTEXT_MIN_ROOM = 48  # context (other files' snippets) only when at least this many tokens are free
TAIL_TOKENS = 64  # as many as a copy lookup compares (model/copy.py MAX_MATCH)


@dataclass(frozen=True)
class RepoContext:
    """Other files of the repository for a model trained on a repository layout (`Tokenizer.repo_layout`)."""

    name: str  # the repository's name
    files: tuple[tuple[str, str], ...]  # (path, text), most relevant first
    path: str  # the path of the file being completed


@dataclass(frozen=True)
class Prompt:
    ids: tuple[int, ...]
    forced: str  # healed text: the output must begin with it; it is not shown to the user
    prefix: str  # the prefix text the ids cover (before healing: it ends with `forced`)
    suffix: str  # the suffix text the ids cover
    fim: bool
    tail: tuple[int, ...] = ()  # the last tokens before the cursor, after healing (copy lookups)
    context: str = ""  # the context text (other files' snippets) the ids cover, before the prefix
    repo: RepoContext | None = None  # instead of `context`: the files the repository layout kept

    @property
    def forced_prefix(self) -> bytes:
        """`forced` as the engine takes it (GenerationRequest.forced_prefix)."""
        return self.forced.encode("utf-8")

    @property
    def text_prefix(self) -> str:
        """What a text-based server is sent before the cursor: the context, then the prefix."""
        return self.context + self.prefix


def build_prompt(prefix: str, suffix: str, max_prompt_tokens: int, heal: bool | str = True,
                 tokenizer: Tokenizer | None = None, *, context: Sequence[str] = (),
                 prefix_offset: int = 0, repo: RepoContext | None = None) -> Prompt:
    """The prompt for a cursor between `prefix` and `suffix` in at most `max_prompt_tokens` tokens
    of `tokenizer` (ours when None).

    `heal`: True backs the prefix off to the start of the word at the cursor (`heal_prefix`); a
    string backs off exactly that text, which `prefix` must end with (a client healed it already);
    False keeps every token. `context`: blocks of text (snippets of other files, formatted as the
    language's comments) placed before the prefix, in order, while they fit. `prefix_offset`: the
    absolute offset of prefix[0] in the document, so the prefix is cut at stable places. `repo`:
    the same files for a model trained on a repository layout (Qwen2.5-Coder), which then gets
    them in that layout before its FIM prompt, as many as fit, instead of `context`.

    The budget keeps the text nearest the cursor: the end of the prefix and the start of the
    suffix (at most SUFFIX_TOKENS, and a quarter of the budget).
    """
    tk = resolve(tokenizer)
    budget = max(8, max_prompt_tokens)
    fim = bool(suffix.strip()) and tk.fim
    suffix_ids: list[int] = []
    kept_suffix = ""
    if fim:
        suffix_ids = tk.encode(suffix)[:min(SUFFIX_TOKENS, budget // 4)]
        kept_suffix = tk.decode(suffix_ids)
    room = budget - len(suffix_ids) - (len(tk.fim_ids([], [])) if fim else len(tk.lead_ids()) + 2)
    if isinstance(heal, str) and not prefix.endswith(heal):
        heal = True  # the client's healed text is not where it said: heal here
    given = heal if isinstance(heal, str) else ""
    head = prefix[:len(prefix) - len(given)]
    head = head[_stable_cut(head, prefix_offset, room, tk):]
    prefix_ids = tk.encode(head)
    if len(prefix_ids) > room:  # one enormous line: keep the tokens nearest the cursor
        prefix_ids = prefix_ids[len(prefix_ids) - room:]
        head = tk.decode(prefix_ids)
    forced = given
    if heal is True:
        prefix_ids, forced = heal_prefix(prefix_ids, tk)
    preamble, kept = _repo_ids(repo, room - len(prefix_ids), tk) if repo is not None and tk.repo_layout \
        else ([], None)
    if preamble:
        ids = tk.fim_ids(prefix_ids, suffix_ids, preamble=preamble) if fim else [*tk.lead_ids(), *preamble,
                                                                                 *prefix_ids]
        return Prompt(ids=tuple(ids), forced=forced, prefix=head + given, suffix=kept_suffix, fim=fim,
                      tail=tuple(prefix_ids[-TAIL_TOKENS:]), repo=kept)
    context_ids, context_text = _context_ids(context, room - len(prefix_ids), tk)
    body = context_ids + prefix_ids
    ids = tk.fim_ids(body, suffix_ids) if fim else [*tk.lead_ids(), *body]
    return Prompt(ids=tuple(ids), forced=forced, prefix=head + given, suffix=kept_suffix, fim=fim,
                  tail=tuple(prefix_ids[-TAIL_TOKENS:]), context=context_text)


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


def strip_forced(text: str, forced: str) -> str:
    """The text after the healed part; empty when the model did not spell it out."""
    return text[len(forced):] if text.startswith(forced) else ""


def _is_word_byte(b: bytes) -> bool:
    return bool(b) and (b.isalnum() or b == b"_")


def _stable_cut(prefix: str, prefix_offset: int, room: int, tk: Tokenizer) -> int:
    """Index into `prefix` where the prompt starts: a line start after an absolute offset that is
    a multiple of CUT_QUANTUM, the earliest whose estimated token count fits `room`."""
    ids = tk.encode(prefix)
    if len(ids) <= room:
        return 0
    lengths = _token_lengths(tk)
    starts = list(itertools.accumulate((lengths[t] for t in ids[:-1]), initial=0))  # byte offsets
    ascii_only = prefix.isascii()
    first = -prefix_offset % CUT_QUANTUM
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


def _context_ids(context: Sequence[str], room: int, tk: Tokenizer) -> tuple[list[int], str]:
    """The ids and text of the context blocks that fit `room`, in order (none below CONTEXT_MIN_ROOM)."""
    if room < CONTEXT_MIN_ROOM or not context:
        return [], ""
    out: list[int] = []
    kept: list[str] = []
    for block in context:
        ids = tk.encode(block)
        if len(out) + len(ids) > room:
            break
        out.extend(ids)
        kept.append(block)
    return out, "".join(kept)


def _repo_ids(repo: RepoContext, room: int, tk: Tokenizer) -> tuple[list[int], RepoContext | None]:
    """The repository layout's ids with the files that fit `room`, in order; ([], None) when none
    fits (or room is below CONTEXT_MIN_ROOM): the prompt is then the model card's file-level one."""
    if room < CONTEXT_MIN_ROOM or not repo.files:
        return [], None
    head, tail = tk.repo_frame(repo.name, repo.path)
    body: list[int] = []
    kept: list[tuple[str, str]] = []
    for path, text in repo.files:  # each file encoded once, on every keystroke
        ids = tk.repo_file_ids(path, text)
        if len(head) + len(body) + len(ids) + len(tail) > room:
            break
        body += ids
        kept.append((path, text))
    return ([*head, *body, *tail], RepoContext(repo.name, tuple(kept), repo.path)) if kept else ([], None)
